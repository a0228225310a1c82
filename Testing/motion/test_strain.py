"""Myocardial strain (global, maps, AHA segments) and segmentation / point propagation, against exact truth."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from scanai.core.errors import Cancelled, InputError
from scanai.core.image import Geometry
from scanai.core.progress import CancelToken, Progress
from scanai.motion.phantom import contraction_profile, myocardium_mask, smooth_motion_phantom
from scanai.motion.propagate import dice, propagate_labels, propagate_points
from scanai.motion.strain import aha_segment_map, myocardial_strain

_ANGLE = np.deg2rad(30.0)
_AXIS = np.array([1.0, 2.0, 2.0]) / 3.0
_K = np.array([[0, -_AXIS[2], _AXIS[1]], [_AXIS[2], 0, -_AXIS[0]], [-_AXIS[1], _AXIS[0], 0]])
OBLIQUE = np.eye(3) + np.sin(_ANGLE) * _K + (1 - np.cos(_ANGLE)) * _K @ _K
N_FRAMES = 10
ES = int(np.argmax(contraction_profile(N_FRAMES)))
AMPLITUDE = 6.0
PHANTOM = {"n_frames": N_FRAMES, "shape": (1, 96, 96), "amplitude_px": AMPLITUDE, "noise": 0.0}


def _phantom(twist_deg: float = 0.0, **extra):
    sequence, truth = smooth_motion_phantom(**{**PHANTOM, "twist_deg": twist_deg, **extra})
    return sequence, truth, myocardium_mask(sequence, 0, amplitude_px=extra.get("amplitude_px", AMPLITUDE),
                                            twist_deg=twist_deg, shortening=extra.get("shortening", 0.1))


def _radii(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[float, float, np.ndarray]:
    """The phantom's ED endocardial and epicardial radii (mm) and centre (axis-frame mm, i j k)."""
    k_size, j_size, i_size = shape
    fov = min(i_size * spacing[0], j_size * spacing[1])
    centre = (np.array([i_size, j_size, k_size], float) - 1.0) / 2.0 * np.asarray(spacing)
    return 0.16 * fov, 0.24 * fov, centre


def _analytic(truth_axes: np.ndarray, mask: np.ndarray, spacing, twist_deg: float, shortening: float = 0.0):
    """Exact per-pixel (Err, Ecc) in percent at ``mask`` for every frame, from the phantom's map.

    Ecc = r/R - 1 (r = deformed radius from the exact map); dr/dR = R / (lambda r) (area/volume preservation),
    d(theta)/dR = -twist s(t) / (R_epi - R_endo) in the wall, so Err = sqrt((dr/dR)^2 + (r dtheta/dR)^2) - 1.
    """
    r_endo, r_epi, centre = _radii(mask.shape, spacing)
    kk, jj, ii = np.nonzero(mask)
    position = np.stack([ii * spacing[0], jj * spacing[1]], axis=-1) - centre[:2]
    big_r = np.linalg.norm(position, axis=-1)
    states = contraction_profile(truth_axes.shape[0])
    radial, circumferential = [], []
    for t in range(truth_axes.shape[0]):
        small_r = np.linalg.norm(position + truth_axes[t, kk, jj, ii, :2], axis=-1)
        stretch = 1.0 - shortening * states[t]
        d_theta = -np.deg2rad(twist_deg) * states[t] / (r_epi - r_endo)
        radial.append(100 * (np.sqrt((big_r / (stretch * small_r)) ** 2 + (small_r * d_theta) ** 2) - 1.0))
        circumferential.append(100 * (small_r / big_r - 1.0))
    return np.array(radial), np.array(circumferential)


def _ring(shape: tuple[int, int, int], centre_ji: tuple[float, float], inner: float, outer: float) -> np.ndarray:
    jj, ii = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    radius = np.hypot(jj - centre_ji[0], ii - centre_ji[1])
    return np.broadcast_to((radius >= inner) & (radius < outer), shape).copy()


def _ras_grid(shape: tuple[int, int, int], geometry: Geometry) -> np.ndarray:
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return geometry.ras_of_ijk(np.stack([ii, jj, kk], axis=-1))


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@pytest.fixture(scope="module")
def twisted():
    return _phantom(8.0)


# ------------------------------------------------------------------------------------ strain vs analytic


@pytest.mark.parametrize("twist_deg", [0.0, 8.0])
def test_global_strain_matches_the_analytic_phantom(twist_deg, twisted):
    sequence, truth, mask = twisted if twist_deg else _phantom(0.0)
    result = myocardial_strain(truth, sequence.geometry, mask)
    assert result.radial_pct.shape == truth.shape[:4] and result.radial_pct.dtype == np.float32
    assert result.mask.sum() < mask.sum() and not (result.mask & ~mask).any()  # eroded, inside the mask
    assert np.isnan(result.circumferential_pct[:, ~result.mask]).all()
    radial, circumferential = _analytic(truth, result.mask, sequence.geometry.spacing_mm, twist_deg)
    gcs_error = np.abs(result.global_circumferential_pct - circumferential.mean(axis=1)).max()
    grs_error = np.abs(result.global_radial_pct - radial.mean(axis=1)).max()
    peak_gcs, frame = result.peak_circumferential()
    peak_grs, radial_frame = result.peak_radial()
    print(f"twist {twist_deg}: GCS(ES) {peak_gcs:.3f} % (analytic {circumferential[ES].mean():.3f}), GRS(ES) "
          f"{peak_grs:.3f} % (analytic {radial[ES].mean():.3f}); max |error| GCS {gcs_error:.4f} pp, "
          f"GRS {grs_error:.4f} pp")
    assert frame == ES and radial_frame == ES
    assert -30 < peak_gcs < -15 and 20 < peak_grs < 40  # a strongly contracting ring
    assert gcs_error < 0.1 and grs_error < 0.3
    assert np.abs(result.circumferential_pct[ES][result.mask] - circumferential[ES]).max() < 0.5
    assert np.abs(result.radial_pct[ES][result.mask] - radial[ES]).max() < 1.5
    assert result.global_radial_pct[0] == 0.0 and result.global_circumferential_pct[0] == 0.0
    _, _, centre = _radii(mask.shape, sequence.geometry.spacing_mm)
    assert np.allclose(result.centre_ras[0, :2], centre[:2], atol=1e-9)
    # the un-eroded mask straddles the kink at the endocardium and biases GRS (digest section 5.2)
    unbiased = myocardial_strain(truth, sequence.geometry, mask, erode_px=0)
    assert abs(unbiased.global_radial_pct[ES] - radial[ES].mean()) > 1.0


def test_blood_pool_centre_and_three_d_slices():
    sequence, truth, mask = _phantom(0.0, shape=(5, 64, 64), shortening=0.12, amplitude_px=3.0)
    blood = ndimage.binary_fill_holes(mask[2])[None].repeat(5, axis=0) & ~mask
    result = myocardial_strain(truth, sequence.geometry, mask, blood_pool=blood)
    _, _, centre = _radii(mask.shape, sequence.geometry.spacing_mm)
    assert np.allclose(result.centre_ras[:, :2], centre[:2], atol=1e-9)
    assert np.allclose(result.centre_ras[:, 2], np.arange(5), atol=1e-12)
    radial, circumferential = _analytic(truth, result.mask, sequence.geometry.spacing_mm, 0.0, shortening=0.12)
    gcs_error = abs(result.global_circumferential_pct[ES] - circumferential[ES].mean())
    grs_error = abs(result.global_radial_pct[ES] - radial[ES].mean())
    print(f"3-D phantom: GCS(ES) {result.global_circumferential_pct[ES]:.3f} % (error {gcs_error:.4f} pp), "
          f"GRS(ES) {result.global_radial_pct[ES]:.3f} % (error {grs_error:.4f} pp)")
    assert gcs_error < 0.15 and grs_error < 0.5


def test_oblique_geometry_gives_the_same_strain():
    spacing = (1.3, 1.3, 6.0)
    plain = _phantom(8.0, spacing_mm=spacing)
    oblique = _phantom(8.0, spacing_mm=spacing, origin_mm=(-40.0, 25.0, 110.0),
                       directions=tuple(map(tuple, OBLIQUE)))
    assert not np.allclose(plain[1][ES], oblique[1][ES], atol=0.1)  # the RAS fields really differ
    first = myocardial_strain(plain[1], plain[0].geometry, plain[2])
    second = myocardial_strain(oblique[1], oblique[0].geometry, oblique[2])
    assert np.array_equal(first.mask, second.mask)
    assert np.nanmax(np.abs(first.radial_pct - second.radial_pct)) < 1e-4
    assert np.nanmax(np.abs(first.circumferential_pct - second.circumferential_pct)) < 1e-4
    assert np.allclose(second.centre_ras, oblique[0].geometry.ras_of_ijk(
        first.centre_ras / np.asarray(spacing)), atol=1e-9)


# ------------------------------------------------------------------------------------- exact operators


def test_rigid_motion_has_no_strain_and_uniform_scaling_is_s_minus_one():
    geometry = Geometry((1.2, 0.9, 5.0), (10.0, -20.0, 30.0), tuple(map(tuple, OBLIQUE)))
    shape = (3, 40, 44)
    mask = _ring(shape, (19.5, 21.0), 8, 14)
    ras = _ras_grid(shape, geometry)
    centre = geometry.ras_of_ijk(np.array([21.0, 19.5, 1.0]))
    normal = OBLIQUE[:, 2]
    rotation = _rotation(normal, 20.0)
    translation = np.array([2.0, -3.0, 1.5])
    rigid = (ras - centre) @ (rotation - np.eye(3)).T + translation
    in_plane = (ras - centre) - np.outer((ras - centre).reshape(-1, 3) @ normal, normal).reshape(ras.shape)
    scale = 0.88
    fields = np.stack([np.zeros_like(ras), rigid, (scale - 1.0) * in_plane])
    result = myocardial_strain(fields, geometry, mask)
    inside = result.mask
    assert np.abs(result.radial_pct[1][inside]).max() < 1e-4  # |strain| < 1e-6 as a fraction
    assert np.abs(result.circumferential_pct[1][inside]).max() < 1e-4
    assert np.allclose(result.radial_pct[2][inside], 100 * (scale - 1.0), atol=1e-4)
    assert np.allclose(result.circumferential_pct[2][inside], 100 * (scale - 1.0), atol=1e-4)


def test_strain_input_errors_and_erosion_fallback():
    geometry = Geometry()
    mask = _ring((1, 30, 30), (14.5, 14.5), 6, 10)
    fields = np.zeros((2, 1, 30, 30, 3))
    with pytest.raises(InputError):
        myocardial_strain(fields, geometry, mask[:, :20])
    with pytest.raises(InputError):
        myocardial_strain(fields, geometry, np.zeros_like(mask))
    with pytest.raises(InputError):
        myocardial_strain(fields[..., :2], geometry, mask)
    with pytest.raises(InputError):
        myocardial_strain(fields[0], geometry, mask)
    bad = fields.copy()
    bad[1, 0, 3, 3, 1] = np.nan
    with pytest.raises(InputError):
        myocardial_strain(bad, geometry, mask)
    with pytest.raises(InputError):
        myocardial_strain(fields, geometry, mask, blood_pool=mask[:, :10])
    with pytest.raises(InputError):
        myocardial_strain(fields, geometry, mask, rv_insertion_ras=(1.0, 2.0, 3.0), level="septal")
    thin = _ring((1, 30, 30), (14.5, 14.5), 8, 9)  # a 1-px ring: erosion by 1 px would remove it
    with pytest.warns(UserWarning, match="leaves nothing"):
        result = myocardial_strain(fields, geometry, thin, erode_px=1)
    assert np.array_equal(result.mask, thin)


# ------------------------------------------------------------------------------------------ AHA segments


def _screen_direction_ras(degrees: float) -> np.ndarray:
    """RAS direction of a bull's-eye / radiological screen angle for an axial-like slice (identity grid).

    Radiological view from the feet: screen right = patient left (-R), screen up = anterior (+A).
    """
    angle = np.deg2rad(degrees)
    return np.array([-np.cos(angle), np.sin(angle), 0.0])


def test_aha_segments_follow_the_bullseye_orientation():
    geometry = Geometry()
    shape = (1, 64, 64)
    mask = np.ones(shape, dtype=bool)
    centre = np.array([[31.5, 31.5, 0.0]])
    insertion = centre[0] + 20.0 * _screen_direction_ras(120.0)  # anterior RV insertion, upper left on screen
    expected = {"anterior": 90, "anteroseptal": 150, "inferoseptal": 210, "inferior": 270, "inferolateral": 330,
                "anterolateral": 30}
    for level, first in (("mid", 7), ("basal", 1), (None, None)):
        segments, names = aha_segment_map(mask, geometry, centre, insertion, level)
        assert len(names) == 6
        for number, (name, degrees) in enumerate(expected.items()):
            i, j, _ = np.round(centre[0] + 12.0 * _screen_direction_ras(degrees)).astype(int)
            assert names[segments[0, j, i]].endswith(name)
            if first is not None:
                assert names[segments[0, j, i]] == f"{first + number} {level} {name}"
    # the septum is towards the patient's right (+R) and anterior is +A: anatomy, not just a convention
    segments, names = aha_segment_map(mask, geometry, centre, insertion, "mid")
    assert names[segments[0, 32, 44]] == "10 mid inferior" or names[segments[0, 44, 32]] == "7 mid anterior"
    assert "septal" in names[segments[0, 31, 44]]  # i = 44: patient right of the centre
    segments, names = aha_segment_map(mask, geometry, centre, insertion, "apical")
    assert names == ("13 apical anterior", "14 apical septal", "15 apical inferior", "16 apical lateral")
    for name, degrees in (("anterior", 90), ("septal", 180), ("inferior", 270), ("lateral", 0)):
        i, j, _ = np.round(centre[0] + 12.0 * _screen_direction_ras(degrees)).astype(int)
        assert names[segments[0, j, i]].endswith(name)


def test_segmental_strain_sizes_and_average(twisted):
    sequence, truth, mask = twisted
    geometry = sequence.geometry
    _, _, centre = _radii(mask.shape, geometry.spacing_mm)
    insertion = centre + 25.0 * _screen_direction_ras(120.0)
    result = myocardial_strain(truth, geometry, mask, rv_insertion_ras=insertion, level="mid")
    assert result.segment_names[0] == "7 mid anterior" and len(result.segment_names) == 6
    assert result.segmental_radial_pct.shape == (N_FRAMES, 6)
    segments, _ = aha_segment_map(result.mask, geometry, result.centre_ras, insertion, "mid")
    counts = np.array([(segments == s).sum() for s in range(6)])
    assert counts.sum() == result.mask.sum()
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()  # 60 degrees each
    weighted = (result.segmental_circumferential_pct * counts).sum(axis=1) / counts.sum()
    assert np.allclose(weighted, result.global_circumferential_pct, atol=1e-9)
    assert np.abs(result.segmental_circumferential_pct.mean(axis=1) - result.global_circumferential_pct).max() < 0.3
    assert np.abs(result.segmental_radial_pct.mean(axis=1) - result.global_radial_pct).max() < 0.3
    # a stretch along the anterior-posterior axis (RAS A = grid j here): radial stretch in the anterior and
    # inferior walls, circumferential stretch in the septal and lateral walls
    stretch = np.zeros_like(truth[:2])
    ras = _ras_grid(mask.shape, geometry)
    stretch[1, ..., 1] = 0.1 * (ras[..., 1] - centre[1])
    anisotropic = myocardial_strain(stretch, geometry, mask, rv_insertion_ras=insertion)
    err = dict(zip(anisotropic.segment_names, anisotropic.segmental_radial_pct[1], strict=True))
    ecc = dict(zip(anisotropic.segment_names, anisotropic.segmental_circumferential_pct[1], strict=True))
    others = ("anteroseptal", "inferoseptal", "inferolateral", "anterolateral")
    assert min(err["anterior"], err["inferior"]) > max(err[name] for name in others) + 1.0
    assert max(ecc["anterior"], ecc["inferior"]) < min(ecc[name] for name in others) - 1.0
    no_segments = myocardial_strain(truth, geometry, mask)
    assert no_segments.segment_names == () and no_segments.segmental_radial_pct.shape == (N_FRAMES, 0)


# ---------------------------------------------------------------------------------------------- propagate


def test_propagated_myocardium_matches_the_end_systolic_truth(twisted):
    sequence, truth, mask = twisted
    labels = mask.astype(np.uint8)
    propagated = propagate_labels(labels, truth, sequence.geometry)
    assert propagated.shape == truth.shape[:4] and propagated.dtype == np.uint8
    target = myocardium_mask(sequence, ES, amplitude_px=AMPLITUDE, twist_deg=8.0)
    score, unmoved = dice(propagated[ES], target), dice(mask, target)
    print(f"propagated myocardium Dice at ES {score:.4f} (no motion {unmoved:.4f})")
    assert score >= 0.97 and unmoved < 0.8
    assert np.array_equal(propagated[0], labels)  # zero field: labels returned exactly


def _ring_labels(material_radius: np.ndarray, r_endo: float, r_epi: float) -> np.ndarray:
    """0 background, 3 blood pool, 7 myocardium, 9 a 6 mm band outside the epicardium (by material radius)."""
    labels = np.zeros(material_radius.shape, dtype=np.int16)
    labels[material_radius < r_endo] = 3
    labels[(material_radius >= r_endo) & (material_radius < r_epi)] = 7
    labels[(material_radius >= r_epi) & (material_radius < r_epi + 6.0)] = 9
    return labels


def test_propagation_keeps_label_values_and_zero_fields_exactly(twisted):
    sequence, truth, _ = twisted
    geometry = sequence.geometry
    r_endo, r_epi, centre = _radii((1, 96, 96), geometry.spacing_mm)
    ras = _ras_grid((1, 96, 96), geometry)
    labels = _ring_labels(np.linalg.norm((ras - centre)[..., :2], axis=-1), r_endo, r_epi)
    # exact ES labels: with the reference at ES, the truth of frame 0 maps ES points to their ED positions
    back = smooth_motion_phantom(**{**PHANTOM, "twist_deg": 8.0, "reference_index": ES})[1][0]
    expected = _ring_labels(np.linalg.norm((ras + back - centre)[..., :2], axis=-1), r_endo, r_epi)
    fields = truth[[0, ES]].copy()
    progress_calls: list[float] = []
    out = propagate_labels(labels, fields, geometry, Progress(lambda f, m: progress_calls.append(f)))
    assert out.dtype == np.int16 and np.array_equal(out[0], labels)
    assert set(np.unique(out[1])) == {0, 3, 7, 9}
    scores = {value: dice(out[1] == value, expected == value) for value in (3, 7, 9)}
    unmoved = {value: dice(labels == value, expected == value) for value in (3, 7, 9)}
    print(f"label Dice at ES {scores} (no motion {unmoved})")
    assert min(scores.values()) >= 0.95 and max(unmoved.values()) < 0.8
    assert progress_calls[-1] == 1.0 and len(progress_calls) >= 3
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        propagate_labels(labels, fields, sequence.geometry, Progress(token=token))
    with pytest.raises(InputError):
        propagate_labels(labels.astype(float), fields, sequence.geometry)
    with pytest.raises(InputError):
        propagate_labels(labels[:, :50], fields, sequence.geometry)


def test_tracked_midwall_points_follow_the_analytic_map(twisted):
    sequence, truth, _ = twisted
    geometry = sequence.geometry
    r_endo, r_epi, centre = _radii((1, 96, 96), geometry.spacing_mm)
    big_r = 0.5 * (r_endo + r_epi)
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    points = centre + big_r * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=-1)
    tracked = propagate_points(points, truth, geometry)
    assert tracked.shape == (N_FRAMES, 90, 3) and np.array_equal(tracked[0], points)
    state = contraction_profile(N_FRAMES)[ES]
    r_endo_es = r_endo - AMPLITUDE * state
    expected_r = np.sqrt(big_r**2 + r_endo_es**2 - r_endo**2)
    expected_twist = np.deg2rad(8.0) * state * (r_epi - big_r) / (r_epi - r_endo)
    offset = tracked[ES] - centre
    assert np.abs(np.linalg.norm(offset[:, :2], axis=-1) - expected_r).max() < 0.05
    turned = np.angle(np.exp(1j * (np.arctan2(offset[:, 1], offset[:, 0]) - angles)))
    assert np.abs(turned - expected_twist).max() < 0.005
    lengths = np.linalg.norm(np.roll(tracked, -1, axis=1) - tracked, axis=-1).sum(axis=1)
    assert abs(lengths[ES] / lengths[0] - expected_r / big_r) < 0.002  # contour GCS
    with pytest.raises(InputError):
        propagate_points(points[:, :2], truth, geometry)


def test_dice():
    a = np.zeros((1, 10, 10), dtype=bool)
    a[0, 2:6, 2:6] = True
    b = np.zeros_like(a)
    b[0, 4:8, 2:6] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dice(a.astype(np.uint8) * 4, b) == pytest.approx(0.5)
    with pytest.raises(InputError):
        dice(a, b[:, :5])
