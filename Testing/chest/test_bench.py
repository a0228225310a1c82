"""Slow ChestQC benchmarks (``make bench``): the network and the classical baseline on all 52 Wingspan validation
images (Dice per lung and heart, cardiothoracic-ratio error, seconds per radiograph for detection + metrics), and
the README overlays (results in bench_output/chest.json, figure Resources/Screenshots/chest_overlays.png)."""

from __future__ import annotations

import json
import time

import pytest
from bench_results import SCREENSHOTS, write_result

pytest.importorskip("torch")

from scanai.chest.classical import ClassicalDetector
from scanai.chest.detection import EXPERIMENTAL
from scanai.chest.evaluate import evaluate_detector
from scanai.chest.generator import make_scenario
from scanai.chest.io import read_radiograph
from scanai.chest.metrics import Thresholds, assess
from scanai.chest.network import load_chest_detector
from scanai.chest.wingspan import load_cases

pytestmark = pytest.mark.slow


def _write(key: str, value) -> None:
    write_result("chest.json", key, value)


def test_wingspan_validation_network_vs_classical(shared_data) -> None:
    cases = load_cases(shared_data / "chest" / "wingspan", "validation")
    network = evaluate_detector(load_chest_detector("cpu"), cases)["summary"]
    classical = evaluate_detector(ClassicalDetector(), cases)["summary"]
    _write("wingspan_validation", {"network": network, "classical": classical})
    print(json.dumps({"network": network, "classical": classical}, indent=1))
    # No regression below the shipped network with its anatomy priors (0.9659 / 0.9462 / 0.9338, CTR MAE 0.0167).
    # The targets (lungs >= 0.975, heart >= 0.94) are not met yet: the gap is written, not asserted.
    _write("wingspan_validation_target_gap", {name: round(target - network[f"dice_{name}_mean"], 4) for name, target
                                              in (("lung_right", 0.975), ("lung_left", 0.975), ("heart", 0.94))})
    assert network["dice_lung_right_mean"] >= 0.965 and network["dice_lung_left_mean"] >= 0.945
    assert network["dice_heart_mean"] >= 0.933
    assert network["ctr_mae"] <= 0.02


def test_seconds_per_radiograph_detection_and_metrics(shared_data) -> None:
    """Detection + metrics on the 1024² DICOM and a 512² PNG, after one warm-up call: at most 1 s each."""
    detector = load_chest_detector("cpu")
    timings = {}
    for name in ("1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", "00000001_000.png"):
        image = read_radiograph(shared_data / "chest" / name).image.array[0]
        assess(detector.detect(image))
        start = time.perf_counter()
        for _ in range(3):
            assess(detector.detect(image))
        timings[f"{image.shape[0]}x{image.shape[1]}"] = (time.perf_counter() - start) / 3
    classical = ClassicalDetector()
    start = time.perf_counter()
    assess(classical.detect(image))
    timings["classical_512"] = time.perf_counter() - start
    _write("seconds_per_radiograph", timings)
    print(timings)
    assert max(v for k, v in timings.items() if not k.startswith("classical")) <= 1.0


def test_overlay_figure(shared_data) -> None:
    """README figure: network overlays on two Wingspan validation images, the NIH DICOM and three scenarios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scanai.chest.figures import draw_overlay

    detector = load_chest_detector("cpu")
    cases = load_cases(shared_data / "chest" / "wingspan", "validation")[:2]
    images = [(case.image, case.case_id[:18] + "…", False) for case in cases]
    dicom = read_radiograph(shared_data / "chest" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    images.append((dicom.image.array[0], "NIH DICOM (RSNA)", False))
    for name in ("scapula_overlap", "foreign_object_inside", "effusion"):  # the machinery, experimental objects on
        images.append((make_scenario(name, 7100).phantom.image, f"generated: {name} (experimental on)", True))
    figure, axes = plt.subplots(2, 3, figsize=(15, 14), gridspec_kw={"hspace": 0.55})
    for axis, (image, title, experimental) in zip(axes.flat, images, strict=True):
        detections = detector.detect(image)
        detections = detections if experimental else detections.without(EXPERIMENTAL)
        draw_overlay(axis, image, detections, assess(detections, Thresholds(experimental=experimental)), title)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.95, bottom=0.12, wspace=0.1, hspace=0.6)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(SCREENSHOTS / "chest_overlays.png", dpi=80)
    plt.close(figure)
    assert (SCREENSHOTS / "chest_overlays.png").stat().st_size > 10_000


def _rss_mb() -> float:
    """This process's resident memory in MB (Linux /proc)."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.mark.parametrize("size", [None, 2048], ids=["as-stored", "2048"])
def test_folder_batch_runs_in_constant_memory(size, shared_data, tmp_path) -> None:
    """``scanai chest FOLDER`` as the CLI runs it (analyse_batch: detection, metrics, overlay, JSON per image) on
    50 real Wingspan radiographs, as stored and resampled to 2048²: RSS before each image stays within 50 MB of the
    RSS after the first 5."""
    from PIL import Image

    from scanai.chest.cli import BatchOptions, analyse_batch
    from scanai.core.progress import Progress

    paths = sorted((shared_data / "chest" / "wingspan" / "png").glob("*.png"))[:50]
    if size is not None:
        (tmp_path / "in").mkdir()
        for number, path in enumerate(list(paths)):
            paths[number] = tmp_path / "in" / path.name
            Image.open(path).convert("L").resize((size, size), Image.BILINEAR).save(paths[number], compress_level=1)
    rss: list[float] = []

    def record(_fraction: float, message: str) -> None:
        if message.endswith(f"/{len(paths)})"):  # "NAME (k/50)": before image k
            rss.append(_rss_mb())

    rows = analyse_batch(paths, load_chest_detector("cpu"), tmp_path / "out", BatchOptions(), progress=Progress(record))
    rss.append(_rss_mb())
    growth = max(rss[5:]) - rss[5]
    _write(f"batch_rss_mb_{size or 'as_stored'}", {
        "images": len(rows), "after_5": round(rss[5], 1), "max_after_5": round(max(rss[5:]), 1),
        "end": round(rss[-1], 1), "growth_after_5": round(growth, 1)})
    print({"after_5": rss[5], "max": max(rss[5:]), "end": rss[-1]})
    assert len(rows) == 50 and all(row["level"] != "ERROR" for row in rows)
    assert growth <= 50.0


def test_full_size_2048_detection_metrics_and_overlay(shared_data, tmp_path) -> None:
    """A 2048² radiograph (the shared 1024² DICOM resampled, linear): detection + metrics <= 1 s and the overlay PNG
    <= 0.3 s, medians of 3 after one warm-up (CPU; the other objects' numbers are in seconds_per_radiograph)."""
    import statistics

    import numpy as np
    from scipy import ndimage

    from scanai.chest.figures import save_overlay

    dicom = read_radiograph(shared_data / "chest" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    pixels = dicom.image.array[0].astype(np.float64)
    image = ndimage.zoom(pixels, (2048 / pixels.shape[0], 2048 / pixels.shape[1]), order=1)
    assert image.shape == (2048, 2048)
    detector = load_chest_detector("cpu")

    def median_seconds(run) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    detections = detector.detect(image)  # warm-up
    assessment = assess(detections)
    path = tmp_path / "overlay_2048.png"
    save_overlay(image, detections, assessment, path, "2048 x 2048")
    detection_s = median_seconds(lambda: assess(detector.detect(image)))
    overlay_s = median_seconds(lambda: save_overlay(image, detections, assessment, path, "2048 x 2048"))
    timings = {"detection_and_metrics_s": round(detection_s, 3), "overlay_png_s": round(overlay_s, 3)}
    _write("seconds_2048", timings)
    print(timings)
    assert path.stat().st_size > 10_000
    assert detection_s <= 1.0
    assert overlay_s <= 0.3
