"""Classical motion-artifact baselines (scanai.artifact_correction.baselines) on small synthetic phase sequences.

The scene: a bright smooth ellipse (blood pool, 350 HU) in soft tissue (40 HU) with a small vessel (400 HU,
radius 2 px) moving along the columns; the ellipse moves half as fast. Every phase volume is the scene at its
phase's shift, so the truth at any time is the scene at that shift.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scanai.artifact_correction.baselines import best_phase, halfway_warp, plain_mean, registration_fusion
from scanai.core.errors import Cancelled, InputError
from scanai.core.progress import Progress

SIZE = 64
VESSEL = (20.0, 50.0)  # (row, column) of the vessel at shift 0


def scene(shift_px: float, size: int = SIZE, noise_hu: float = 0.0, rng: np.random.Generator | None = None,
          vessel_scale: float = 1.0) -> np.ndarray:
    """(size, size) HU: ellipse shifted by shift/2, vessel by shift (columns); blurred by 1 px, optional noise."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = size / 2.0
    image = np.full((size, size), 40.0)
    image[((cols - centre - 0.5 * shift_px) / 14.0) ** 2 + ((rows - centre) / 10.0) ** 2 <= 1.0] = 350.0
    vessel_row, vessel_col = VESSEL
    image[(cols - vessel_col - vessel_scale * shift_px) ** 2 + (rows - vessel_row) ** 2 <= 2.0**2] = 400.0
    image = ndimage.gaussian_filter(image, 1.0)
    if noise_hu:
        image = image + (rng or np.random.default_rng(0)).normal(0.0, noise_hu, image.shape)
    return image


def phase_sequence(shifts, noise_hu: float = 0.0, seed: int = 0) -> np.ndarray:
    """(N, 1, SIZE, SIZE) HU phase volumes at the given shifts."""
    rng = np.random.default_rng(seed)
    return np.stack([scene(s, noise_hu=noise_hu, rng=rng) for s in shifts])[:, None]


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, dtype=float) - b) ** 2)))


def vessel_column(image: np.ndarray) -> float:
    """Intensity-weighted column of the vessel (background removed) in a window around it."""
    rows, cols = slice(12, 29), slice(30, 64)
    part = np.clip(np.asarray(image)[rows, cols] - 45.0, 0.0, None)
    return float((part * np.arange(cols.start, cols.stop)).sum() / part.sum())


def vessel_peak_column(image: np.ndarray) -> float:
    """Sub-pixel column of the brightest point on the vessel's row (parabola through the peak and its neighbours)."""
    row = np.asarray(image)[int(VESSEL[0]), 30:]
    peak = int(np.argmax(row))
    left, centre, right = row[peak - 1], row[peak], row[peak + 1]
    return 30 + peak + 0.5 * (left - right) / (left - 2.0 * centre + right)


def ellipse_column(image: np.ndarray) -> float:
    """Intensity-weighted column of the ellipse (rows away from the vessel)."""
    part = np.clip(np.asarray(image)[26:39] - 45.0, 0.0, None)
    return float((part * np.arange(image.shape[-1])).sum() / part.sum())


# ------------------------------------------------------------------------------------------- zero motion


def test_zero_motion_noise_free_comes_back_within_1_hu():
    truth = scene(0.0)
    identical = np.repeat(truth[None, None], 4, axis=0)
    for result in (registration_fusion(identical, (1.0, 1.0, 1.0)), halfway_warp(identical[1], identical[2], (1, 1)),
                   plain_mean(identical), best_phase(identical)[1]):
        assert result.shape == (1, SIZE, SIZE)
        assert np.abs(result - truth).max() < 1.0
    # not bit-identical (0.05 HU jitter) so the registration really runs: still within 1 HU everywhere
    rng = np.random.default_rng(3)
    jittered = identical + rng.normal(0.0, 0.05, identical.shape)
    assert np.abs(registration_fusion(jittered, (1.0, 1.0)) - truth).max() < 1.0
    assert np.abs(halfway_warp(jittered[1], jittered[2], (1.0, 1.0)) - truth).max() < 1.0


def test_zero_motion_with_noise_is_unchanged_within_noise_and_fusion_averages_it_down():
    noise = 15.0
    phases = phase_sequence([0, 0, 0, 0], noise_hu=noise, seed=1)
    truth = scene(0.0)
    fused = registration_fusion(phases, (1.0, 1.0, 1.0))[0]
    halfway = halfway_warp(phases[1], phases[2], (1.0, 1.0, 1.0))[0]
    mean = plain_mean(phases)[0]
    # unbiased, and the noise averaged down: 4 phases -> about 15 / 2 HU, never worse than one phase
    assert abs(float((fused - truth).mean())) < 1.0
    assert rmse(fused, truth) < 0.65 * noise
    assert rmse(halfway, truth) < 0.85 * noise
    assert rmse(mean, truth) < 0.8 * noise
    assert rmse(fused, truth) < rmse(phases[1, 0], truth)


# ---------------------------------------------------------------------------------------------- half way


@pytest.mark.parametrize("separation", [4.0, 7.0])
def test_halfway_warp_puts_the_objects_at_the_middle_position(separation):
    a, b = scene(-separation / 2.0), scene(separation / 2.0)
    truth = scene(0.0)
    middle = halfway_warp(a, b, (0.8, 0.8))  # (H, W) in -> (H, W) out
    assert middle.shape == a.shape
    assert abs(vessel_column(middle) - vessel_column(truth)) < 0.5
    assert abs(vessel_peak_column(middle) - vessel_peak_column(truth)) < 0.5  # the plain mean has 2 ghost peaks
    assert abs(ellipse_column(middle) - ellipse_column(truth)) < 0.5
    # the vessel stays one sharp vessel (not two ghosts as in the plain mean)
    assert middle[int(VESSEL[0])].max() > 0.85 * truth[int(VESSEL[0])].max()
    assert rmse(middle, truth) < 0.5 * rmse(0.5 * (a + b), truth)


def test_halfway_warp_thin_stack_and_3d():
    # 2 slices: registered slice by slice; 5 slices: registered in 3-D (spacing (i, j, k) mm)
    for slices in (2, 5):
        a = np.stack([scene(-2.5, vessel_scale=1.0)] * slices)
        b = np.stack([scene(2.5, vessel_scale=1.0)] * slices)
        middle = halfway_warp(a, b, (1.0, 1.0, 2.0))
        assert middle.shape == (slices, SIZE, SIZE)
        for k in range(slices):
            assert abs(vessel_column(middle[k]) - vessel_column(scene(0.0))) < 0.5


# ----------------------------------------------------------------------------------------------- fusion


def test_registration_fusion_beats_the_plain_mean_at_the_centre_time():
    shifts = [-7.5, -2.5, 2.5, 7.5]  # linear motion; the centre time is shift 0
    phases = phase_sequence(shifts, noise_hu=15.0, seed=2)
    truth = scene(0.0)
    fused = registration_fusion(phases, (1.0, 1.0, 1.0))[0]
    mean = plain_mean(phases)[0]
    centre_phase = phases[1, 0]
    assert rmse(fused, truth) < 0.8 * rmse(mean, truth)
    assert rmse(fused, truth) < 0.6 * rmse(centre_phase, truth)
    assert abs(vessel_column(fused) - vessel_column(truth)) < 0.5
    # odd N: the centre time is the middle phase
    odd = phase_sequence([-5.0, 0.0, 5.0], noise_hu=15.0, seed=4)
    fused_odd = registration_fusion(odd[:, 0], (1.0, 1.0))  # (N, H, W) in -> (H, W) out
    assert fused_odd.shape == (SIZE, SIZE)
    assert rmse(fused_odd, truth) < 0.75 * rmse(odd[1, 0], truth)
    assert rmse(registration_fusion(odd, (1, 1), combine="median")[0], truth) < rmse(odd[1, 0], truth)


def test_slab_bounds_cover_every_slice_once_within_the_budget():
    from scanai.artifact_correction.baselines import slab_bounds

    assert slab_bounds(200, 100, budget=10**6) == [(0, 200, 0, 200)]  # fits: one piece
    for slices, budget, margin in ((250, 16 * 1000, 4), (37, 9 * 1000, 2), (5, 1, 4)):
        bounds = slab_bounds(slices, 1000, budget, margin)
        kept = [k for _, _, first, stop in bounds for k in range(first, stop)]
        assert kept == list(range(slices))  # every slice kept once, in order
        for first, stop, keep_first, keep_stop in bounds:
            assert first == max(keep_first - margin, 0) and stop == min(keep_stop + margin, slices)
            assert (stop - first) * 1000 <= max(budget, (2 * margin + 4) * 1000)


def test_large_volumes_are_fused_in_slabs_as_well_as_in_one_piece(monkeypatch):
    """Issue 27's default method on a real cardiac CT (512 x 512 x 250: about 50 GB in one piece) runs in slabs of
    slices. On a moving 3-D scene cut into 4 slabs the fused volume is as close to the truth as the one-piece
    fusion (the volume's own slices differ a little: demons sees less context) and every slice is filled."""
    from scanai.artifact_correction import baselines

    slices, shifts = 14, [-6.0, -2.0, 2.0, 6.0]
    rng = np.random.default_rng(3)
    phases = np.stack([np.stack([scene(s) for _ in range(slices)]) for s in shifts])
    phases = phases + rng.normal(0.0, 10.0, phases.shape)
    truth = np.stack([scene(0.0)] * slices)
    whole = registration_fusion(phases, (1.0, 1.0, 1.0))
    monkeypatch.setattr(baselines, "SLAB_VOXELS", 8 * SIZE * SIZE)
    monkeypatch.setattr(baselines, "SLAB_MARGIN", 2)
    assert len(baselines.slab_bounds(slices, SIZE * SIZE)) == 4
    slabs = registration_fusion(phases, (1.0, 1.0, 1.0))
    centre = plain_mean(phases)
    assert rmse(slabs, truth) < 1.1 * rmse(whole, truth) < 0.8 * rmse(centre, truth)
    for k in range(slices):
        assert abs(vessel_column(slabs[k]) - vessel_column(truth[k])) < 0.5, k
    middle = halfway_warp(phases[1], phases[2], (1.0, 1.0, 1.0))
    assert abs(vessel_column(middle[0]) - vessel_column(truth[0])) < 0.5


def test_plain_mean_takes_the_inner_phases():
    phases = np.arange(4 * 2 * 3, dtype=float).reshape(4, 1, 2, 3) * np.array([1, 10, 100, 1000])[:, None, None, None]
    np.testing.assert_allclose(plain_mean(phases), 0.5 * (phases[1] + phases[2]))
    np.testing.assert_allclose(plain_mean(phases[:3]), phases[1])
    np.testing.assert_allclose(plain_mean(phases[:2]), 0.5 * (phases[0] + phases[1]))


# -------------------------------------------------------------------------------------------- best phase


def test_best_phase_picks_the_least_moving_phase():
    # vessel positions: the big jumps are 0->1 and 3->4, so phase 2 (1 px from both neighbours) moves least
    phases = np.stack([scene(s) for s in (0, 8, 9, 10, 18)])  # (N, H, W)
    index, image = best_phase(phases)
    assert index == 2
    np.testing.assert_array_equal(image, phases[2])
    image[0, 0] = -999.0
    assert phases[2, 0, 0] != -999.0  # a copy
    # with a mask, only the motion inside it counts: left steps 6, 1, 1, 6 px -> phase 2; right steps 2, 1, 6, 6 px
    # -> phase 1 (amplitude = mean of the two neighbour differences, one at the ends)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    def two_objects(left: float, right: float) -> np.ndarray:
        image = np.full((SIZE, SIZE), 40.0)
        image[(cols - 8 - left) ** 2 + (rows - 32) ** 2 <= 16] = 400.0
        image[(cols - 36 - right) ** 2 + (rows - 32) ** 2 <= 16] = 400.0
        return ndimage.gaussian_filter(image, 1.0)
    left_path, right_path = (0, 6, 7, 8, 14), (0, 2, 3, 9, 15)
    stack = np.stack([two_objects(x, y) for x, y in zip(left_path, right_path, strict=True)])[:, None]
    left_mask = np.zeros((1, SIZE, SIZE), dtype=bool)
    left_mask[..., :28] = True
    assert best_phase(stack, mask=left_mask)[0] == 2
    assert best_phase(stack, mask=~left_mask)[0] == 1


# ------------------------------------------------------------------------------------ inputs, progress


def test_inputs_are_not_modified_and_progress_reaches_the_end():
    phases = phase_sequence([-3.0, -1.0, 1.0, 3.0], noise_hu=5.0).astype(np.float32)
    before = phases.copy()
    fractions: list[float] = []
    registration_fusion(phases, (1.0, 1.0), progress=Progress(lambda f, m: fractions.append(f)))
    halfway_warp(phases[1], phases[2], (1.0, 1.0))
    plain_mean(phases)
    best_phase(phases)
    np.testing.assert_array_equal(phases, before)
    assert fractions[-1] == pytest.approx(1.0)
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:], strict=False))


def test_cancel_stops_the_registration():
    phases = phase_sequence([-3.0, -1.0, 1.0, 3.0])
    progress = Progress()
    progress.token.cancel()
    with pytest.raises(Cancelled):
        registration_fusion(phases, (1.0, 1.0), progress=progress)
    with pytest.raises(Cancelled):
        halfway_warp(phases[0], phases[1], (1.0, 1.0), progress=progress)


def test_bad_inputs_raise_clear_errors():
    phases = phase_sequence([0.0, 2.0, 4.0])
    with pytest.raises(InputError, match="at least 2 phase volumes"):
        registration_fusion(phases[:1], (1.0, 1.0))
    with pytest.raises(InputError, match="at least 2 phase volumes"):
        plain_mean(phases[:1])
    with pytest.raises(InputError, match="at least 2 phase volumes"):
        best_phase(phases[:1])
    with pytest.raises(InputError, match="different shapes"):
        halfway_warp(phases[0], phases[1, :, :32], (1.0, 1.0))
    with pytest.raises(InputError, match="NaN"):
        nan = phases.copy()
        nan[2, 0, 5, 5] = np.nan
        registration_fusion(nan, (1.0, 1.0))
    infinite = phases.copy()
    infinite[1, 0, 0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or infinity"):
        plain_mean(infinite)
    with pytest.raises(InputError, match=r"\(N, K, J, I\)"):
        registration_fusion(phases[0, 0, 0], (1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        registration_fusion(phases, (1.0, -1.0))
    with pytest.raises(InputError, match="spacing"):
        halfway_warp(np.stack([phases[0, 0]] * 5), np.stack([phases[1, 0]] * 5), (1.0, 1.0))
    with pytest.raises(InputError, match="blank"):
        registration_fusion(np.stack([phases[0], np.zeros_like(phases[0])]), (1.0, 1.0))
    with pytest.raises(InputError, match="Unknown registration option"):
        halfway_warp(phases[0], phases[1], (1.0, 1.0), sigma=3)
    with pytest.raises(InputError, match="combine"):
        registration_fusion(phases, (1.0, 1.0), combine="max")
