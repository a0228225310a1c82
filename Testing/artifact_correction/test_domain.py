"""The domain-randomised CT motion simulation (issue 27): fan beam, photon noise, varied anatomy and texture, and the
settings held out of training."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.artifact_correction import domain
from scanai.artifact_correction import simulator as cs
from scanai.artifact_correction.timing import PhaseWindow, RPeaks

pytest.importorskip("skimage")

RR = RPeaks.regular(1.0, 6)


def test_randomised_parts_never_overlap_so_projections_are_exact():
    """Painting the parts in order equals summing their increments (what the analytic projection does) for
    thoraces built around random hearts, training and held-out, at several phases."""
    times = RR.time_of(1, 0.0) + np.array([0.0, 0.35])
    for number in range(6):
        drawn = domain.random_domain(np.random.default_rng([11, number]), held_out=number % 3 == 2)
        half = drawn.protocol.pixels * drawn.protocol.pixel_mm / 2.0
        axis = np.arange(-half, half, 1.5)
        state = cs._heart_state(drawn.phantom, times, RR, 0.0)
        for k in range(times.size):
            painted = cs._render(state, k, axis[None, :], axis[:, None])
            assert np.array_equal(painted, cs._render(state, k, axis[None, :], axis[:, None], additive=True))
        # the whole object lies inside the reconstruction circle
        inside = np.hypot(axis[None, :], axis[:, None]) < half
        assert np.all(painted[~inside] == cs.AIR_HU)


def test_held_out_settings_are_never_drawn_for_training():
    training = [domain.random_domain(np.random.default_rng([12, n])) for n in range(200)]
    held_out = [domain.random_domain(np.random.default_rng([13, n]), held_out=True) for n in range(30)]
    for drawn in training:
        protocol = drawn.protocol
        assert protocol.filter_name in domain.TRAINING_FILTERS
        assert domain.TRAINING_NOISE_HU[0] <= protocol.noise_hu <= domain.TRAINING_NOISE_HU[1]
        assert protocol.fan_deg == 0 or domain.TRAINING_FAN_DEG[0] <= protocol.fan_deg <= domain.TRAINING_FAN_DEG[1]
        assert not drawn.phantom.stent
        assert domain.PIXEL_MM[0] <= protocol.pixel_mm <= domain.PIXEL_MM[1] + 0.3
    for drawn in held_out:
        protocol = drawn.protocol
        assert protocol.filter_name in domain.HELD_OUT_FILTERS and drawn.phantom.stent
        assert domain.HELD_OUT_NOISE_HU[0] <= protocol.noise_hu <= domain.HELD_OUT_NOISE_HU[1]
        assert domain.HELD_OUT_FAN_DEG[0] <= protocol.fan_deg <= domain.HELD_OUT_FAN_DEG[1]
    # the draws vary what the issue lists
    assert {d.protocol.filter_name for d in training} == set(domain.TRAINING_FILTERS)
    assert {d.protocol.noise_model for d in training} == {"white", "photon"}
    assert any(d.protocol.fan_deg == 0 for d in training) and any(d.protocol.fan_deg > 0 for d in training)
    assert any(d.phantom.rv_mm for d in training) and any(d.phantom.pericardial_fat_mm > 0 for d in training)
    assert any(d.phantom.thorax is cs.MINI_THORAX for d in training)
    assert any(d.texture_seed is not None for d in training) and any(d.texture_seed is None for d in training)


def test_fan_beam_ray_times_and_a_still_phantom_scanned_either_way():
    parallel = cs.ScanProtocol()
    fan = cs.ScanProtocol(fan_deg=50.0)
    assert fan.half_scan_s == pytest.approx(0.3 * 230.0 / 360.0)
    window = PhaseWindow(1.0, 1.0 + fan.half_scan_s)
    times = cs.view_times(window, fan).reshape(fan.views, 2 * fan.pixels)
    assert times.min() >= window.start_s and times.max() <= window.end_s
    assert np.all(np.diff(times, axis=0) > 0)  # later views later, on every channel
    omega = (np.pi + np.deg2rad(50.0)) / fan.half_scan_s
    spread = 2 * np.arcsin((fan.pixels // 2) * fan.pixel_mm / fan.source_radius_mm) / omega
    assert np.ptp(times[fan.views // 2]) == pytest.approx(spread, rel=0.02)  # each channel at its own time
    np.testing.assert_allclose(cs.view_times(PhaseWindow(1.0, 1.15), parallel),
                               1.0 + (np.arange(240) + 0.5) * 0.15 / 240)
    still = cs.HeartPhantom().frozen()
    np.testing.assert_allclose(cs.reconstruct_window(still, window, None, fan),
                               cs.reconstruct_window(still, PhaseWindow(1.0, 1.15), None, parallel), atol=1e-3)
    moving = cs.HeartPhantom()
    systole = PhaseWindow(RR.time_of(1, 0.2), RR.time_of(1, 0.2) + fan.half_scan_s)
    difference = cs.reconstruct_window(moving, systole, RR, fan) - cs.reconstruct_window(
        moving, PhaseWindow(systole.start_s, systole.start_s + 0.15), RR, parallel)
    assert np.sqrt(np.mean(difference**2)) > 1.0  # the fan's longer, per-ray timing changes a moving heart's image


def test_photon_noise_is_heavier_along_long_paths():
    protocol = cs.ScanProtocol(noise_model="photon", noise_hu=20.0)
    state = cs._heart_state(cs.HeartPhantom().frozen(), np.array([0.0]), None, 0.0)
    clean = cs._sinogram(state, protocol)
    noise = np.stack([cs._add_noise(clean, protocol, np.random.default_rng(k)) - clean for k in range(20)])
    spread = noise.std(axis=0)
    through = clean > 0.1 * clean.max()
    long, short = clean >= np.quantile(clean[through], 0.8), through & (clean <= np.quantile(clean[through], 0.2))
    assert spread[long].mean() > 1.5 * spread[short].mean()
    white = cs._add_noise(clean, cs.ScanProtocol(noise_hu=20.0), np.random.default_rng(0)) - clean
    assert white[long].std() == pytest.approx(white[short].std(), rel=0.2)


def test_texture_lies_on_still_soft_tissue_away_from_the_heart():
    drawn = domain.random_domain(np.random.default_rng([14, 1]))
    image = domain.texture_image(7, drawn.protocol, drawn.phantom)
    anatomy = cs.phantom_hu(drawn.phantom.frozen(), 0.0, None, drawn.protocol)
    axis = (np.arange(drawn.protocol.pixels) - drawn.protocol.pixels // 2) * drawn.protocol.pixel_mm
    distance = np.hypot(axis[None, :] - drawn.phantom.centre_mm[0], axis[:, None] - drawn.phantom.centre_mm[1])
    assert np.count_nonzero(image) > 0.05 * image.size
    assert np.all(image[distance <= domain.heart_reach_mm(drawn.phantom)] == 0)
    assert np.all(image[(anatomy <= -200) | (anatomy >= 300)] == 0)
    assert np.abs(image).max() <= domain.TEXTURE_CLIP_HU


def test_a_randomised_training_case_is_cropped_around_the_heart_on_the_model_grid():
    from scanai.artifact_correction.train import CROP, is_test_case, make_case

    case = make_case(0, 0, "randomised")
    assert case.inputs.shape == (4, CROP, CROP) and case.target.shape == (1, CROP, CROP)
    assert domain.PIXEL_MM[0] <= case.features["pixel_mm"] <= domain.PIXEL_MM[1] + 0.3
    centre = case.target[0, CROP // 2 - 4: CROP // 2 + 4, CROP // 2 - 4: CROP // 2 + 4]
    assert np.median(centre) > 200  # the contrast-filled LV pool at the crop's centre
    held = make_case(0, 4, "randomised", held_out=True)
    assert is_test_case(4) and held.features["noise_hu"] > 5.0
