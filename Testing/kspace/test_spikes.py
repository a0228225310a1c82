"""Tests of spike detection and correction in k-space (scanai.kspace.classical/correct/pipeline/metrics).

Acceptance numbers of issue 4, on the real scanner files of ../shared/data/kspace with simulated spikes:
point sensitivity >= 0.95 for spikes >= 0.02 x max|k| and >= 0.90 for 0.005-0.02, specificity >= 0.9995, no
detection and a bit-identical output on clean data, no change outside the flagged samples, PSNR gain >= 20 dB on
strong spikes. Spikes within the protected centre (``centre_radius`` samples of DC / the k-space peak) are not
counted in the sensitivities: the detector promises nothing there by design (patent L430, L440).
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from scanai.core.errors import Cancelled, InputError, ModelError
from scanai.core.progress import Progress
from scanai.kspace import make_phantom, read_kspace, reconstruct
from scanai.kspace.classical import Thresholds, centre_distance, detect_plane, localise
from scanai.kspace.correct import METHODS, correct
from scanai.kspace.metrics import amplitude_bin, point_metrics, psnr, sensitivity_by_bin, ssim
from scanai.kspace.patches import PatchGrid, tile_starts
from scanai.kspace.pipeline import DEFAULT_CENTRE_RADIUS, calibrate, detect, run
from scanai.kspace.simulate import inject_spikes

FILES = ("gre.dat", "2024-02-06-160052.dat", "2024-02-06-164120.dat", "meas_MID00243_FID33257_pulseq.dat",
         "se_t1_sag_data.mat")
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def real(shared_data):
    """Every real k-space file of the shared data folder, read once."""
    return {name: read_kspace(shared_data / "kspace" / name) for name in FILES}


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=128, n_coils=8, readout_oversampling=2, noise_std=0.002, seed=1).kspace


def counted(truth, shape: tuple[int, int]) -> np.ndarray:
    """Spikes outside the protected centre (farther than centre_radius from DC)."""
    distance = np.hypot(truth.ky - shape[0] // 2, truth.kx - shape[1] // 2)
    return distance > DEFAULT_CENTRE_RADIUS + 1.0


def evaluate(ks, seeds=SEEDS, amplitude_range=(0.005, 1.0)) -> tuple[list[tuple[int, int]], dict[str, float]]:
    """Pooled (detected, total) per amplitude bin and point metrics over ``seeds`` of 20 events each."""
    per_bin = np.zeros((3, 2), dtype=int)
    truth_masks, detected_masks = [], []
    for seed in seeds:
        corrupted, truth = inject_spikes(ks.data, 20, amplitude_range, seed=seed)
        detection = detect(replace(ks, data=corrupted))
        keep = counted(truth, ks.data.shape[2:])
        per_bin += np.array(sensitivity_by_bin(truth.slice[keep], truth.ky[keep], truth.kx[keep],
                                               truth.amplitude[keep], detection.mask))
        truth_masks.append(truth.mask(detection.mask.shape))
        detected_masks.append(detection.mask)
    scores = point_metrics(np.stack(truth_masks), np.stack(detected_masks))
    return [tuple(row) for row in per_bin], scores


# ------------------------------------------------------------------------------------------- patent numbers


def test_patent_tiling_and_worked_location():
    grid = PatchGrid.over((426, 1024), 32)
    assert len(grid) == 448
    starts = tile_starts(426, 32)
    assert len(starts) == 14 and starts[-1] == 394 and starts[-2] == 384
    index = int(np.flatnonzero((grid.anchors()[:, 0] == 256) & (grid.anchors()[:, 1] == 64))[0])
    local = np.array([[14, 14], [14, 15], [14, 16], [14, 18], [14, 19]])
    assert tuple(grid.absolute(index, local)[0]) == (270, 78)
    assert [tuple(p) for p in grid.absolute(index, local)] == [(270, 78), (270, 79), (270, 80), (270, 82), (270, 83)]


# ------------------------------------------------------------------------------------------- clean data


@pytest.mark.parametrize("name", FILES)
def test_clean_real_data_gives_no_detection_and_identical_output(real, name):
    ks = real[name]
    result = run(ks)
    assert result.detection.count == 0 and result.detection.table == []
    assert np.array_equal(result.corrected.data, ks.data)
    assert np.array_equal(result.corrected_image.array, result.original.array)
    assert not result.difference.array.any()


def test_clean_phantom_gives_no_detection(phantom):
    detection = detect(phantom)
    assert detection.count == 0
    assert np.array_equal(calibrate(phantom, detection), phantom.data)


# ------------------------------------------------------------------------------------------- detection targets


@pytest.mark.parametrize("name", ["gre.dat", "2024-02-06-160052.dat", "meas_MID00243_FID33257_pulseq.dat",
                                  "se_t1_sag_data.mat"])
def test_detection_on_real_kspace_meets_targets(real, name):
    per_bin, scores = evaluate(real[name])
    strong = (per_bin[1][0] + per_bin[2][0]) / (per_bin[1][1] + per_bin[2][1])
    assert strong >= 0.95, f"sensitivity for spikes >= 0.02 max|k|: {strong:.3f} ({per_bin})"
    assert scores["specificity"] >= 0.9995, scores


def test_strong_spikes_do_not_bend_the_prediction_kernel(real):
    # 32 coils on a 64 x 64 plane: 256 kernel features for 4096 samples, so 20 spike events among the training
    # rows used to make the kernel explain spikes (missed strong spikes) and invent others (specificity 0.9988).
    per_bin, scores = evaluate(real["meas_MID00243_FID33257_pulseq.dat"], seeds=range(20))
    strong = (per_bin[1][0] + per_bin[2][0]) / (per_bin[1][1] + per_bin[2][1])
    assert strong >= 0.99, per_bin
    assert scores["specificity"] >= 0.9995, scores


@pytest.mark.parametrize("name", ["meas_MID00243_FID33257_pulseq.dat"])
def test_weak_spikes_are_found_where_they_rise_above_the_noise(real, name):
    # 0.005-0.02 x max|k| is below the noise of several files (see the bench); the 32-coil file and the phantom
    # have the dynamic range to see them.
    per_bin, _ = evaluate(real[name])
    assert per_bin[0][0] / per_bin[0][1] >= 0.90, per_bin


def test_weak_spikes_on_the_phantom(phantom):
    per_bin, scores = evaluate(phantom)
    assert per_bin[0][0] / per_bin[0][1] >= 0.90, per_bin
    assert (per_bin[1][0] + per_bin[2][0]) / (per_bin[1][1] + per_bin[2][1]) >= 0.95, per_bin
    assert scores["specificity"] >= 0.9995


@pytest.mark.parametrize("name", FILES)
def test_strong_spikes_psnr_gain(real, name):
    ks = real[name]
    reference = reconstruct(ks).rss.array
    corrupted, _ = inject_spikes(ks.data, 20, (0.1, 1.0), seed=3)
    spiked = replace(ks, data=corrupted)
    result = run(spiked)
    before, after = psnr(reference, result.original.array), psnr(reference, result.corrected_image.array)
    assert after - before >= 20.0, (before, after)
    assert ssim(reference, result.corrected_image.array) > ssim(reference, result.original.array)


# ------------------------------------------------------------------------------------------- correction


@pytest.mark.parametrize("method", METHODS)
def test_only_flagged_samples_change_and_dc_never(phantom, method):
    corrupted, truth = inject_spikes(phantom.data, 15, (0.05, 1.0), seed=4)
    mask = truth.mask(corrupted.shape[1:])
    _, _, ky, kx = corrupted.shape
    mask[0, ky // 2, kx // 2] = True  # even when asked, DC is never modified
    before = corrupted.copy()
    out = correct(corrupted, mask, method)
    assert np.array_equal(corrupted, before), "the input must not change"
    changed = np.any(out != corrupted, axis=0)
    assert not np.any(changed & ~mask)
    assert np.array_equal(out[:, 0, ky // 2, kx // 2], corrupted[:, 0, ky // 2, kx // 2])
    unflagged = ~np.broadcast_to(mask, out.shape)
    assert np.array_equal(out[unflagged].view(np.uint64), corrupted[unflagged].view(np.uint64))


def test_unacquired_samples_are_never_touched_or_flagged(phantom):
    data = phantom.data.copy()
    data[:, :, :10] = 0  # partial Fourier: the first ten lines were not acquired
    corrupted, truth = inject_spikes(data, 15, (0.05, 1.0), seed=5)
    detection = detect(corrupted)
    assert not detection.mask[:, :10].any()
    mask = detection.mask.copy()
    mask[:, :10] = True
    out = correct(corrupted, mask, "grappa")
    assert not out[:, :, :10].any()
    hits = detection.mask[truth.slice, truth.ky, truth.kx]
    assert hits.mean() > 0.9


def test_grappa_beats_zero_filling_on_real_multicoil_data(real):
    ks = real["2024-02-06-160052.dat"]
    reference = reconstruct(ks).rss.array
    corrupted, truth = inject_spikes(ks.data, 20, (0.01, 1.0), seed=6)
    mask = truth.mask(corrupted.shape[1:])
    gains = {m: psnr(reference, reconstruct(replace(ks, data=correct(corrupted, mask, m))).rss.array)
             for m in ("grappa", "zero")}
    assert gains["grappa"] > gains["zero"] + 10.0, gains



def test_the_fill_is_the_least_squares_fit_of_the_residuals_it_touches(phantom, rng):
    from scanai.kspace.prediction import _touched_by, fill_by_prediction, fit_kernel, predict_at

    plane = phantom.data[:, 0]
    kernel = fit_kernel(plane, np.ones(plane.shape[1:], dtype=bool))
    flagged = np.zeros(plane.shape[1:], dtype=bool)
    flagged[40:42, 70:72] = True  # a 2 x 2 cluster
    flagged[90, 100:104] = True  # a readout run
    flagged[0, 5] = True  # on the border: the neighbours wrap around
    flagged[60:68, 20:30] = True  # 80 samples x 8 coils: too many unknowns for the dense solve, solved sparse
    touched = np.unravel_index(_touched_by(*np.nonzero(flagged), flagged.shape), flagged.shape)

    def misfit(values: np.ndarray) -> float:
        trial = plane.astype(np.complex128)
        trial[:, flagged] = values
        return float(np.sum(np.abs(trial[:, touched[0], touched[1]].T - predict_at(trial, kernel, *touched)) ** 2))

    filled = fill_by_prediction(plane, flagged, kernel)
    assert np.array_equal(filled[:, ~flagged], plane[:, ~flagged])
    best = filled[:, flagged].astype(np.complex128)
    scale = np.abs(best).mean()
    for _ in range(5):  # any change of the filled values makes the residuals worse
        step = 1e-3 * scale * (rng.normal(size=best.shape) + 1j * rng.normal(size=best.shape))
        assert misfit(best + step) > misfit(best) and misfit(best - step) > misfit(best)
    # without the neighbours' residuals every filled sample is exactly the prediction from its (filled) neighbours
    own = fill_by_prediction(plane, flagged, kernel, neighbours=False)
    predicted = predict_at(own, kernel, *np.nonzero(flagged)).T
    np.testing.assert_allclose(own[:, flagged], predicted, rtol=0, atol=1e-5 * np.abs(predicted).max())



def test_a_weak_spike_beside_a_strong_one_is_judged_jointly(phantom):
    from scanai.kspace.prediction import fill_by_prediction
    from scanai.kspace.statistic import _SliceStatistic

    plane = phantom.data[:, 0].copy()
    ky, kx = plane.shape[1:]
    strong, weak = (20, 60), (20, 61)  # a readout run: the strong sample is predicted from the weak one
    gains = np.exp(1j * np.arange(plane.shape[0]))
    peak = np.abs(plane).max()
    plane[:, strong[0], strong[1]] += 0.5 * peak * gains
    plane[:, weak[0], weak[1]] += 0.002 * peak * gains[::-1]
    acquired = np.ones((ky, kx), dtype=bool)
    statistic = _SliceStatistic(plane, PatchGrid.over((ky, kx), 32), acquired)
    flagged = np.zeros((ky, kx), dtype=bool)
    flagged[strong] = True
    statistic.replace(flagged, flagged)  # the strong spike replaced by its prediction, as the peeling does
    at = (np.array([weak[0]]), np.array([weak[1]]))
    score, log_ratio = statistic.joint(flagged, *at)
    # exactly the residual of the joint fit of both samples (the first-order form is exact for one neighbour)
    both = flagged.copy()
    both[weak] = True
    joint_value = fill_by_prediction(plane, both, statistic.predictor.kernel, neighbours=False)[:, weak[0], weak[1]]
    energy = np.abs(plane[:, weak[0], weak[1]] - joint_value) ** 2 @ statistic.inverse_scale / len(
        statistic.inverse_scale)
    expected = np.log((energy + statistic.tiny) / statistic.background[weak])
    assert log_ratio[0] == pytest.approx(expected, rel=1e-3)
    assert score[0] > statistic.z[weak] + 0.5  # the strong spike's replacement hid part of the weak one

def test_filled_clusters_do_not_spawn_false_spikes():
    # 16 coils at high SNR: adjacent flagged samples used to be filled by 8 fixed-point sweeps from zero; the
    # leftover error made their neighbours look like spikes, and blobs of 50-90 false detections grew near DC.
    # A strong spike 7 samples from DC may still take a few of its neighbours along (at most 8), never a blob.
    from scipy import ndimage

    ks = make_phantom(256, 16, readout_oversampling=1, noise_std=0.002, seed=2).kspace
    for seed in (0, 2):
        corrupted, truth = inject_spikes(ks.data, 20, (0.005, 1.0), seed=seed)
        mask = detect(corrupted).mask
        false = mask & ~truth.mask(mask.shape)
        assert false.sum() <= 15, false.sum()
        labels, count = ndimage.label(false[0], np.ones((3, 3), dtype=bool))
        assert count == 0 or np.bincount(labels.ravel())[1:].max() <= 8

# ------------------------------------------------------------------------------------------- network path


def test_network_path_localises_inside_target_patches(monkeypatch, phantom):
    corrupted, truth = inject_spikes(phantom.data, 10, (0.05, 1.0), kinds={"isolated": 1.0}, seed=8)

    class FakeNetwork:
        @staticmethod
        def classify_patches(plane, grid):
            anchors = grid.anchors()
            hit = np.zeros(len(grid))
            for y, x in zip(truth.ky, truth.kx, strict=True):
                hit[(anchors[:, 0] <= y) & (y < anchors[:, 0] + grid.size) & (anchors[:, 1] <= x)
                    & (x < anchors[:, 1] + grid.size)] = 0.99
            return hit

    monkeypatch.setitem(sys.modules, "scanai.kspace.network", FakeNetwork)
    import scanai.kspace as package

    monkeypatch.setattr(package, "network", FakeNetwork, raising=False)
    detection = detect(corrupted, detector="network")
    gt = truth.mask(detection.mask.shape)
    scores = point_metrics(gt, detection.mask)
    assert scores["sensitivity"] >= 0.9 and scores["precision"] >= 0.9, scores
    assert detection.table and all(row["score"] == pytest.approx(0.99) for row in detection.table)


def test_network_path_without_the_module_is_a_model_error(monkeypatch, phantom):
    monkeypatch.setitem(sys.modules, "scanai.kspace.network", None)
    import scanai.kspace as package

    monkeypatch.delattr(package, "network", raising=False)
    with pytest.raises(ModelError, match="classical"):
        detect(phantom, detector="network")


def test_localise_finds_nothing_outside_target_patches_and_the_centre_zone(phantom):
    corrupted, truth = inject_spikes(phantom.data, 10, (0.05, 1.0), kinds={"isolated": 1.0}, seed=9)
    plane = corrupted[:, 0]
    grid = PatchGrid.over(plane.shape[1:], 32)
    near = centre_distance(plane.shape[1:]) <= 12.0
    assert not (localise(plane, grid, np.zeros(len(grid), bool)).mask & ~near).any()
    first = grid.patch_of(int(truth.ky[0]), int(truth.kx[0]))
    found = localise(plane, grid, np.array(first)).mask
    assert found[truth.ky[0], truth.kx[0]]
    inside = np.zeros(grid.shape, bool)
    for r, c in grid.anchors()[first]:
        inside[r:r + grid.size, c:c + grid.size] = True
    assert not (found & ~inside & ~near).any()


def test_localise_judges_the_centre_zone_whatever_the_classifier_says(phantom):
    """A strong spike 5 samples from DC in a patch the classifier did not flag is still found, at the classical
    detector's own level there; nothing is flagged on the clean plane."""
    plane = phantom.data[:, 0].copy()
    grid = PatchGrid.over(plane.shape[1:], 32)
    none = np.zeros(len(grid), bool)
    assert not localise(plane, grid, none).mask.any()
    y, x = plane.shape[1] // 2 + 4, plane.shape[2] // 2 + 3
    gains = np.exp(2j * np.pi * np.arange(plane.shape[0]) / plane.shape[0])
    plane[:, y, x] += (0.3 * np.abs(plane).max() * gains).astype(plane.dtype)
    found = localise(plane, grid, none).mask
    assert found[y, x] and found.sum() == 1, np.argwhere(found)


def test_localise_judges_what_the_classifier_does_not_rule_out(phantom):
    """Outside the target patches and the centre zone, a spike is found where the classifier does not rule a spike
    out and missed where it does; on the clean plane nothing is flagged either way (the classical level's gate)."""
    corrupted, truth = inject_spikes(phantom.data, 1, (0.3, 0.3), kinds={"isolated": 1.0}, seed=3)
    plane = corrupted[:, 0]
    y, x = int(truth.ky[0]), int(truth.kx[0])
    grid = PatchGrid.over(plane.shape[1:], 32)
    none = np.zeros(len(grid), bool)
    assert centre_distance(plane.shape[1:])[y, x] > 12.0
    nothing, everything = np.zeros(grid.shape, bool), np.ones(grid.shape, bool)
    found = localise(plane, grid, none, ruled_out=nothing).mask
    assert found[y, x] and found.sum() == 1, np.argwhere(found)
    assert not localise(plane, grid, none, ruled_out=everything).mask[y, x]
    assert not localise(phantom.data[:, 0], grid, none, ruled_out=nothing).mask.any()


# ------------------------------------------------------------------------------------------- bad input, progress


@pytest.mark.parametrize("array, message", [
    (np.ones((2, 16, 16)), "real numbers"),
    (np.ones((2, 2, 2, 16, 16), dtype=np.complex64), "dimensions"),
    (np.zeros((0, 16), dtype=np.complex64), "empty"),
    (np.zeros((2, 16, 16), dtype=np.complex64), "only zeros"),
])
def test_bad_input_is_a_clear_error(array, message):
    with pytest.raises(InputError, match=message):
        detect(array)


def test_bad_settings_are_clear_errors(phantom):
    with pytest.raises(InputError, match="sensitivity"):
        detect(phantom, sensitivity=0.0)
    with pytest.raises(InputError, match="detector"):
        detect(phantom, detector="magic")
    with pytest.raises(InputError, match="correction method"):
        correct(phantom.data, np.zeros(phantom.data.shape[1:], bool), "magic")
    with pytest.raises(InputError, match="mask"):
        correct(phantom.data, np.zeros((1, 3, 3), bool))
    with pytest.raises(InputError, match="sensitivity"):
        Thresholds.from_sensitivity(1.5)


def test_progress_and_cancel(phantom):
    data = np.concatenate([phantom.data] * 3, axis=1)
    reported: list[float] = []
    run(data, progress=Progress(lambda fraction, message: reported.append(fraction)))
    assert reported[-1] == pytest.approx(1.0) and reported == sorted(reported)
    progress = Progress()
    progress.token.cancel()
    with pytest.raises(Cancelled):
        detect(data, progress=progress)


def test_detect_plane_reports_patch_scores(phantom):
    corrupted, truth = inject_spikes(phantom.data, 5, (0.2, 1.0), kinds={"isolated": 1.0}, seed=10)
    found = detect_plane(corrupted[:, 0])
    grid = PatchGrid.over(corrupted.shape[2:], 32)
    assert found.patch_scores.shape == (len(grid),) and found.target_patches.shape == (len(grid),)
    for y, x in zip(truth.ky, truth.kx, strict=True):
        assert any(found.target_patches[i] for i in grid.patch_of(int(y), int(x)))
    assert found.patch_scores[found.target_patches].min() > found.patch_scores[~found.target_patches].max()


# ------------------------------------------------------------------------------------------- metrics


def test_point_metrics_and_bins():
    truth = np.zeros((1, 10, 10), bool)
    truth[0, 1, 1] = truth[0, 2, 2] = True
    detected = np.zeros_like(truth)
    detected[0, 1, 1] = detected[0, 5, 5] = True
    scores = point_metrics(truth, detected)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (1, 1, 1, 97)
    assert scores["sensitivity"] == 0.5 and scores["precision"] == 0.5
    assert scores["specificity"] == pytest.approx(97 / 98)
    assert scores["mcc"] == pytest.approx((97 - 1) / np.sqrt(2 * 2 * 98 * 98))
    assert list(amplitude_bin(np.array([0.004, 0.005, 0.019, 0.02, 0.5, 1.0]))) == [-1, 0, 0, 1, 2, 2]


def test_psnr_and_ssim(rng):
    image = rng.random((2, 32, 32))
    assert psnr(image, image) == float("inf")
    assert ssim(image, image) == pytest.approx(1.0)
    noisy = image + 0.1 * rng.standard_normal(image.shape)
    assert 10 < psnr(image, noisy) < 30
    assert 0 < ssim(image, noisy) < 0.99
    assert psnr(image, image + 0.01) == pytest.approx(20 * np.log10(image.max() / 0.01))


def test_local_background_is_periodic_like_the_prediction(rng):
    from scipy import ndimage

    from scanai.kspace.background import _FOOTPRINTS, _ring_medians, _ring_medians_near

    energy = rng.exponential(size=(40, 50)).astype(np.float32)
    expected = np.maximum.reduce([ndimage.median_filter(energy, footprint=f, mode="wrap") for f in _FOOTPRINTS])
    assert np.array_equal(_ring_medians(energy), expected)
    changed = np.zeros(energy.shape, dtype=bool)
    changed[[0, 20, 39, 10], [1, 49, 0, 10]] = True  # at the borders too: the update must wrap like the filter
    updated = np.where(changed, np.float32(50.0), energy)
    assert np.array_equal(_ring_medians_near(_ring_medians(energy), updated, changed), _ring_medians(updated))


def test_ideal_sensitivity_of_white_noise(rng):
    from scanai.kspace.metrics import ideal_sensitivity

    # 4 coils of unit complex white noise with one bright sample: max RSS |k| = 1000, so a spike of 0.01 x max is
    # 10 sigma (always found) and one of 1e-4 x max is 0.1 sigma (found at about the false-positive rate).
    noise = (rng.normal(size=(4, 1, 64, 64)) + 1j * rng.normal(size=(4, 1, 64, 64))) / np.sqrt(2)
    noise[:, 0, 32, 32] = 500.0
    assert ideal_sensitivity(noise, (0.01, 0.02)) > 0.999
    assert ideal_sensitivity(noise, (1e-4, 1.1e-4)) < 0.002
    assert 0.05 < ideal_sensitivity(noise, (0.003, 0.006)) < 0.95


def test_oracle_detection_probability_matches_a_monte_carlo_oracle(rng):
    """The oracle's probability of finding a spike equals the rate at which the test it describes (the sum over
    coils of 2 |spike + noise|^2 / sigma^2 against the chi-square level) finds it on drawn noise; without a spike it
    is the false rate."""
    from scipy.stats import chi2

    from scanai.kspace.metrics import oracle_detection_probability

    sigma = np.array([1.0, 3.0])
    added = np.array([[0.0, 0.0], [2.0, 3.0j], [3.0 + 2.0j, 0.0], [40.0, 0.0]])
    probability = oracle_detection_probability(added, np.broadcast_to(sigma, added.shape), 1e-3)
    assert probability[0] == pytest.approx(1e-3) and probability[-1] == pytest.approx(1.0)
    draws = 200_000
    noise = sigma * (rng.normal(size=(draws, 2)) + 1j * rng.normal(size=(draws, 2))) / np.sqrt(2)
    level = chi2.isf(1e-3, 4)
    for spike, expected in zip(added[1:3], probability[1:3], strict=True):
        found = np.mean(np.sum(2 * np.abs(spike + noise) ** 2 / sigma ** 2, axis=1) > level)
        assert found == pytest.approx(expected, abs=0.005)
    assert 0.05 < probability[1] < 0.95 and 0.05 < probability[2] < 0.95
