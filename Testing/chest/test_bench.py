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
    for name in ("lung_right", "lung_left"):
        assert network[f"dice_{name}_mean"] >= 0.95
    assert network["dice_heart_mean"] >= 0.90
    assert network["ctr_mae"] <= 0.03


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
    figure, axes = plt.subplots(2, 3, figsize=(15, 10.5))
    for axis, (image, title, experimental) in zip(axes.flat, images, strict=True):
        detections = detector.detect(image)
        detections = detections if experimental else detections.without(EXPERIMENTAL)
        draw_overlay(axis, image, detections, assess(detections, Thresholds(experimental=experimental)), title)
    figure.tight_layout()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(SCREENSHOTS / "chest_overlays.png", dpi=80)
    plt.close(figure)
    assert (SCREENSHOTS / "chest_overlays.png").stat().st_size > 10_000
