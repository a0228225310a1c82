"""Spike detection at the acquisition's edges and on one coil (issue 24): zero-filled regions (partial echo,
partial Fourier) left out of the background and of the prediction of their neighbours; the noise model's tail
calibrated on each plane's own clean-looking samples; clusters on one coil; the spike table's patch attribution.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scanai.kspace import make_phantom, read_kspace
from scanai.kspace.background import local_background
from scanai.kspace.metrics import coil_noise_sigma, spike_snr
from scanai.kspace.patches import PatchGrid
from scanai.kspace.pipeline import calibrate, detect, flagging_patch
from scanai.kspace.prediction import Predictor, acquired_mask, missing_neighbours, predict
from scanai.kspace.simulate import inject_spikes
from scanai.kspace.statistic import TAIL_LEVEL, calibrate_tail, recalibrate

ZERO_FILLED = 40  # readout columns never acquired (asymmetric echo), of 128


@pytest.fixture(scope="module")
def partial_echo():
    """8-coil 128^2 phantom whose first ZERO_FILLED readout columns were never acquired (exact zeros)."""
    ks = make_phantom(128, 8, readout_oversampling=1, noise_std=0.002, seed=3).kspace
    data = ks.data.copy()
    data[..., :ZERO_FILLED] = 0
    return replace(ks, data=data)


def add_spike(data: np.ndarray, y: int, x: int, amplitude: float, rng: np.random.Generator) -> None:
    """Add (in place) a spike of ``amplitude`` x max RSS |k| at (y, x) of slice 0, random coil gains."""
    peak = np.sqrt(np.sum(np.abs(data[:, 0]) ** 2, axis=0)).max()
    gains = rng.normal(size=data.shape[0]) + 1j * rng.normal(size=data.shape[0])
    data[:, 0, y, x] += (amplitude * peak * gains / np.linalg.norm(gains)).astype(np.complex64)


def test_clean_partial_echo_gives_no_detection(partial_echo):
    assert detect(partial_echo).count == 0


@pytest.mark.parametrize("column", [ZERO_FILLED, ZERO_FILLED + 1, 127, 90], ids=["first", "second", "last", "middle"])
def test_spikes_in_the_first_and_last_acquired_columns_are_found_like_in_the_middle(partial_echo, column):
    """Six spikes of 0.01-0.9 x max|k| in one column: every one from 0.025 up is found, as in the middle, with at
    most one false flag. Was 0 of 60 in the first acquired column: the zero-filled samples were filled with
    copies of the spike's own energy in its background, and its prediction took the never-acquired neighbours
    for measured zeros."""
    rng = np.random.default_rng(column)
    rows = rng.choice(np.arange(8, 120), 6, replace=False)
    amplitudes = np.geomspace(0.01, 0.9, len(rows))
    data = partial_echo.data.copy()
    for y, amplitude in zip(rows, amplitudes, strict=True):
        add_spike(data, int(y), column, float(amplitude), rng)
    spiked = replace(partial_echo, data=data)
    detection = detect(spiked)
    truth = np.zeros(detection.mask.shape, dtype=bool)
    truth[0, rows, column] = True
    assert detection.mask[0, rows[amplitudes >= 0.025], column].all(), np.argwhere(detection.mask)
    assert np.count_nonzero(detection.mask & ~truth) <= 1, np.argwhere(detection.mask & ~truth)
    fixed = calibrate(spiked, detection)
    assert not np.any(fixed[..., :ZERO_FILLED])  # never-acquired samples stay zero
    outside = ~detection.mask
    assert np.array_equal(fixed[:, outside], data[:, outside])  # nothing else changes


def test_simulated_spikes_on_partial_echo(partial_echo):
    """Default mix of spike kinds: every spike of >= 5 sigma per coil outside the centre found, no false one."""
    sigma = coil_noise_sigma(partial_echo.data)
    found = total = false = 0
    for seed in range(2):
        corrupted, truth = inject_spikes(partial_echo.data, 20, (0.01, 1.0), seed=seed)
        detection = detect(replace(partial_echo, data=corrupted))
        strong = (spike_snr(partial_echo.data, truth, sigma) >= 5) & (np.hypot(truth.ky - 64, truth.kx - 64) > 12)
        found += int(detection.mask[truth.slice, truth.ky, truth.kx][strong].sum())
        total += int(strong.sum())
        false += int((detection.mask & ~truth.mask(detection.mask.shape)).sum())
    assert total > 20 and found == total and false <= 1, (found, total, false)


def test_edge_kernels_predict_beside_zero_filled_samples(partial_echo):
    """Samples beside never-acquired ones get a kernel of the neighbours they have: their residual is noise, not
    the signal the zero-filled neighbours would have carried."""
    plane = partial_echo.data[:, 0]
    acquired = acquired_mask(plane)
    codes = missing_neighbours(acquired)
    assert codes[5, ZERO_FILLED] == sum(1 << bit for bit in (0, 3, 5))  # the three left neighbours missing
    assert codes[5, 90] == 0
    predictor = Predictor.fit(plane, acquired)
    assert set(np.unique(codes[acquired])) - {0} <= set(predictor.edges)
    residual = np.abs(plane - predictor.predict(plane)) ** 2
    plain = np.abs(plane - predict(plane, predictor.kernel)) ** 2  # zero-filled neighbours taken as measured
    edge, middle = np.median(residual[:, :, ZERO_FILLED]), np.median(residual[:, :, 90])
    assert edge < 3 * middle < np.median(plain[:, :, ZERO_FILLED])


def test_background_leaves_never_acquired_samples_out(rng):
    energy = rng.exponential(size=(32, 48)).astype(np.float32)
    acquired = np.ones(energy.shape, dtype=bool)
    acquired[:, :10] = False
    energy[5, 10] = 1000.0  # a spike in the first acquired column: copies of it must not set its background
    background = local_background(energy, acquired)
    assert background[5, 10] < 10
    # the 1 x 15 readout line of (5, 12) holds 4 acquired samples to the left of it and 7 to the right
    window = np.r_[energy[5, 10:12], energy[5, 13:20]]
    line = np.sort(window)[len(window) // 2]
    assert background[5, 12] >= line


def test_hollow_level_leaves_the_block_around_the_sample_out(rng):
    """The level beyond a sample's 5 x 5 block: a cluster with its leakage along the phase-encoding lines (a bright
    7 x 3 stripe) raises the usual background at its centre, not this one; periodic across the border; NaN where
    nothing was acquired."""
    from scanai.kspace.background import hollow_level_at

    values = rng.exponential(1.0, (64, 64)).astype(np.float32)
    values[28:35, 40:43] = 1000.0
    usual = local_background(values, np.ones(values.shape, dtype=bool))
    hollow = hollow_level_at(values, np.array([31, 0]), np.array([41, 0]))
    assert usual[31, 41] >= 1000.0 and hollow[0] < 3.0 and hollow[1] < 3.0
    values[:, :] = np.nan
    assert np.isnan(hollow_level_at(values, np.array([5]), np.array([5])))[0]


def test_tail_calibration_keeps_the_model_and_tames_heavy_tails(rng):
    acquired = np.ones((256, 256), dtype=bool)
    model = -np.log10(rng.uniform(size=acquired.shape)).astype(np.float32)  # calibrated p-values
    u, b = calibrate_tail(model, acquired)
    assert abs(u - TAIL_LEVEL) < 0.15 and abs(b * np.log(10.0) - 1.0) < 0.15
    heavy = 1.5 * model  # a tail 1.5 times too heavy: 1 in 10^4 clean samples above 6 instead of 4
    tail = calibrate_tail(heavy, acquired)
    fixed = recalibrate(heavy, TAIL_LEVEL, 1.0 / np.log(10.0), tail)
    promised = np.mean(fixed > 4.0)
    assert 0.3e-4 < promised < 3e-4, promised
    assert np.array_equal(recalibrate(model, TAIL_LEVEL, 1.0 / np.log(10.0), (TAIL_LEVEL, 1.0 / np.log(10.0))),
                          model)


def test_single_coil_file_flags_no_clean_samples_once_a_spike_opens_the_gate(shared_data):
    """se_t1 (one coil): the same 9-12 clean samples (1.8-3.4 sigma) were flagged in every trial once one sure
    spike relaxed the threshold; the calibrated tail keeps them. Counted: false detections away from every spike
    (3 over the three trials); beside a spike there is one more (a weak spike 4 samples from DC whose neighbour the
    background test takes for it)."""
    from scipy.ndimage import binary_dilation

    ks = read_kspace(shared_data / "kspace" / "se_t1_sag_data.mat")
    false = beside = 0
    for seed in range(3):
        corrupted, truth = inject_spikes(ks.data, 20, (0.02, 1.0), seed=seed)
        detection = detect(replace(ks, data=corrupted))
        spikes = truth.mask(detection.mask.shape)
        wrong = detection.mask & ~spikes
        near_spike = binary_dilation(spikes, np.ones((1, 3, 3), dtype=bool))
        false += int((wrong & ~near_spike).sum())
        beside += int((wrong & near_spike).sum())
    assert false <= 3 and beside <= 1, (false, beside)


def test_a_two_sample_cluster_on_one_coil_is_found_as_the_cluster(shared_data):
    """A 2-sample readout cluster at 65 sigma in one coil: the pair is flagged, not its readout neighbours."""
    ks = read_kspace(shared_data / "kspace" / "2024-02-06-160052.dat")
    sigma = coil_noise_sigma(ks.data)[:, 0]
    data = ks.data.copy()
    for x, phase in ((30, 0.3), (31, 2.0)):
        data[5, 0, 100, x] += np.complex64(65 * sigma[5] * np.exp(1j * phase))
    mask = detect(replace(ks, data=data)).mask
    assert mask[0, 100, 30] and mask[0, 100, 31] and mask.sum() == 2, np.argwhere(mask)


def test_a_cluster_hidden_by_its_own_leakage_on_one_coil_is_found_whole(shared_data):
    """One coil of the 16-coil file, a 4-sample cluster of 16-168 sigma in a 3 x 3 block 57 samples from DC (missed
    whole before: its leakage along the phase-encoding lines filled its own background, z 2-5 against the level 9):
    every member is flagged, and nothing else."""
    ks = read_kspace(shared_data / "kspace" / "2024-02-06-160052.dat")
    single = replace(ks, data=ks.data[:1].copy(), noise_covariance=None)
    sigma = float(coil_noise_sigma(single.data)[0, 0])
    data = single.data.copy()
    members = ((117, 84, 168.3, 0.4), (118, 83, 37.4, 2.9), (119, 83, 15.8, 4.4), (119, 84, 160.3, 1.1))
    for y, x, snr, phase in members:
        data[0, 0, y, x] += np.complex64(snr * sigma * np.exp(1j * phase))
    mask = detect(replace(single, data=data)).mask[0]
    assert all(mask[y, x] for y, x, _, _ in members) and mask.sum() == 4, np.argwhere(mask)


def test_spike_table_names_the_patch_that_flagged_the_sample():
    grid = PatchGrid.over((40, 40), 32)  # patches overlap on 24..31 in both axes
    anchors = grid.anchors()
    targets = np.array([False, True, False, True])
    scores = np.array([0.99, 0.6, 0.1, 0.977])  # patch 0 scores highest but did not flag the sample
    # (28, 28) lies in all four patches: of the two that flagged it, the one with the higher score
    assert flagging_patch(anchors, grid.size, targets, scores, 28, 28) == 3
    assert flagging_patch(anchors, grid.size, np.zeros(4, bool), scores, 28, 28) == 0  # none flagged: best score
    ks = make_phantom(48, 4, readout_oversampling=1, noise_std=0.002, seed=4).kspace
    data = ks.data.copy()
    add_spike(data, 20, 40, 0.3, np.random.default_rng(0))  # in the overlap of the two patch rows
    detection = detect(replace(ks, data=data), patch_size=32)
    row = next(r for r in detection.table if (r["pe"], r["ro"]) == (20, 40))
    patches = detection.grid.patch_of(20, 40)
    assert len(patches) == 2
    best = max((p for p in patches if detection.target_patches[0, p]), key=lambda p: detection.patch_scores[0, p])
    assert row["patch"] == best


# ------------------------------------------------------------------ spikes near DC: the background test


def disk_plane(rng: np.random.Generator, sigma: float = 1.0) -> np.ndarray:
    """(1, 128, 128) k-space of a smooth disk (radius 30 px, peak 400 sigma in the image) plus white noise."""
    yy, xx = np.mgrid[:128, :128]
    image = 400.0 * sigma * np.clip(30.0 - np.hypot(yy - 60, xx - 66), 0.0, 1.0) * (1.0 + 0.3 * np.sin(yy / 9.0))
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image), norm="ortho"))
    noise = sigma * (rng.normal(size=kspace.shape) + 1j * rng.normal(size=kspace.shape)) / np.sqrt(2.0)
    return (kspace + noise).astype(np.complex64)[np.newaxis]


def test_background_test_finds_spikes_beside_each_other_and_not_their_spread():
    """One coil, a disk: spikes of 12 and 60 sigma two samples apart, 5-7 samples from DC, where a 3 x 3
    prediction leaves far more than the noise. Both are flagged, and nothing else (their spread over the
    background mask's spectrum is removed jointly, not taken for more spikes); no flag without them. The noise
    power is given (as from a noise scan): the disk's sharp edge leaves signal in the outer k-space."""
    from scanai.kspace.centre import near_centre_spikes
    from scanai.kspace.classical import centre_distance

    rng = np.random.default_rng(4)
    plane = disk_plane(rng)
    distance = centre_distance(plane.shape[1:])
    region, allowed = distance <= 12, (distance <= 12) & (distance > 1.5)
    known = np.ones(1)
    clean = near_centre_spikes(plane, region, allowed, level=6.0, noise_power=known).flags
    assert not clean.any(), np.argwhere(clean)
    spiked = plane.copy()
    spiked[0, 64 + 5, 64 + 2] += np.complex64(12.0 * np.exp(0.4j))
    spiked[0, 64 + 5, 64 + 4] += np.complex64(60.0 * np.exp(2.1j))
    copy = spiked.copy()
    flags, score, _ = near_centre_spikes(spiked, region, allowed, level=6.0, noise_power=known)
    assert np.argwhere(flags).tolist() == [[69, 66], [69, 68]], np.argwhere(flags)
    assert np.all(score[flags] > 6.0) and np.all(score[~flags] == 0)
    assert np.array_equal(copy, spiked)  # the input is not modified


@pytest.mark.parametrize(("name", "lowest"), [("gre.dat", 8.0), ("2024-02-06-164120.dat", 8.0),
                                              ("se_t1_sag_data.mat", 20.0)])
def test_spikes_near_dc_on_few_coil_files_are_found(shared_data, name, lowest):
    """Issue 24: spikes of 8-125 sigma per coil 4-11 samples from DC were missed on the 1-2-coil files (the 3 x 3
    prediction leaves 4-540x the plane's median residual there); now each is found, nothing else is flagged, and
    every sample outside the flagged set is left bit-identical by the correction. se_t1's background is 16 % of
    its field of view, so the test's signal-to-noise is ``0.4 x`` the spike's: from 20 sigma there."""
    ks = read_kspace(shared_data / "kspace" / name)
    sigma = coil_noise_sigma(ks.data, ks.noise_covariance)
    ky, kx = ks.data.shape[2:]
    rng = np.random.default_rng(7)
    found = total = false = 0
    for _ in range(3):
        data = ks.data.copy()
        truth = np.zeros(ks.data.shape[1:], dtype=bool)
        for _ in range(2):
            while True:
                dy, dx = rng.integers(-11, 12, size=2)
                if 4 <= np.hypot(dy, dx) <= 11 and not truth[0, ky // 2 + dy, kx // 2 + dx]:
                    break
            snr = np.exp(rng.uniform(np.log(lowest), np.log(125.0)))
            phases = np.exp(2j * np.pi * rng.random(ks.n_coils))
            data[:, 0, ky // 2 + dy, kx // 2 + dx] += (snr * sigma[:, 0] * phases).astype(np.complex64)
            truth[0, ky // 2 + dy, kx // 2 + dx] = True
        spiked = replace(ks, data=data)
        mask = detect(spiked).mask
        found += int((mask & truth).sum())
        total += int(truth.sum())
        false += int((mask & ~truth).sum())
        corrected = calibrate(spiked, detect(spiked))
        assert np.array_equal(corrected[:, ~mask], data[:, ~mask])
    assert found == total and false == 0, (found, total, false)


def test_background_test_is_silent_on_every_clean_file(shared_data):
    """Forced on every clean shared file (no gate), with the detector's zones and default levels: no flag near DC,
    the core about DC included (7.2 at most there, on se_t1, against its level of 30)."""
    from scanai.kspace.centre import near_centre_spikes
    from scanai.kspace.classical import _zones
    from scanai.kspace.peeling import Thresholds

    thresholds = Thresholds.from_sensitivity(0.5)
    for name in ("gre.dat", "2024-02-06-160052.dat", "2024-02-06-164120.dat", "meas_MID00243_FID33257_pulseq.dat",
                 "se_t1_sag_data.mat"):
        plane = read_kspace(shared_data / "kspace" / name).data[:, 0]
        core, _, _, near = _zones(plane, 4.0, 12.0)
        flags = near_centre_spikes(plane, near, near & ~core, thresholds.near_dc,
                                   towering=thresholds.near_dc_core).flags
        assert not flags.any(), (name, np.argwhere(flags))


@pytest.mark.parametrize(("name", "amplitude"), [("gre.dat", 0.1), ("2024-02-06-164120.dat", 0.3),
                                                 ("2024-02-06-160052.dat", 0.1),
                                                 ("meas_MID00243_FID33257_pulseq.dat", 0.1)])
def test_strong_spikes_in_the_core_about_dc_are_found_and_corrected(shared_data, name, amplitude):
    """Issue 24: the 1.5-sample core about DC and the k-space peak was never flagged, so one spike of 0.3 x max|k|
    beside DC left gre.dat's image at 32 dB. A spike on each sample of the core but DC itself (0.1 x max|k|; 0.3 on
    the lower-SNR head) is now found by the background test, alone (a clean core scores at most 7.2 there, against
    the core's level of 30) -- on the 16- and 32-coil files too, where the prediction finds the core suspect -- and
    corrected by subtracting its measured value: the image goes from 38-60 dB to above 60 dB (62-88 measured; the
    neighbours' re-estimate gave 48-73 on the 32-coil file), and every other sample stays bit-identical. Nothing
    else is flagged: the plane is judged again without the spike, whose leakage into its neighbours' predictions
    made two samples 2-3 from it stand out on the 32-coil 64^2 file."""
    from scanai.kspace.classical import _zones
    from scanai.kspace.metrics import psnr
    from scanai.kspace.recon import reconstruct

    ks = read_kspace(shared_data / "kspace" / name)
    reference = reconstruct(ks).rss.array
    core = _zones(ks.data[:, 0], 4.0, 12.0)[0]
    core[ks.data.shape[2] // 2, ks.data.shape[3] // 2] = False
    rng = np.random.default_rng(3)
    others = 0
    for y, x in np.argwhere(core):
        data = ks.data.copy()
        add_spike(data, y, x, amplitude, rng)
        spiked = replace(ks, data=data)
        detection = detect(spiked)
        assert detection.mask[0, y, x], (y, x, np.argwhere(detection.mask))
        others += int(detection.mask.sum()) - 1
        fixed = calibrate(spiked, detection)
        assert np.array_equal(fixed[:, ~detection.mask], data[:, ~detection.mask])
        before = psnr(reference, reconstruct(spiked).rss.array)
        after = psnr(reference, reconstruct(replace(ks, data=fixed)).rss.array)
        assert after > max(before + 15.0, 60.0), (y, x, before, after)
    assert others == 0, others


def test_run_file_reads_with_axes_and_noise(tmp_path):
    """The Slicer module's job (pipeline.run_file) passes ``axes`` and ``noise`` to read_kspace: a (ky, kx, coil)
    .npy with a separate noise scan reads, and the noise scan's per-coil sigma reaches the data."""
    from scanai.kspace.pipeline import run_file

    ks = make_phantom(64, 4, readout_oversampling=1, noise_std=0.01, seed=5).kspace
    path = tmp_path / "ky_kx_coil.npy"
    np.save(path, np.moveaxis(ks.data[:, 0], 0, -1))
    rng = np.random.default_rng(0)
    noise = (0.01 * (rng.normal(size=(4, 4000)) + 1j * rng.normal(size=(4, 4000))) / np.sqrt(2)).astype(np.complex64)
    result = run_file(path, axes="ky,kx,coil", noise=noise, detect_only=True)
    assert result.corrected.data.shape == ks.data.shape
    assert np.array_equal(result.corrected.data, ks.data)
    assert np.allclose(result.corrected.noise_sigma, 0.01, rtol=0.1)


def test_weak_member_of_a_strong_readout_run_far_from_dc_is_found(shared_data):
    """A strong readout run far from DC (gre.dat, 2 coils: 0.12, 0.11, 0.08, 0.96 x max|k| at ky 107, kx 89-92):
    the first pass flags a cascade of false samples around the 0.96 member, whose leakage inflated the weak
    member's local background 200x; judged against that stale level, the 0.08 member looked explained by its
    neighbours and was unflagged (gains of seed 2; missed before the background was measured again). Every member
    is found, nothing else, and the correction leaves every other sample bit-identical."""
    ks = read_kspace(shared_data / "kspace" / "gre.dat")
    run = np.zeros(ks.data.shape[1:], dtype=bool)
    run[0, 107, 89:93] = True
    for seed in range(4):
        rng = np.random.default_rng(seed)
        data = ks.data.copy()
        for x, amplitude in zip(range(89, 93), (0.12, 0.11, 0.08, 0.96), strict=True):
            add_spike(data, 107, x, amplitude, rng)
        spiked = replace(ks, data=data)
        detection = detect(spiked)
        np.testing.assert_array_equal(detection.mask, run, err_msg=f"seed {seed}")
        fixed = calibrate(spiked, detection)
        np.testing.assert_array_equal(fixed[:, ~run], data[:, ~run])


def test_strong_spikes_two_samples_from_dc_are_found_on_a_multicoil_partial_echo():
    """16-coil 256^2 partial echo (84 columns zero): a spike of 0.1 x max|k| at each of six places 2-3 samples from
    DC (the ring, where a sample must stand 40x above its local residual level) is found, and nothing else. With
    the former 100x only 2 of the 6 were (each left the image at ~45 dB); clean files reach 3-11x there."""
    ks = make_phantom(256, 16, readout_oversampling=1, noise_std=0.002, seed=2).kspace
    clean = ks.data.copy()
    clean[..., :84] = 0
    rng = np.random.default_rng(1)
    found = 0
    for dy, dx in ((-1, 2), (2, 1), (-2, -1), (1, -2), (2, 2), (-2, 2)):
        data = clean.copy()
        add_spike(data, 128 + dy, 128 + dx, 0.1, rng)
        mask = detect(replace(ks, data=data)).mask[0]
        found += int(mask[128 + dy, 128 + dx])
        assert mask.sum() == mask[128 + dy, 128 + dx], np.argwhere(mask)
    assert found == 6


def test_strong_spikes_near_dc_leave_no_residue_in_the_background_test(shared_data):
    """gre.dat (2 coils): three spikes of 200-320 sigma per coil 3-7 samples from DC, which the prediction's peeling
    finds. The background test judged them again with everything else, and where one was not taken first its
    spread's residue beside it was flagged (8 false detections on the spike draw this layout comes from, seed 15).
    They now enter the test as known spikes, removed before anything is judged: exactly the three are flagged."""
    ks = read_kspace(shared_data / "kspace" / "gre.dat")
    sigma = coil_noise_sigma(ks.data, ks.noise_covariance)[:, 0]
    places = ((76, 163, 208.0), (79, 153, 324.0), (77, 158, 216.0))
    truth = np.zeros(ks.data.shape[1:], dtype=bool)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        data = ks.data.copy()
        for y, x, snr in places:
            data[:, 0, y, x] += (snr * sigma * np.exp(2j * np.pi * rng.random(ks.n_coils))).astype(np.complex64)
            truth[0, y, x] = True
        np.testing.assert_array_equal(detect(replace(ks, data=data)).mask, truth, err_msg=f"seed {seed}")
