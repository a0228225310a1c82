"""Slow benchmark of the experimental abnormal findings (``make bench``): on the real radiographs held out from their
calibration (the 52 Wingspan validation images and the NIH files of ../shared/data/chest, none with a pneumothorax or
an effusion) the shipped decision rule, turned on, finds each part on at most 2 % of them; with experimental objects
off (the default) no abnormal finding is shown at all. Results in bench_output/chest_abnormal.json."""

from __future__ import annotations

import pytest
from bench_results import write_result

pytest.importorskip("torch")

from scanai.chest.abnormal import PARTS, decide
from scanai.chest.calibrate_abnormal import HELD_OUT_FPR, real_files
from scanai.chest.metrics import Thresholds
from scanai.chest.network import load_chest_detector
from scanai.chest.pipeline import analyse_file

pytestmark = pytest.mark.slow


def test_held_out_false_positive_rate_and_nothing_shown_by_default(shared_data) -> None:
    files = real_files(shared_data / "chest")
    detector = load_chest_detector("cpu")
    shipped = Thresholds(experimental=True)
    results: dict[str, dict] = {}
    for name in ("validation", "nih"):
        counts = {part: {"found": 0, "shown": 0, "files": []} for part in PARTS}
        shown_by_default = 0
        for path in files[name]:
            on = analyse_file(path, detector, shipped)
            for part in PARTS:
                if on.detections is not None and decide(on.detections, part, getattr(shipped, f"{part}_min_ratio"),
                                                         getattr(shipped, f"{part}_min_confidence")).present:
                    counts[part]["found"] += 1
                    counts[part]["files"].append(path.name)
                counts[part]["shown"] += int(any(item.name == part and item.present for item in on.assessment.findings))
            off = analyse_file(path, detector)  # the default: experimental objects off
            shown_by_default += sum(item.name in PARTS for item in off.assessment.findings)
        rates = {part: {**value, "rate": value["found"] / len(files[name])} for part, value in counts.items()}
        results[name] = {"n": len(files[name]), "shown_by_default": shown_by_default, **rates}
    total = sum(results[name]["n"] for name in results)
    for part in PARTS:
        found = sum(results[name][part]["found"] for name in ("validation", "nih"))
        results[f"held_out_{part}"] = {"found": found, "n": total, "rate": found / total}
    write_result("chest_abnormal.json", "held_out_false_positives",
                 {**results, "thresholds": {key: value for key, value in shipped.as_dict().items() if "_min_" in key}})
    print(results)
    for name in ("validation", "nih"):
        assert results[name]["shown_by_default"] == 0
        for part in PARTS:
            assert results[name][part]["shown"] <= results[name][part]["found"]
            assert results[name][part]["rate"] <= HELD_OUT_FPR, (name, part, results[name][part])
    for part in PARTS:
        assert results[f"held_out_{part}"]["rate"] <= HELD_OUT_FPR
