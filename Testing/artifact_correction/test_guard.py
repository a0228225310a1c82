"""Issue 27: the network's correction cannot make its input worse. Identical inputs come back unchanged, a still
scene comes back as the mean of its phases, the correction is bounded by what the phases show, and inputs unlike
the training data (or an uncertain correction) fall back to registration fusion, saying so."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from scanai.artifact_correction import guard
from scanai.artifact_correction.pipeline import run_network_or_fallback

PCT = [66.0, 69.0, 72.0, 75.0]


def _rmse(a, b, mask=None) -> float:
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean(difference[mask] ** 2 if mask is not None else difference**2)))


def _disk_scene(shift_px: float = 0.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """(4, 1, 48, 48) HU: a 300 HU disk in 40 HU tissue, moving ``shift_px`` pixels per phase, with noise."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:48, :48]
    phases = [np.where((rows - 24) ** 2 + (columns - 18 - shift_px * k) ** 2 < 64, 300.0, 40.0) for k in range(4)]
    return (np.stack(phases)[:, None] + noise * rng.normal(size=(4, 1, 48, 48))).astype(np.float32)


def _shifting_network(offset_hu: float):
    """A 'network' that returns the inner phases' mean plus ``offset_hu`` everywhere (the HU shift the issue saw)."""
    return lambda phases: phases[1:3].mean(axis=0, keepdims=True) + offset_hu


def test_identical_inputs_come_back_unchanged_whatever_the_network_does():
    still = _disk_scene(noise=0.0)[:1].repeat(4, axis=0)
    guarded = guard.guarded_correction(_shifting_network(80.0), still)
    np.testing.assert_array_equal(guarded.output[0], still[0])
    assert not guarded.gate.any() and np.isnan(guarded.uncertainty)


def test_a_still_noisy_scene_is_the_mean_of_its_phases_not_the_networks_shift():
    truth = _disk_scene()[0]
    noisy = _disk_scene(noise=15.0, seed=3)
    noisy[:] = truth + (noisy - _disk_scene())  # the same still disk in every phase, independent noise
    guarded = guard.guarded_correction(_shifting_network(60.0), noisy)
    assert 12.0 < guarded.noise_hu < 18.0  # the across-phase noise is estimated from the phases themselves
    assert guarded.gate.mean() < 0.01
    assert _rmse(guarded.output[0], truth) <= _rmse(noisy.mean(axis=0), truth) + 0.5
    assert _rmse(guarded.output[0], truth) < 0.25 * 60.0  # the +60 HU shift did not get through


def test_moving_structure_opens_the_gate_and_the_output_stays_within_the_phases_values():
    moving = _disk_scene(shift_px=2.0, noise=5.0)
    guarded = guard.guarded_correction(_shifting_network(500.0), moving)
    rows, columns = np.mgrid[:48, :48]
    edge = np.abs(np.hypot(rows - 24, columns - 21) - 8) < 2  # the disk's moving edge
    assert guarded.gate[0][edge].mean() > 0.8
    assert guarded.gate[0][:, 40:].max() == 0.0  # far tissue: still
    low, high = guard.phase_bounds(moving, guard.noise_map_hu(moving))
    assert (guarded.output <= high + 1e-3).all() and (guarded.output >= low - 1e-3).all()
    assert guarded.output.max() < 300.0 + 0.15 * 500.0  # the +500 HU was clipped to what the phases show


def test_the_network_sees_only_the_box_around_the_moving_structure():
    """A moving disk in a wide still field: the network is run on the gate's box plus the margin (clipped at the
    image's edge), and outside that box the output is the phases' mean."""
    still = 40.0 + 5.0 * np.random.default_rng(1).normal(size=(4, 1, 128, 128))
    still[:, :, :48, :48] = _disk_scene(shift_px=2.0, noise=5.0)
    moving = still.astype(np.float32)
    seen = []

    def network(phases):
        seen.append(phases.shape)
        return _shifting_network(30.0)(phases)

    guarded = guard.guarded_correction(network, moving)
    rows, columns = guard.moving_box(guarded.gate, margin_px=4)
    open_rows, open_columns = np.nonzero(guarded.gate[0])
    assert rows.start == max(0, open_rows.min() - 4) and columns.stop == open_columns.max() + 5
    box = guard.moving_box(guarded.gate)
    assert seen == [(4, 1, box[0].stop - box[0].start, box[1].stop - box[1].start)] * len(guard.VARIANTS)
    assert seen[0][-1] < moving.shape[-1]  # the still part of the field was not run
    outside = np.ones(moving.shape[1:], dtype=bool)
    outside[(Ellipsis, *box)] = False
    np.testing.assert_allclose(guarded.output[0][outside], moving.mean(axis=0)[outside], atol=1e-3)


def test_uncertainty_is_small_for_a_flip_consistent_correction_and_large_otherwise():
    moving = _disk_scene(shift_px=2.0, noise=5.0)
    consistent = guard.guarded_correction(_shifting_network(0.0), moving)
    ramp = np.linspace(-300.0, 300.0, 48)[None, None, None, :]
    inconsistent = guard.guarded_correction(lambda p: p[1:3].mean(axis=0, keepdims=True) + ramp, moving)
    assert consistent.uncertainty < 0.1
    assert inconsistent.uncertainty > guard.MAX_UNCERTAINTY


class _FakeCorrector:
    """Just what :func:`run_network_or_fallback` asks of the network, with a chosen behaviour."""

    n_outputs = 1

    def __init__(self, network, ranges=None):
        self.network, self.training_ranges = network, ranges or {}

    def correct_guarded(self, phases, phase_pct, pixel_mm, progress=None, noise_hu=None):
        return guard.guarded_correction(self.network, phases, noise_hu=noise_hu)


def test_an_uncertain_correction_falls_back_to_registration_fusion_and_says_so():
    moving = _disk_scene(shift_px=2.0, noise=5.0)
    ramp = np.linspace(-300.0, 300.0, 48)[None, None, None, :]
    corrector = _FakeCorrector(lambda p: p[1:3].mean(axis=0, keepdims=True) + ramp)
    with pytest.warns(UserWarning, match="Registration fusion was used instead of the network.*uncertain"):
        outcome = run_network_or_fallback(moving, PCT, (1.0, 1.0, 1.0), corrector)
    assert outcome.method == "registration-fusion" and "uncertain" in outcome.fallback_reason
    confident = run_network_or_fallback(moving, PCT, (1.0, 1.0, 1.0), _FakeCorrector(_shifting_network(0.0)))
    assert confident.method == "network" and confident.fallback_reason is None


def test_inputs_outside_the_training_ranges_are_named_and_fall_back():
    scene = _disk_scene(shift_px=1.0, noise=15.0)
    features = guard.input_features(scene, (0.7, 0.7))
    ranges = {"pixel_mm": [1.0, 1.0], "field_of_view_mm": [128.0, 128.0], "noise_hu": [14.0, 15.0],
              "fraction_fat": [0.0, 0.02], "fraction_contrast": [0.05, 0.1]}
    problems = guard.out_of_distribution(features, ranges)
    assert any(p.startswith("pixel size 0.7 mm") for p in problems)
    assert any(p.startswith("field of view") for p in problems)
    assert not any(p.startswith("fat") for p in problems)  # no fat in the scene
    assert guard.out_of_distribution(guard.input_features(scene, (1.0, 1.0)),
                                     {**ranges, "field_of_view_mm": [48.0, 48.0]}) == []
    corrector = _FakeCorrector(_shifting_network(0.0), ranges)
    with pytest.warns(UserWarning, match="outside what the network was trained on: pixel size 0.7 mm"):
        outcome = run_network_or_fallback(scene, PCT, (0.7, 0.7, 1.0), corrector)
    assert outcome.method == "registration-fusion"


def test_hu_bands_are_measured_around_the_moving_heart_so_a_crop_has_the_same_fractions():
    """A crop of the field of view (or a wider one, with air around the body) does not change the HU-band
    fractions: they are measured within 50 mm of where the phases disagree (the bench's candidate fell back on
    18 of 24 crops, whose whole-view air fraction was 0 %)."""
    body = np.pad(_disk_scene(shift_px=2.0, noise=5.0), ((0, 0), (0, 0), (16, 16), (16, 16)), mode="edge")
    wide = np.pad(body, ((0, 0), (0, 0), (40, 40), (40, 40)), constant_values=-1000.0)
    pixel = (2.0, 2.0)
    near = guard.heart_neighbourhood(body, pixel)
    rows, columns = np.nonzero(near)
    assert abs(rows.mean() - 40) < 2 and abs(columns.mean() - (18 + 16 + 3)) < 4  # on the moving disk
    assert near.sum() == pytest.approx(np.pi * 25**2, rel=0.05)  # 50 mm at 2 mm pixels
    cropped, widened = guard.input_features(body, pixel), guard.input_features(wide, pixel)
    for name, _, _ in guard.HU_BANDS:
        assert cropped[f"fraction_{name}"] == pytest.approx(widened[f"fraction_{name}"], abs=0.005)
    assert widened["fraction_air"] == 0.0 and widened["field_of_view_mm"] == 2.0 * 160
    still = np.repeat(body[:1], 4, axis=0)
    assert guard.heart_neighbourhood(still, pixel)[40, 40]  # nothing moves: around the image centre


# ---------------------------------------------------------------------------------------------- shipped weights
@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("torch")
    pytest.importorskip("skimage")
    from scanai.artifact_correction.network import load_artifact_corrector

    return load_artifact_corrector("cpu")


def test_shipped_card_records_the_training_ranges(shipped):
    """The ranges span the randomised domain (0.75-1.9 mm pixels, pericardial and subcutaneous fat) and hold its
    own test cases; the same slices at 3 mm pixels, or with fat-range voxels everywhere, are outside."""
    from scanai.artifact_correction.train import card_draw, make_case

    ranges = shipped.training_ranges
    assert set(ranges) >= {"pixel_mm", "field_of_view_mm", "noise_hu", "fraction_fat"}
    assert ranges["pixel_mm"][0] < 0.8 and ranges["pixel_mm"][1] > 1.8 and ranges["fraction_fat"][1] > 0.1
    seed, domain = card_draw(shipped.card)
    for index in (4, 9, 14):  # test portion: never trained on
        features = make_case(seed, index, domain).features
        assert guard.out_of_distribution(features, ranges) == [], index
    assert "pixel size 3 mm" in guard.out_of_distribution({**features, "pixel_mm": 3.0}, ranges)[0]
    assert "fat-range" in guard.out_of_distribution({**features, "fraction_fat": 0.9}, ranges)[0]


def test_shipped_network_four_identical_inputs_and_a_still_heart(shipped):
    """Four copies of the noise-free truth come back within 2 HU (exactly, here); a still heart scanned four times
    comes back no worse than the mean of its phases."""
    from scanai.artifact_correction.train import card_draw, is_test_case, make_case

    seed, domain = card_draw(shipped.card)
    static = next(c for c in (make_case(seed, i, domain) for i in filter(is_test_case, range(400))) if c.static)
    truth = static.target[0]
    copies = np.repeat(truth[None, None], 4, axis=0)
    same = shipped.correct_guarded(copies, static.phase_pct, (1.0, 1.0)).output[0, 0]
    assert _rmse(same, truth) <= 2.0
    still = shipped.correct_guarded(static.inputs[:, None], static.phase_pct, (1.0, 1.0)).output[0, 0]
    assert _rmse(still, truth) <= _rmse(static.inputs.mean(axis=0), truth) + 0.1
    raw = shipped.correct(copies, static.phase_pct)[0, 0]
    print(f"identical inputs: raw network {_rmse(raw, truth):.2f} HU, guarded {_rmse(same, truth):.2f} HU")


def test_shipped_network_in_distribution_is_trusted_and_corrects(shipped):
    from scanai.artifact_correction.train import card_draw, is_test_case, make_case

    seed, domain = card_draw(shipped.card)
    case = next(c for c in (make_case(seed, i, domain) for i in filter(is_test_case, range(400)))
                if not c.static and _rmse(c.inputs[1], c.target[0]) > 20.0)
    phases = case.inputs[:, None]
    assert guard.out_of_distribution(guard.input_features(phases, (1.0, 1.0)), shipped.training_ranges) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome = run_network_or_fallback(phases, case.phase_pct, (1.0, 1.0, 1.0), shipped)
    assert outcome.method == "network" and outcome.uncertainty < guard.MAX_UNCERTAINTY
    centre = np.mean([_rmse(case.inputs[k], case.target[0]) for k in (1, 2)])
    assert _rmse(outcome.volumes[0, 0], case.target[0]) <= 0.7 * centre
