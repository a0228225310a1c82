"""Benchmark of spike detection and correction (``make bench``; every test is marked slow).

On every real k-space file of ../shared/data/kspace and on the generated phantom: many seeds of simulated spikes,
point-level sensitivity per amplitude bin, specificity and MCC, and PSNR/SSIM of the RSS image against the
clean one before and after correction per amplitude bin, for the classical and the network detector side by
side; the classical detector at three sensitivity settings; and the speed of one 16-coil 256 x 256 slice. Issue 24:
the targets in per-coil SNR bins on the shared files plus simulated partial-echo, single-coil and 3-D cases for the
classical, network and combined detectors (``test_bench_snr_targets``; again on unseen spike seeds 20-39,
``test_bench_snr_targets_unseen_seeds``, since the combined detector's veto probability was chosen on seeds 0-19),
and spikes in the first/last acquired columns of a partial echo (``test_bench_partial_echo_edges``). Tables are
printed and written to ``bench_output/``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scanai.core.errors import ModelError
from scanai.kspace import make_phantom, read_kspace, reconstruct
from scanai.kspace.correct import correct
from scanai.kspace.metrics import (
    AMPLITUDE_BINS,
    coil_noise_sigma,
    ideal_sensitivity,
    matthews,
    oracle_detection_probability,
    point_metrics,
    psnr,
    sensitivity_by_bin,
    spike_snr,
    spike_values,
    ssim,
)
from scanai.kspace.peeling import Thresholds
from scanai.kspace.pipeline import DEFAULT_CENTRE_RADIUS, DEFAULT_SENSITIVITY, calibrate, detect
from scanai.kspace.simulate import accelerate, inject_spikes

pytestmark = pytest.mark.slow

OUT = Path(__file__).resolve().parents[2] / "bench_output"
FILES = ("gre.dat", "2024-02-06-160052.dat", "2024-02-06-164120.dat", "meas_MID00243_FID33257_pulseq.dat",
         "se_t1_sag_data.mat")
DETECTION_SEEDS = range(20)
IMAGE_SEEDS = range(5)
OPERATING_POINTS = (DEFAULT_SENSITIVITY, 0.6, 0.7)


def network_status() -> str | None:
    """None when the network detector runs here, else the reason it cannot."""
    try:
        detect(make_phantom(64, 4).kspace, detector="network")
    except ModelError as error:
        return str(error)
    return None


def cases(shared_data: Path) -> list[tuple[str, object]]:
    found = [(name, read_kspace(shared_data / "kspace" / name)) for name in FILES]
    # the second phantom is the speed case: 16 coils at high SNR, where runs and clusters are hardest to refill
    return found + [("phantom 8 coils 128", make_phantom(128, 8, noise_std=0.002, seed=1).kspace),
                    ("phantom 16 coils 256", make_phantom(256, 16, readout_oversampling=1, noise_std=0.002,
                                                          seed=2).kspace)]


def outside_centre(truth, shape: tuple[int, int]) -> np.ndarray:
    return np.hypot(truth.ky - shape[0] // 2, truth.kx - shape[1] // 2) > DEFAULT_CENTRE_RADIUS + 1.0


def detection_row(ks, detector: str, sensitivity: float = DEFAULT_SENSITIVITY) -> dict[str, float]:
    """Point metrics over DETECTION_SEEDS x 20 events (0.005-1 x max|k|, default mix of kinds)."""
    hits = np.zeros((len(AMPLITUDE_BINS), 2), dtype=int)
    central = np.zeros(2, dtype=int)
    truths, found = [], []
    for seed in DETECTION_SEEDS:
        corrupted, truth = inject_spikes(ks.data, 20, (0.005, 1.0), seed=seed)
        detection = detect(replace(ks, data=corrupted), detector=detector, sensitivity=sensitivity)
        keep = outside_centre(truth, ks.data.shape[2:])
        hits += np.array(sensitivity_by_bin(truth.slice[keep], truth.ky[keep], truth.kx[keep], truth.amplitude[keep],
                                            detection.mask))
        central += (int(detection.mask[truth.slice[~keep], truth.ky[~keep], truth.kx[~keep]].sum()),
                    int((~keep).sum()))
        truths.append(truth.mask(detection.mask.shape))
        found.append(detection.mask)
    scores = point_metrics(np.stack(truths), np.stack(found))
    row = {f"sens {lo:g}-{hi:g}": h / max(n, 1) for (lo, hi), (h, n) in zip(AMPLITUDE_BINS, hits, strict=True)}
    row.update({f"n {lo:g}-{hi:g}": int(n) for (lo, hi), (_, n) in zip(AMPLITUDE_BINS, hits, strict=True)})
    strong = hits[1:].sum(axis=0)
    row.update({"sens >=0.02": strong[0] / max(strong[1], 1), "specificity": scores["specificity"],
                "precision": scores["precision"], "mcc": scores["mcc"],
                "centre hits": f"{central[0]}/{central[1]}"})
    return row


def image_row(ks, detector: str) -> dict[str, float]:
    """Mean PSNR / SSIM before and after correction per amplitude bin (IMAGE_SEEDS x 20 events in the bin)."""
    reference = reconstruct(ks).rss.array
    row: dict[str, float] = {}
    for low, high in AMPLITUDE_BINS:
        values = []
        for seed in IMAGE_SEEDS:
            corrupted, _ = inject_spikes(ks.data, 20, (low, high), seed=100 + seed)
            spiked = replace(ks, data=corrupted)
            detection = detect(spiked, detector=detector)
            fixed = replace(ks, data=calibrate(spiked, detection))
            before, after = reconstruct(spiked).rss.array, reconstruct(fixed).rss.array
            values.append((psnr(reference, before), psnr(reference, after), ssim(reference, before),
                           ssim(reference, after)))
        mean = np.mean(values, axis=0)
        for name, value in zip(("PSNR before", "PSNR after", "SSIM before", "SSIM after"), mean, strict=True):
            row[f"{name} {low:g}-{high:g}"] = float(value)
    return row


def write_table(rows: list[dict], stem: str) -> str:
    OUT.mkdir(exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (OUT / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def text(value) -> str:  # noqa: ANN001
        if isinstance(value, float):
            return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.0e}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(text(row.get(c, "")) for c in columns) + " |" for row in rows]
    markdown = "\n".join(lines)
    (OUT / f"{stem}.md").write_text(markdown + "\n")
    return markdown


def test_bench_detection_and_correction(shared_data):
    reason = network_status()
    detectors = ["classical"] + ([] if reason else ["network"])
    detection_rows, image_rows = [], []
    for name, ks in cases(shared_data):
        # an upper bound: what a detector that knew the clean signal would find at the target specificity (white
        # noise at the level the cross-coil prediction leaves); a real detector must also predict the signal
        ideal = {f"ideal {lo:g}-{hi:g}": ideal_sensitivity(ks.data, (lo, hi)) for lo, hi in AMPLITUDE_BINS}
        for detector in detectors:
            started = time.perf_counter()
            detection_rows.append({"data": name, "detector": detector, **detection_row(ks, detector), **ideal})
            image_rows.append({"data": name, "detector": detector, **image_row(ks, detector)})
            detection_rows[-1]["seconds"] = time.perf_counter() - started
    print("\n" + write_table(detection_rows, "kspace_detection"))
    print("\n" + write_table(image_rows, "kspace_images"))
    if reason:
        print(f"\nnetwork detector skipped: {reason}")
        (OUT / "kspace_network_skipped.txt").write_text(reason + "\n")
    else:
        (OUT / "kspace_network_skipped.txt").unlink(missing_ok=True)
    for row in detection_rows:
        assert row["specificity"] >= 0.9995, row
    for row in image_rows:
        assert row["PSNR after 0.1-1"] - row["PSNR before 0.1-1"] >= 20.0, row


def test_bench_operating_points(shared_data):
    """The classical detector at three settings of ``sensitivity``: what each costs in specificity and precision,
    and whether the clean files stay untouched."""
    rows = []
    for name, ks in cases(shared_data):
        for sensitivity in OPERATING_POINTS:
            row = detection_row(ks, "classical", sensitivity)
            rows.append({"data": name, "sensitivity": sensitivity,
                         **{key: row[key] for key in ("sens 0.005-0.02", "sens 0.02-0.1", "sens 0.1-1", "specificity",
                                                      "precision")},
                         "clean detections": int(detect(ks, sensitivity=sensitivity).count)})
    print("\n" + write_table(rows, "kspace_operating_points"))
    for name in dict.fromkeys(row["data"] for row in rows):
        mine = [row for row in rows if row["data"] == name]
        weakest = [row["sens 0.005-0.02"] for row in mine]
        assert weakest == sorted(weakest), mine  # a higher setting never finds fewer spikes
        assert mine[0]["clean detections"] == 0, mine


def test_bench_speed_16_coil_256_slice():
    case = make_phantom(256, 16, readout_oversampling=1, noise_std=0.002, seed=2)
    corrupted, truth = inject_spikes(case.kspace.data, 20, (0.005, 1.0), seed=0)

    def ours(detector: str = "classical") -> np.ndarray:
        detection = detect(corrupted, detector=detector)
        return calibrate(corrupted, detection)

    def timed(detector: str = "classical") -> list[float]:
        ours(detector)
        times = []
        for _ in range(7):
            started = time.perf_counter()
            ours(detector)
            times.append(time.perf_counter() - started)
        return times

    times = timed()
    median = float(np.median(times))
    combined = "" if network_status() else f"; combined detector median {np.median(timed('combined')):.3f} s"

    def naive() -> np.ndarray:  # robust z against a 5x5 median by scipy.generic_filter, then zero-fill
        from scipy.ndimage import generic_filter

        magnitude = np.log(np.sqrt(np.sum(np.abs(corrupted[:, 0]) ** 2, axis=0)) + 1e-12)
        local = generic_filter(magnitude, np.median, size=5)
        excess = magnitude - local
        z = (excess - np.median(excess)) / (1.4826 * np.median(np.abs(excess - np.median(excess))))
        return correct(corrupted, (z > 6)[np.newaxis], "zero")

    started = time.perf_counter()
    naive()
    baseline = time.perf_counter() - started
    line = (f"16-coil 256x256 slice, detect + correct: median {median:.3f} s over 7 runs "
            f"(min {min(times):.3f}, max {max(times):.3f}); naive generic_filter baseline {baseline:.3f} s "
            f"({baseline / median:.1f}x slower){combined}")
    print("\n" + line)
    OUT.mkdir(exist_ok=True)
    (OUT / "kspace_speed.txt").write_text(line + "\n")
    assert median < 0.2, line


# ------------------------------------------------------------------- issue 24: targets in per-coil SNR bins

SNR_SEEDS = range(20)
PARTIAL_ECHO_COLUMNS = 84
#: Noise of the simulated cases (standard deviation of the real and imaginary parts of every sample).
PHANTOM_NOISE_STD = 0.002


def phantom_noise(coils: int) -> np.ndarray:
    """(coils, coils) noise covariance of the simulated cases, ``E|n|^2 = 2 std^2`` per coil, as a noise scan would
    give it: their sigma for the per-coil SNR bins. The Shepp-Logan phantoms' outer k-space still holds signal (the
    partial echo's gives 0.024 where the noise is 0.0028), so without it their spikes were 5-12x weaker than the
    bins said."""
    return np.eye(coils) * 2.0 * PHANTOM_NOISE_STD ** 2


def partial_echo_case():
    """16-coil 256^2 phantom acquired with an asymmetric echo: the first 84 readout columns never acquired."""
    ks = make_phantom(256, 16, readout_oversampling=1, noise_std=PHANTOM_NOISE_STD, seed=2).kspace
    data = ks.data.copy()
    data[..., :PARTIAL_ECHO_COLUMNS] = 0
    return replace(ks, data=data, noise_covariance=phantom_noise(16), source="partial echo")


def real_partial_echo_case(full):
    """A scanner file ``full`` as an asymmetric echo: the first 84/256 of its readout columns never acquired."""
    data = full.data.copy()
    data[..., :round(data.shape[-1] * PARTIAL_ECHO_COLUMNS / 256)] = 0
    return replace(full, data=data, source=f"{full.source}, partial echo")


def three_d_case():
    """8-coil 3-D acquisition (8 partitions, kz on the slice axis): a 128^2 phantom slab, noise 0.002."""
    ks = make_phantom(128, 8, readout_oversampling=1, noise_std=0.0, seed=3).kspace
    kz = np.arange(8) - 4
    profile = np.sinc(kz * 0.6).astype(np.complex64)  # the Fourier transform of a slab over 60 % of the FOV
    data = ks.data[:, 0][:, None] * profile[None, :, None, None] * np.sqrt(8.0)
    rng = np.random.default_rng(3)
    data = data + PHANTOM_NOISE_STD * (rng.normal(size=data.shape) + 1j * rng.normal(size=data.shape))
    return replace(ks, data=data.astype(np.complex64), slices_are_kz=True, noise_covariance=phantom_noise(8),
                   source="3-D phantom")


def snr_cases(shared_data: Path) -> list[tuple[str, object]]:
    """The shared files, then the simulated partial-echo (a phantom and the 16-coil Pulseq file), single-coil (coil 1
    of the 16-coil Pulseq file) and 3-D cases."""
    found = [(name, read_kspace(shared_data / "kspace" / name)) for name in FILES]
    pulseq = dict(found)["2024-02-06-160052.dat"]
    return found + [("partial echo 16 coils 256 (84 columns zero)", partial_echo_case()),
                    ("partial echo of the 16-coil file (42 of 128 columns zero)", real_partial_echo_case(pulseq)),
                    ("single coil (coil 1 of the 16-coil file)", replace(pulseq, data=pulseq.data[:1].copy())),
                    ("3-D 8 coils 8 x 128^2", three_d_case())]


def snr_draws(ks, offset: int = 0, events: int = 20, seeds: range = SNR_SEEDS):
    """The spike draws of the per-coil SNR harness: for each seed of ``seeds`` (+ ``offset``), ``events`` spike
    events per slice, even seeds log-uniform from 2 to 20 sigma per coil (weak), odd seeds from 2 sigma to
    1 x max|k|. Yields (seed, corrupted array, SpikeSet, (n,) per-coil SNR of each spike sample); sigma is
    :func:`coil_noise_sigma` (noise scans when the file has them, else the outer k-space)."""
    data = ks.data
    sigma = coil_noise_sigma(data, ks.noise_covariance)
    peak = np.sqrt((np.abs(data) ** 2).sum(axis=0)).reshape(data.shape[1], -1).max(axis=1).min()
    low = 2.0 * float(np.median(sigma)) * np.sqrt(data.shape[0]) / peak
    for seed in seeds:
        high = min(1.0, 10.0 * low) if seed % 2 == 0 else 1.0
        corrupted, truth = inject_spikes(data, events, (low, high), seed=seed + offset)
        yield seed, corrupted, truth, spike_snr(data, truth, sigma)


def snr_bins(snr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean selections of spike samples below 3, 3-5 and at least 5 sigma per coil."""
    return snr < 3, (snr >= 3) & (snr < 5), snr >= 5


def snr_row(ks, detector: str, offset: int = 0, events: int = 20, seeds: range = SNR_SEEDS) -> dict[str, float]:
    """Per-coil SNR bins over the draws of :func:`snr_draws`: sensitivity >= 5 sigma and 3-5 sigma (pooled),
    specificity, precision, MCC, PSNR after correction (odd seeds below 10, strong mix) against the clean image."""
    data = ks.data
    reference = reconstruct(ks).rss.array
    hits = np.zeros((3, 2), dtype=int)  # < 3, 3-5, >= 5 sigma
    central = np.zeros(2, dtype=int)  # >= 5 sigma within 12 samples of DC (the 1.5-sample core left out)
    outside_core = np.zeros(2, dtype=int)  # >= 5 sigma beyond the 1.5-sample core (where the prediction judges too)
    truths, found, acquired, psnrs = [], [], [], []
    for seed, corrupted, truth, snr in snr_draws(ks, offset, events, seeds):
        spiked = replace(ks, data=corrupted)
        detection = detect(spiked, detector=detector)
        hit = detection.mask[truth.slice, truth.ky, truth.kx]
        for index, chosen in enumerate(snr_bins(snr)):
            hits[index] += (int(hit[chosen].sum()), int(chosen.sum()))
        distance = np.hypot(truth.ky - data.shape[2] // 2, truth.kx - data.shape[3] // 2)
        near = (snr >= 5) & (distance > 1.5) & (distance <= 12)
        central += (int(hit[near].sum()), int(near.sum()))
        flaggable = (snr >= 5) & (distance > 1.5)
        outside_core += (int(hit[flaggable].sum()), int(flaggable.sum()))
        truths.append(truth.mask(detection.mask.shape))
        found.append(detection.mask)
        acquired.append(np.any(data != 0, axis=0))
        if seed % 2 == 1 and seed < 10:
            fixed = replace(ks, data=calibrate(spiked, detection))
            psnrs.append(psnr(reference, reconstruct(fixed).rss.array))
    scores = point_metrics(np.stack(truths), np.stack(found), np.stack(acquired))
    rate = [h / max(n, 1) for h, n in hits]
    return {"sens <3 sigma": rate[0], "sens 3-5 sigma": rate[1], "sens >=5 sigma": rate[2],
            "n 3-5": int(hits[1, 1]), "n >=5": int(hits[2, 1]),
            "sens >=5 sigma near DC": central[0] / max(central[1], 1), "n near DC": int(central[1]),
            "sens >=5 sigma outside the DC core": outside_core[0] / max(outside_core[1], 1),
            "n >=5 in the DC core": int(hits[2, 1] - outside_core[1]),
            "specificity": scores["specificity"],
            "precision": scores["precision"], "mcc": scores["mcc"], "fp": int(scores["fp"]),
            "PSNR after (min)": float(np.min(psnrs)), "clean detections": detect(ks, detector=detector).count}


def oracle_row(ks, false_rate: float, offset: int = 0, events: int = 20, seeds: range = SNR_SEEDS
               ) -> dict[str, float]:
    """What an oracle reaches on the same draws as :func:`snr_row`: it knows the noise-free signal and each
    coil's sigma and tests every sample at ``false_rate`` false detections per clean acquired sample
    (:func:`~scanai.kspace.metrics.oracle_detection_probability`); it corrects perfectly (a found spike is
    removed exactly, a missed one stays). Sensitivities, false detections, precision and MCC are expectations;
    the PSNR after correction (odd seeds below 10) is one draw of which spikes are found (seeded)."""
    data = ks.data
    sigma = coil_noise_sigma(data, ks.noise_covariance)
    reference = reconstruct(ks).rss.array
    acquired = int(np.count_nonzero(np.any(data != 0, axis=0)))
    rng = np.random.default_rng(0)
    found = np.zeros((3, 2))  # expected hits and counts per bin
    psnrs = []
    for seed, corrupted, truth, snr in snr_draws(ks, offset, events, seeds):
        added = spike_values(data, truth)
        probability = oracle_detection_probability(added, sigma[:, truth.slice].T, false_rate)
        for index, chosen in enumerate(snr_bins(snr)):
            found[index] += (probability[chosen].sum(), chosen.sum())
        if seed % 2 == 1 and seed < 10:
            fixed = corrupted.copy()
            removed = rng.random(len(truth)) < probability
            np.subtract.at(fixed, (slice(None), truth.slice[removed], truth.ky[removed], truth.kx[removed]),
                           added[removed].T.astype(fixed.dtype))
            psnrs.append(psnr(reference, reconstruct(replace(ks, data=fixed)).rss.array))
    tp = found[:, 0].sum()
    positives = found[:, 1].sum()
    fn = positives - tp
    fp = false_rate * (acquired * len(seeds) - positives)
    tn = acquired * len(seeds) - positives - fp
    rate = found[:, 0] / np.maximum(found[:, 1], 1)
    return {"false rate": false_rate, "sens <3 sigma": float(rate[0]), "sens 3-5 sigma": float(rate[1]),
            "sens >=5 sigma": float(rate[2]), "fp": float(fp), "clean detections": false_rate * acquired,
            "precision": float(tp / (tp + fp)), "mcc": matthews(tp, fp, fn, tn),
            "PSNR after (min)": float(np.min(psnrs))}


def snr_table(shared_data: Path, stem: str, offset: int = 0, events: int = 20, seeds: range = SNR_SEEDS
              ) -> list[dict]:
    """:func:`snr_row` of every case and detector (the network ones where torch and the model are here), written
    to bench_output/<stem>.{csv,md,json}; asserted: no detection on clean data, specificity >= 0.9999."""
    reason = network_status()
    rows = []
    for name, ks in snr_cases(shared_data):
        for detector in ["classical"] + ([] if reason else ["network", "combined"]):
            started = time.perf_counter()
            rows.append({"data": name, "detector": detector, **snr_row(ks, detector, offset, events, seeds),
                         "seconds": time.perf_counter() - started})
    print("\n" + write_table(rows, stem))
    (OUT / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    for row in rows:
        assert row["clean detections"] == 0, row
        assert row["specificity"] >= 0.9999, row
    return rows


def assert_combined_holds(rows: list[dict], network_mcc: bool = True) -> None:
    """The combined detector against the other two on every case: 3-5 sigma sensitivity at least both's, MCC
    within 0.005 of the classical one's (measured: equal on 6-7 of 8 cases, higher on se_t1, 0.002 lower on gre.dat
    on seeds 20-39 -- two sub-3-sigma spikes vetoed) and, with ``network_mcc``, at least the network's."""
    for name in dict.fromkeys(row["data"] for row in rows):
        by = {row["detector"]: row for row in rows if row["data"] == name}
        if "combined" not in by:
            continue
        combined, classical, network = by["combined"], by["classical"], by["network"]
        assert combined["sens 3-5 sigma"] >= max(classical["sens 3-5 sigma"], network["sens 3-5 sigma"]), by
        assert combined["mcc"] >= classical["mcc"] - 0.005, by
        assert combined["mcc"] >= network["mcc"] or not network_mcc, by


def test_bench_snr_targets(shared_data):
    """Issue 24's targets per file and detector: sensitivity >= 0.99 at >= 5 sigma per coil, >= 0.85 pooled at
    3-5 sigma, specificity >= 0.9999, precision and MCC >= 0.95, PSNR after correction >= 55 dB. Printed and
    written to bench_output/kspace_snr_targets.{csv,md,json}; asserted: what holds today on every case (no
    detection on clean data, specificity >= 0.9999; the combined detector against the other two)."""
    assert_combined_holds(snr_table(shared_data, "kspace_snr_targets"))


def test_bench_snr_targets_unseen_seeds(shared_data):
    """The same on spike seeds 20-39, which the combined detector's veto probability was not chosen on
    (bench_output/kspace_snr_targets_unseen_seeds.*)."""
    assert_combined_holds(snr_table(shared_data, "kspace_snr_targets_unseen_seeds", offset=20))


def test_bench_snr_sparse_spikes(shared_data):
    """Two spike events per slice (40 seeds, the same mixes): a slice with few spikes, where the combined
    detector's agreement gate matters (bench_output/kspace_snr_sparse.*). Measured: the combined detector at least
    the classical one everywhere, above it on gre, se_t1 and one coil; the network has fewer false detections on the
    partial-echo phantom (37 of the classical 41 are one clean sample 12.2 samples from DC, just outside the centre
    zone, scoring 6.4 on the clean phantom: passed once a sure spike relaxes the level)."""
    assert_combined_holds(snr_table(shared_data, "kspace_snr_sparse", events=2, seeds=range(40)), network_mcc=False)


def test_bench_snr_oracle(shared_data):
    """The ceiling of issue 24's targets: on the same draws as ``test_bench_snr_targets``, an oracle detector (the
    noise-free signal known, perfect correction) at 1e-7 to 1e-4 false detections per clean sample (1e-6 is what
    "no detection on clean data" allows: 0.004-0.07 expected per file; 1e-4 is the target's specificity floor),
    bench_output/kspace_snr_oracle.*. Measured and asserted: >= 5 sigma the oracle reaches >= 0.99 on every case at
    1e-6, so that target is attainable; on one coil its MCC stays below the 0.95 target at every false rate (best
    0.92: the draws' spikes of 2-5 sigma per coil cannot all be found on one coil by any detector)."""
    rows = []
    for name, ks in snr_cases(shared_data):
        for false_rate in (1e-7, 1e-6, 1e-5, 1e-4):
            rows.append({"data": name, "coils": ks.data.shape[0], **oracle_row(ks, false_rate)})
    print("\n" + write_table(rows, "kspace_snr_oracle"))
    (OUT / "kspace_snr_oracle.json").write_text(json.dumps(rows, indent=2) + "\n")
    for row in rows:
        assert row["false rate"] != 1e-6 or row["sens >=5 sigma"] >= 0.99, row
    for name in dict.fromkeys(row["data"] for row in rows):
        best = max(row["mcc"] for row in rows if row["data"] == name)
        if next(row["coils"] for row in rows if row["data"] == name) == 1:
            assert best < 0.95, (name, best)


def predictor_residual_power(plane: np.ndarray, radius: int, conjugate: bool) -> np.ndarray:
    """(coils, ky, kx) residual power of a shift-invariant linear predictor fitted by least squares on a clean
    (coils, ky, kx) plane: each sample from its (2 radius + 1)^2 neighbours in every coil and, with ``conjugate``,
    also from the 3 x 3 mirrored, conjugated samples about -k (virtual conjugate coils, the phase constraint of
    LORAKS-type models). Radius and conjugate features span the linear predictor family of GRAPPA, SPIRiT and
    LORAKS at small kernels."""
    from scanai.kspace.prediction import _regularised_solve, acquired_mask, stencil

    coils, ky, kx = plane.shape
    plane = plane.astype(np.complex128)
    mirror = np.conj(plane[:, (2 * (ky // 2) - np.arange(ky)) % ky][:, :, (2 * (kx // 2) - np.arange(kx)) % kx])
    sources = [(plane, offset) for offset in stencil(radius)]
    if conjugate:
        sources += [(mirror, offset) for offset in ((0, 0), *stencil(1))]

    def features(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return np.concatenate([source[:, (ys + dy) % ky, (xs + dx) % kx].T for source, (dy, dx) in sources], axis=1)

    ys, xs = np.nonzero(acquired_mask(plane))
    rows, targets = features(ys, xs), plane[:, ys, xs].T
    kernel = _regularised_solve(rows.conj().T @ rows, rows.conj().T @ targets, 1e-3)
    power = np.zeros(plane.shape)
    power[:, ys, xs] = (np.abs(targets - rows @ kernel) ** 2).T
    return power


#: The predictors of :func:`predictor_residual_power` the prediction oracle is given: (name, radius, conjugate).
ORACLE_PREDICTORS = (("3 x 3", 1, False), ("5 x 5", 2, False), ("3 x 3 + conjugate", 1, True),
                     ("5 x 5 + conjugate", 2, True))


#: False detection rates per clean sample over which :func:`prediction_oracle_row` reports its best MCC (those of
#: :func:`test_bench_snr_oracle`, with the peeling's relaxed level between them).
ORACLE_FALSE_RATES = (1e-7, 1e-6, 10.0 ** -5.5, 1e-5, 1e-4)


def prediction_oracle_row(ks, radius: int, conjugate: bool, false_rate: float, seeds: range = SNR_SEEDS
                          ) -> dict[str, float]:
    """Sensitivities and MCC an oracle reaches on the draws of :func:`snr_row` when it must *predict* the signal: it
    knows each coil's local residual power of the predictor (:func:`predictor_residual_power` on the clean data, mean
    over the 5 x 5 block, at least the noise power) and tests every sample at ``false_rate`` as
    :func:`~scanai.kspace.metrics.oracle_detection_probability` does with the noise (the residual taken as Gaussian
    noise of that power). The ceiling of any detector built on that predictor; the signal oracle of
    :func:`oracle_row` is the ceiling of one that knows the signal. "best mcc" is the highest MCC over
    :data:`ORACLE_FALSE_RATES` up to ``false_rate`` (a higher false rate breaks the detector's own promise)."""
    from scipy.ndimage import uniform_filter

    data = ks.data
    sigma = coil_noise_sigma(data, ks.noise_covariance)
    power = np.stack([np.stack([uniform_filter(p, 5, mode="wrap") for p in
                                predictor_residual_power(data[:, s], radius, conjugate)], axis=0)
                      for s in range(data.shape[1])], axis=1)  # (coils, slices, ky, kx)
    clean = int(np.count_nonzero(np.any(data != 0, axis=0))) * len(seeds)
    rates = sorted({*(rate for rate in ORACLE_FALSE_RATES if rate <= false_rate), false_rate})
    found = np.zeros((len(rates), 3, 2))  # expected hits and counts per false rate and bin
    for _seed, _corrupted, truth, snr in snr_draws(ks, seeds=seeds):
        level = np.sqrt(np.maximum(power[:, truth.slice, truth.ky, truth.kx].T, sigma[:, truth.slice].T ** 2))
        added = spike_values(data, truth)
        for at, rate in enumerate(rates):
            probability = oracle_detection_probability(added, level, rate)
            for index, chosen in enumerate(snr_bins(snr)):
                found[at, index] += (probability[chosen].sum(), chosen.sum())
    mccs = []
    for at, rate in enumerate(rates):
        tp, positives = found[at, :, 0].sum(), found[at, :, 1].sum()
        fp = rate * (clean - positives)
        mccs.append(matthews(tp, fp, positives - tp, clean - positives - fp))
    rate = found[rates.index(false_rate), :, 0] / np.maximum(found[rates.index(false_rate), :, 1], 1)
    return {"sens 3-5 sigma": float(rate[1]), "sens >=5 sigma": float(rate[2]),
            "mcc": mccs[rates.index(false_rate)], "best mcc": max(mccs)}


def test_bench_snr_prediction_oracle(shared_data):
    """Why >= 0.99 at >= 5 sigma per coil is out of reach on one coil, and >= 0.85 pooled at 3-5 sigma on this mix:
    on every case the prediction oracle (:func:`prediction_oracle_row`) for each predictor of
    :data:`ORACLE_PREDICTORS` (on more than two coils the shipped 3 x 3 one only: the cross-coil residual is already
    near the noise there), at the false rate of the peeling's relaxed level (10^-5.5 per sample), beside the shipped
    detector, and the pooled 3-5 sigma sensitivity of the best oracle of each case (bench_output/
    kspace_snr_prediction_oracle.*). Measured: on one coil the best oracle reaches 0.893 (se_t1) and 0.956 (coil 1
    of the Pulseq file) at >= 5 sigma -- the k-space structure every predictor leaves, 10-500x the noise power near
    DC, hides spikes of 5-20 sigma -- and the shipped detector 0.905 and 0.956; on two coils the 5 x 5 oracles reach
    0.998-0.9995 (the shipped detector 0.989-0.993), so there the target stands. Pooled at 3-5 sigma the best
    oracles reach 0.842 (the shipped detector 0.829): one coil's 3-5 sigma spikes (0.25-0.36 even for the oracle)
    keep the pool below 0.85. MCC (the draws' spikes from 2 sigma counted, as in :func:`snr_row`): on one and two
    coils no oracle reaches 0.95 at a false rate the detector may spend (at most 10^-5.5 per sample): best 0.948
    (gre), 0.948 (head), 0.844 (se_t1), 0.869 (one coil) against the shipped 0.934, 0.948, 0.833, 0.871 (at 10^-5,
    0.16-0.5 expected false detections on a clean file, the head's oracle reaches 0.953). Asserted: on one coil no
    oracle reaches 0.99 at >= 5 sigma; on one and two coils none reaches MCC 0.95 and the shipped detector is within
    0.02 of the best; the pooled best oracle stays below 0.85 at 3-5 sigma; the shipped detector is within 0.02 of
    the best oracle on every case and pooled. The oracle is an idealisation (the residual taken as Gaussian), not a
    strict bound: the detector exceeds it on se_t1."""
    false_rate = 10.0 ** -Thresholds.from_sensitivity(DEFAULT_SENSITIVITY).relaxed
    rows = []
    for name, ks in snr_cases(shared_data):
        coils = ks.data.shape[0]
        shipped = snr_row(ks, "classical")
        rows.append({"data": name, "coils": coils, "detector": "shipped (classical)", "n 3-5": shipped["n 3-5"],
                     "sens 3-5 sigma": shipped["sens 3-5 sigma"], "sens >=5 sigma": shipped["sens >=5 sigma"],
                     "mcc": shipped["mcc"], "best mcc": ""})
        for label, radius, conjugate in ORACLE_PREDICTORS if coils <= 2 else ORACLE_PREDICTORS[:1]:
            rows.append({"data": name, "coils": coils, "detector": f"prediction oracle, {label}",
                         "n 3-5": shipped["n 3-5"], **prediction_oracle_row(ks, radius, conjugate, false_rate)})
    pooled = {"shipped": [0.0, 0], "best oracle": [0.0, 0]}
    for name in dict.fromkeys(row["data"] for row in rows):
        mine = [row for row in rows if row["data"] == name]
        best = max(mine[1:], key=lambda row: row["sens 3-5 sigma"])
        for key, row in (("shipped", mine[0]), ("best oracle", best)):
            pooled[key][0] += row["sens 3-5 sigma"] * row["n 3-5"]
            pooled[key][1] += row["n 3-5"]
    for key, (hits, count) in pooled.items():
        rows.append({"data": "pooled 3-5 sigma", "coils": "", "detector": key, "n 3-5": count,
                     "sens 3-5 sigma": hits / count, "sens >=5 sigma": "", "mcc": "", "best mcc": ""})
    print("\n" + write_table(rows, "kspace_snr_prediction_oracle"))
    (OUT / "kspace_snr_prediction_oracle.json").write_text(json.dumps(rows, indent=2) + "\n")
    for name in dict.fromkeys(row["data"] for row in rows if row["coils"] != ""):
        mine = [row for row in rows if row["data"] == name]
        best = max(row["sens >=5 sigma"] for row in mine[1:])
        assert mine[0]["sens >=5 sigma"] >= best - 0.02, mine
        assert mine[0]["coils"] > 1 or best < 0.99, mine
        if mine[0]["coils"] <= 2:  # MCC >= 0.95 is beyond every predictor within the detector's false rate
            best_mcc = max(row["best mcc"] for row in mine[1:])
            assert best_mcc < 0.95 and mine[0]["mcc"] >= best_mcc - 0.02, mine
    shipped, best = (hits / count for hits, count in pooled.values())
    assert best < 0.85 and shipped >= best - 0.02, pooled


def psnr_ceiling_row(ks, offset: int = 0) -> dict[str, float]:
    """Lowest PSNR after correction over the strong-mix draws of :func:`snr_row` (odd seeds below 10) for the
    shipped detector, for the same correction given the true spike mask, and for an *ideal re-estimation*: every
    spike sample replaced by its noise-free value, so that it keeps an error of its own noise (drawn afresh with
    the coil's sigma): what any correction that re-estimates a sample, rather than knowing the spike, is left with
    against a reference that holds the noise."""
    data = ks.data
    sigma = coil_noise_sigma(data, ks.noise_covariance)  # (coils, slices)
    reference = reconstruct(ks).rss.array
    rng = np.random.default_rng(0)
    lowest = {"detector": np.inf, "true mask": np.inf, "ideal re-estimation": np.inf}
    for seed, corrupted, truth, _snr in snr_draws(ks, offset):
        if not (seed % 2 == 1 and seed < 10):
            continue
        spiked = replace(ks, data=corrupted)
        own_noise = data.copy()
        scale = sigma[:, truth.slice] / np.sqrt(2.0)
        np.add.at(own_noise, (slice(None), truth.slice, truth.ky, truth.kx),
                  (scale * (rng.normal(size=scale.shape) + 1j * rng.normal(size=scale.shape))).astype(data.dtype))
        for key, fixed in (("detector", calibrate(spiked, detect(spiked))),
                           ("true mask", correct(corrupted, truth.mask(data.shape[1:]))),
                           ("ideal re-estimation", own_noise)):
            lowest[key] = min(lowest[key], psnr(reference, reconstruct(replace(ks, data=fixed)).rss.array))
    return {f"PSNR {key} (min)": float(value) for key, value in lowest.items()}


def test_bench_psnr_ceiling(shared_data):
    """What issue 24's PSNR >= 55 dB asks of the correction (bench_output/kspace_psnr_ceiling.*): the lowest PSNR of
    the shipped detector's correction beside the same correction given the true spike mask and an ideal
    re-estimation (:func:`psnr_ceiling_row`). Measured: on the 2-coil head even the ideal re-estimation stays at
    51.7 dB, below 55 (the reference holds each sample's noise, which no re-estimate can know), the true mask's
    correction at 50.3 and the detector's at 49.6; on gre the true mask reaches 55.2, the detector 53.3 (weak spikes
    it misses); on one coil the true mask's correction stays far below the detector's (se_t1 38.2 vs 43.6, one coil
    39.0 vs 46.0): there the prediction that re-estimates a sample, not the detection, holds the PSNR down, and
    correcting every weak spike costs more than it removes. The ideal re-estimation uses the bench's sigma
    (:func:`coil_noise_sigma`: the simulation's on the phantoms, else the outer k-space): on the head it is the same
    from 0.8 or 1.2 of the radius (8.4e-7, 8.2e-7: noise); the 64^2 32-coil file's outer k-space still holds signal,
    so there the column is too low. Asserted: the head's ideal re-estimation stays below 55 dB, and on every case
    the detector's PSNR is within 2 dB of 55 or of the true mask's correction, whichever is lower."""
    rows = [{"data": name, **psnr_ceiling_row(ks)} for name, ks in snr_cases(shared_data)]
    print("\n" + write_table(rows, "kspace_psnr_ceiling"))
    for row in rows:
        assert row["PSNR detector (min)"] >= min(55.0, row["PSNR true mask (min)"]) - 2.0, row
    head = next(row for row in rows if row["data"] == "2024-02-06-164120.dat")
    assert head["PSNR ideal re-estimation (min)"] < 55.0, head


def undersampled(ks, stride: int = 2, calibration: int = 16):
    """``ks`` as a parallel-imaging acquisition (:func:`~scanai.kspace.simulate.accelerate`)."""
    return replace(ks, data=accelerate(ks.data, stride, calibration),
                   source=f"{ks.source}, every {stride}nd line + {calibration} calibration lines")


def test_bench_undersampled_multicoil(shared_data):
    """Accelerated acquisitions (issue 24: undersampled masks are acquisition edges): the 16- and 32-coil files with
    every other line and 16 calibration lines, the draws of ``test_bench_snr_targets`` on the acquired samples,
    beside the fully sampled file (bench_output/kspace_undersampled.*). Measured: MCC 0.963 and 0.983 (0.994 and
    0.997 fully sampled), >= 5 sigma 0.986 and 0.992: a sample on an acquired line is predicted from its own line and
    the coils (the lines above and below were never acquired), so a strong spike's neighbours along the readout are
    sometimes flagged with it (5 and 3 false positives; on 32 coils 15 before the final check re-estimated a sample's
    flagged neighbours around its own value, 7 before the kernel's load of fixed strength on few targets,
    :data:`~scanai.kspace.prediction.MIN_TARGETS_PER_COEFFICIENT`; specificity 0.99997 and 0.99994). Lowest
    PSNR after correction 61.3 and 63.5 dB (the correction on the lattice of acquired lines; 61.6 and 52.7 on the
    whole plane). Asserted: no detection on the clean acquisitions, specificity >= 0.9999 (the issue's), MCC
    >= 0.94, PSNR >= 60 dB."""
    rows = []
    for name in ("2024-02-06-160052.dat", "meas_MID00243_FID33257_pulseq.dat"):
        full = read_kspace(shared_data / "kspace" / name)
        for label, ks in (("fully sampled", full), ("every 2nd line + 16 calibration lines", undersampled(full))):
            rows.append({"data": name, "acquisition": label, **snr_row(ks, "classical")})
    print("\n" + write_table(rows, "kspace_undersampled"))
    for row in rows:
        assert row["clean detections"] == 0 and row["specificity"] >= 0.9999, row
        assert row["mcc"] >= 0.94 and row["PSNR after (min)"] >= 60.0, row


def test_bench_partial_echo_edges():
    """Isolated spikes (0.01-0.9 x max|k|) in the first, second and last acquired readout columns of a partial
    echo and in a middle column: found as reliably at the edges as in the middle."""
    ks = partial_echo_case()
    data = ks.data
    peak = np.sqrt(np.sum(np.abs(data[:, 0]) ** 2, axis=0)).max()
    columns = {"first": PARTIAL_ECHO_COLUMNS, "second": PARTIAL_ECHO_COLUMNS + 1, "last": data.shape[-1] - 1,
               "middle": 200}
    row = {}
    for where, column in columns.items():
        rng = np.random.default_rng(column)
        found = total = false = 0
        for _ in range(20):
            spiked = data.copy()
            rows = rng.choice(np.arange(4, data.shape[2] - 4), 3, replace=False)
            for y, amplitude in zip(rows, np.exp(rng.uniform(np.log(0.01), np.log(0.9), 3)), strict=True):
                gains = rng.normal(size=data.shape[0]) + 1j * rng.normal(size=data.shape[0])
                spiked[:, 0, y, column] += (amplitude * peak * gains / np.linalg.norm(gains)).astype(np.complex64)
            mask = detect(replace(ks, data=spiked)).mask
            found += int(mask[0, rows, column].sum())
            total += 3
            false += int(mask.sum() - mask[0, rows, column].sum())
        row[where] = found / total
        row[f"{where} false"] = false
    print("\n" + write_table([row], "kspace_partial_echo_edges"))
    assert min(row["first"], row["second"], row["last"]) >= row["middle"] - 0.05, row
