"""The CT motion simulator (digest §7.3) and the image-quality measures of motion-artifact correction."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pytest

from scanai.artifact_correction import reconstruction as recon
from scanai.artifact_correction import simulator as cs
from scanai.artifact_correction.cardiac_cycle import contraction
from scanai.artifact_correction.image_quality import CARDIAC_WINDOW_HU, rmse, ssim, vessel_fwhm_mm
from scanai.artifact_correction.timing import PhaseWindow, RPeaks
from scanai.core.errors import InputError

PROTOCOL = cs.ScanProtocol()
RR = RPeaks.regular(1.0, 6)
HEART = (slice(32, 96), slice(32, 96))  # rows/cols around the heart on the 128 grid


def _window(phase: float, cycle: int = 1, duration: float = 0.15) -> PhaseWindow:
    mid = RR.time_of(cycle, phase)
    return PhaseWindow(mid - duration / 2, mid + duration / 2)


def _axis(step_mm: float, half_mm: float = 63.0) -> np.ndarray:
    return np.arange(-half_mm, half_mm, step_mm)


# --------------------------------------------------------------------------------------------------------------
# phantom geometry and HU values


def test_phantom_hu_values_and_field_of_view():
    phantom = cs.HeartPhantom(calcium=True)
    image = cs.phantom_hu(phantom, 1.0, RR, PROTOCOL)
    assert image.shape == (128, 128)
    allowed = {cs.AIR_HU, cs.LUNG_HU, cs.SOFT_TISSUE_HU, cs.BONE_HU, cs.MYOCARDIUM_HU, cs.BLOOD_POOL_HU,
               cs.CORONARY_HU, cs.CALCIUM_HU}
    assert set(np.unique(image)) == allowed
    centre = 64
    row, col = centre + round(phantom.centre_mm[1]), centre + round(phantom.centre_mm[0])
    assert image[row, col] == cs.BLOOD_POOL_HU
    # the whole object lies inside the reconstruction circle (skimage's circle=True assumption)
    rows, cols = np.nonzero(image != cs.AIR_HU)
    assert np.max(np.hypot(rows - centre, cols - centre)) < centre - 1
    assert image[0, 0] == cs.AIR_HU and image[centre, 10] == cs.LUNG_HU and image[centre + 42, centre] == cs.BONE_HU
    mask = cs.heart_mask(phantom, 1.0, RR, PROTOCOL, margin_mm=4.0)
    heart = np.isin(image, (cs.MYOCARDIUM_HU, cs.BLOOD_POOL_HU, cs.CORONARY_HU, cs.CALCIUM_HU))
    assert np.all(mask[heart]) and not mask[centre, 10] and mask.sum() < 1.6 * heart.sum()


def test_contraction_scales_lv_and_conserves_myocardium():
    phantom = cs.HeartPhantom(contraction_amplitude=0.25)
    fine = cs.ScanProtocol(pixels=512, pixel_mm=0.25)
    diastole = cs.phantom_hu(phantom, 1.0, RR, fine)
    systole_time = RR.time_of(1, 0.35)
    systole = cs.phantom_hu(phantom, systole_time, RR, fine)
    c = float(contraction(0.35))
    pool_ratio = np.sum(systole == cs.BLOOD_POOL_HU) / np.sum(diastole == cs.BLOOD_POOL_HU)
    assert pool_ratio == pytest.approx((1 - 0.25 * c) ** 2, rel=0.02)
    wall_ratio = np.sum(systole == cs.MYOCARDIUM_HU) / np.sum(diastole == cs.MYOCARDIUM_HU)
    assert wall_ratio == pytest.approx(1.0, abs=0.02)
    # the static (frozen) phantom does not change
    frozen = phantom.frozen()
    assert np.array_equal(cs.phantom_hu(frozen, 1.0, RR), cs.phantom_hu(frozen, systole_time, RR))


def test_parts_never_overlap_so_projections_are_exact():
    """The analytic projection sums ellipse increments; that equals the painted phantom only if no two parts
    overlap, for any subject, phase, slice and breathing state."""
    rng = np.random.default_rng(3)
    axis = _axis(0.35, half_mm=57.0)  # the heart and its neighbours (lungs, sternum, spine)
    times = np.concatenate([RR.time_of(1, 0.0) + np.array([0.0, 0.33, 0.35, 0.95]), np.linspace(0.01, 4.99, 5)])
    for _ in range(8):
        phantom = cs.random_phantom(rng, breathing_probability=1.0)
        state = cs._heart_state(phantom, times, RR, float(rng.uniform(-6.0, 6.0)))
        for k in range(times.size):
            painted = cs._render(state, k, axis[None, :], axis[:, None])
            summed = cs._render(state, k, axis[None, :], axis[:, None], additive=True)
            assert np.array_equal(painted, summed)


def test_analytic_sinogram_matches_skimage_radon():
    from skimage.transform import radon

    phantom = cs.HeartPhantom(calcium=True)
    state = cs._heart_state(phantom, np.array([1.2]), RR, 0.0)
    analytic = cs._sinogram(state, PROTOCOL)
    factor = 4  # render 4x4 sub-pixels per pixel, average: the pixel image skimage projects
    sub = (np.arange(128 * factor) - 64 * factor - (factor - 1) / 2) / factor
    image = cs._render(state, 0, sub[None, :], sub[:, None]) - cs.AIR_HU
    image = image.reshape(128, factor, 128, factor).mean(axis=(1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = radon(image, PROTOCOL.view_angles_deg(), circle=True)
    assert np.linalg.norm(analytic - reference) / np.linalg.norm(reference) < 0.01


def test_fbp_equals_skimage_iradon(monkeypatch):
    from skimage.transform import iradon

    rng = np.random.default_rng(0)
    for protocol in (PROTOCOL, cs.ScanProtocol(views=60, filter_name="hann")):
        sinogram = rng.uniform(0.0, 2000.0, size=(128, protocol.views))
        reference = iradon(sinogram, protocol.view_angles_deg(), output_size=128, filter_name=protocol.filter_name,
                           circle=True) + cs.AIR_HU
        assert np.max(np.abs(recon._fbp(sinogram, protocol) - reference)) < 0.01
    # grids too large for the cached matrix use iradon itself
    monkeypatch.setattr(recon, "_MAX_MATRIX_NONZEROS", 0)
    recon._backprojection_matrix.cache_clear()
    try:
        assert np.max(np.abs(recon._fbp(sinogram, protocol) - reference)) < 0.01
    finally:
        recon._backprojection_matrix.cache_clear()


# --------------------------------------------------------------------------------------------------------------
# acquisition and reconstruction


def test_static_window_equals_ground_truth_within_noise():
    phantom = cs.HeartPhantom().frozen()
    window = _window(0.3)
    truth = cs.ground_truth(phantom, window.mid_s, RR, PROTOCOL)
    assert np.allclose(cs.reconstruct_window(phantom, window, RR, PROTOCOL), truth, atol=1e-3)
    noisy = cs.reconstruct_window(phantom, window, RR, PROTOCOL, np.random.default_rng(1))
    axis = np.arange(128) - 64
    disk = axis[:, None] ** 2 + axis[None, :] ** 2 <= 40**2
    assert np.std((noisy - truth)[disk]) == pytest.approx(PROTOCOL.noise_hu, rel=0.15)
    assert abs(np.mean((noisy - truth)[disk])) < 2.0
    # a truth image is the phantom itself, blurred only by the FBP
    assert abs(np.median(truth[60:68, 60:68]) - cs.BLOOD_POOL_HU) < 15
    assert abs(np.median(truth[60:68, 8:16]) - cs.LUNG_HU) < 20


def test_motion_error_larger_in_systole_than_diastasis():
    phantom = cs.HeartPhantom()

    def error(phase: float) -> float:
        window = _window(phase)
        image = cs.reconstruct_window(phantom, window, RR, PROTOCOL)
        return rmse(image[HEART], cs.ground_truth(phantom, window.mid_s, RR, PROTOCOL)[HEART])

    systole = [error(p) for p in (0.20, 0.25, 0.40)]
    diastasis = [error(p) for p in (0.70, 0.75, 0.80)]
    assert min(systole) > 2.0 * max(diastasis)
    assert min(systole) > 10.0 and max(diastasis) < 10.0


def test_coronary_points_follow_the_phantom():
    phantom = cs.HeartPhantom(calcium=False)
    points = {}
    for phase in (0.0, 0.2, 0.35, 0.75):
        time_s = RR.time_of(1, phase)
        image = cs.phantom_hu(phantom, time_s, RR, PROTOCOL)
        truth = cs.ground_truth(phantom, time_s, RR, PROTOCOL)
        points[phase] = np.array(cs.coronary_points(phantom, time_s, RR, PROTOCOL))
        assert len(points[phase]) == len(phantom.coronary_angles_deg)
        for row, col in points[phase]:
            assert image[round(row), round(col)] == cs.CORONARY_HU
            patch = truth[round(row) - 2:round(row) + 3, round(col) - 2:round(col) + 3]
            peak = np.unravel_index(np.argmax(patch), patch.shape)
            assert max(abs(peak[0] - 2), abs(peak[1] - 2)) <= 1  # the reconstructed vessel sits there
    # end-systole moves every vessel by the rigid shift plus the epicardial contraction
    moved = points[0.35] - points[0.0]
    shift = phantom.coronary_shift_mm * float(contraction(0.35))
    direction = np.deg2rad(phantom.coronary_direction_deg)
    along = moved[:, 1] * np.cos(direction) + moved[:, 0] * np.sin(direction)  # (row, col) -> along the shift
    assert np.allclose(along.mean(), shift, atol=2.0)
    assert np.all(np.hypot(*moved.T) > 4.0)
    # with calcium the first vessel holds an 800 HU plaque
    calcified = cs.HeartPhantom(calcium=True)
    image = cs.phantom_hu(calcified, 1.0, RR, cs.ScanProtocol(pixels=512, pixel_mm=0.25))
    assert np.sum(image == cs.CALCIUM_HU) * 0.25**2 == pytest.approx(np.pi * 0.8**2, rel=0.1)


def test_breathing_changes_the_slice_and_slices_differ():
    still = cs.HeartPhantom()
    breathing = cs.HeartPhantom(breathing_mm=15.0)
    first, later = RR.time_of(1, 0.75), RR.time_of(3, 0.75)
    assert np.array_equal(cs.phantom_hu(still, first, RR), cs.phantom_hu(still, later, RR))
    assert not np.array_equal(cs.phantom_hu(breathing, first, RR), cs.phantom_hu(breathing, later, RR))
    assert not np.array_equal(cs.phantom_hu(still, first, RR, z_mm=0.0), cs.phantom_hu(still, first, RR, z_mm=8.0))


def test_bad_input_is_refused(monkeypatch):
    with pytest.raises(InputError, match="field of view"):
        cs.ScanProtocol(pixels=128, pixel_mm=0.7)
    with pytest.raises(InputError, match="does not cover"):
        cs.reconstruct_window(cs.HeartPhantom(), PhaseWindow(5.0, 5.15), RR, PROTOCOL)
    with pytest.raises(InputError, match="R-peak"):
        cs.phantom_hu(cs.HeartPhantom(), 1.0, None)
    with pytest.raises(InputError, match="fewer outputs"):
        cs.simulate_case(np.random.default_rng(0), n_inputs=2, n_outputs=2)
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(InputError, match="scikit-image"):
        recon._skimage_transform()


# --------------------------------------------------------------------------------------------------------------
# cases and phase sequences


def test_simulate_case_shapes_windows_and_targets():
    case = cs.simulate_case(np.random.default_rng(2), n_inputs=4, n_outputs=1, centre_phase_pct=75.0)
    assert case.inputs.shape == (4, 128, 128) and case.target.shape == (1, 128, 128)
    mids = np.array([w.mid_s for w in case.windows])
    assert np.allclose(np.diff(mids), 0.03)
    assert all(w.duration_s == pytest.approx(0.15) and w.phase_pct is not None for w in case.windows)
    for window in case.windows:
        cycle, fraction = case.r_peaks.phase_of(window.mid_s)
        assert window.cycle_index == cycle and window.phase_pct == pytest.approx(100 * fraction)
    (target,) = case.target_windows
    assert target.mid_s == pytest.approx(mids[1:3].mean()) and target.duration_s == pytest.approx(0.15)
    assert target.phase_pct == pytest.approx(75.0, abs=1e-6)
    assert np.allclose(case.target[0], cs.ground_truth(case.phantom, target.mid_s, case.r_peaks, PROTOCOL))
    assert case.coronaries == cs.coronary_points(case.phantom, target.mid_s, case.r_peaks, PROTOCOL)
    assert case.pixel_mm == 1.0
    # the centre inputs resemble the target; M = 2 of N = 4 gives the two inner windows (¶70)
    assert rmse(case.inputs[1], case.target[0]) < 40.0
    two = cs.simulate_case(np.random.default_rng(2), n_inputs=4, n_outputs=2, spacing_s=0.05)
    assert [w.mid_s for w in two.target_windows] == pytest.approx([w.mid_s for w in two.windows[1:3]])
    three = cs.simulate_case(np.random.default_rng(4), n_inputs=3)
    assert three.target_windows[0].mid_s == pytest.approx(three.windows[1].mid_s)


def test_simulate_case_is_reproducible_and_static_case_is_unchanged():
    a = cs.simulate_case(np.random.default_rng(11))
    b = cs.simulate_case(np.random.default_rng(11))
    c = cs.simulate_case(np.random.default_rng(12))
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.target, b.target) and a.phantom == b.phantom
    assert np.array_equal(a.r_peaks.times_s, b.r_peaks.times_s)
    assert not np.array_equal(a.inputs, c.inputs)
    static = cs.simulate_case(np.random.default_rng(5), static=True)
    for phase_volume in static.inputs:
        assert rmse(phase_volume, static.target[0]) < 1.1 * PROTOCOL.noise_hu
        assert ssim(phase_volume, static.target[0]) > 0.85


def test_simulate_phase_sequence_geometry_and_truth():
    phases = [65.0, 70.0, 75.0, 80.0]
    sequence, r_peaks, truth = cs.simulate_phase_sequence(np.random.default_rng(6), phases, slices=3, slice_mm=2.0)
    assert sequence.frames.shape == (4, 3, 128, 128)
    assert sequence.index_name == "phase" and sequence.index_unit == "%" and sequence.index_values == tuple(phases)
    geometry = sequence.geometry
    assert geometry.spacing_mm == (1.0, 1.0, 2.0)
    assert np.allclose(geometry.ras_of_ijk([64, 64, 1]), [0.0, 0.0, 0.0])  # the rotation axis at RAS 0
    assert np.allclose(np.asarray(geometry.directions), np.diag([-1.0, -1.0, 1.0]))
    assert truth.slice_z_mm == (-2.0, 0.0, 2.0)
    assert [w.phase_pct for w in truth.windows] == pytest.approx(phases)
    assert all(w.cycle_index == 1 and w.duration_s == pytest.approx(0.15) for w in truth.windows)
    assert np.array_equal(r_peaks.times_s, RPeaks.regular(1.0, 4).times_s)
    assert truth.ground_truth.shape == sequence.frames.shape and truth.target.shape == (1, 3, 128, 128)
    assert truth.target_windows[0].phase_pct == pytest.approx(72.5)
    assert not np.array_equal(truth.ground_truth[0, 0], truth.ground_truth[0, 1])  # the LV varies along z
    for t in range(4):
        assert rmse(sequence.frames[t], truth.ground_truth[t]) < 1.3 * cs.ScanProtocol().noise_hu
    with pytest.raises(InputError, match="%RR"):
        cs.simulate_phase_sequence(np.random.default_rng(0), [50.0, 120.0])


# --------------------------------------------------------------------------------------------------------------
# image quality


def test_rmse_and_ssim_on_known_inputs():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 3.0)
    b[0, 0] = 7.0
    assert rmse(a, b) == pytest.approx(np.sqrt((15 * 9 + 49) / 16))
    mask = np.zeros((4, 4), bool)
    mask[1:, :] = True
    assert rmse(a, b, mask) == pytest.approx(3.0)
    with pytest.raises(InputError):
        rmse(a, np.zeros((3, 3)))
    image = cs.ground_truth(cs.HeartPhantom(), 1.75, RR)
    assert ssim(image, image) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    scores = [ssim(image, image + rng.normal(0.0, s, image.shape)) for s in (5.0, 20.0, 60.0)]
    assert scores[0] > scores[1] > scores[2] and scores[0] < 1.0
    # the HU window: differences outside it (air vs. lung) do not count
    assert ssim(image, np.where(image < -500, -900.0, image)) == pytest.approx(1.0)
    assert CARDIAC_WINDOW_HU == (-200.0, 800.0)
    volume = np.stack([image, image, image])
    assert ssim(volume, volume + rng.normal(0.0, 20.0, volume.shape)) == pytest.approx(scores[1], abs=0.02)


def test_vessel_fwhm_of_known_gaussian_and_reconstructed_coronary():
    pixel_mm, sigma_px = 0.8, 1.6
    rows, cols = np.mgrid[:64, :64]
    centre = (31.3, 30.6)
    vessel = 360.0 * np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma_px**2))
    image = 40.0 + vessel
    image[:, 38:] += 60.0  # a myocardial wall on one side, 7 pixels away
    expected = 2 * np.sqrt(2 * np.log(2)) * sigma_px * pixel_mm
    assert vessel_fwhm_mm(image, (31.0, 31.0), pixel_mm) == pytest.approx(expected, rel=0.10)
    assert np.isnan(vessel_fwhm_mm(np.full((32, 32), 40.0), (16, 16), 1.0))
    # a 3 mm coronary reconstructed without motion measures about 3 mm
    phantom = cs.HeartPhantom(calcium=False)
    truth = cs.ground_truth(phantom, 1.75, RR)
    widths = [vessel_fwhm_mm(truth, point, 1.0) for point in cs.coronary_points(phantom, 1.75, RR)]
    assert np.all((np.array(widths) > 2.0) & (np.array(widths) < 3.6))


@pytest.mark.slow
def test_seconds_per_window():
    phantom = cs.HeartPhantom(calcium=True)
    rng = np.random.default_rng(0)
    cs.reconstruct_window(phantom, _window(0.2), RR, PROTOCOL, rng)  # builds the cached backprojector
    seconds = []
    for phase in np.linspace(0.05, 0.95, 20):
        start = time.perf_counter()
        cs.reconstruct_window(phantom, _window(float(phase)), RR, PROTOCOL, rng)
        seconds.append(time.perf_counter() - start)
    assert np.median(seconds) <= 0.15
