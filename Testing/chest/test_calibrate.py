"""ChestQC threshold calibration (¶0112-0124): the grid scan, calibration from detections on hand-made phantom masks
labelled by hidden thresholds (digest §6.4 item 11), and the command with a stand-in detector."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from scanai.chest.calibrate import (
    PARAMETERS,
    calibrate_cases,
    calibrate_threshold,
    main,
    quantities,
    read_cases,
)
from scanai.chest.detection import detections_from_masks
from scanai.chest.metrics import Thresholds, assess, lung_margins, scapula_ratios, spine_offset
from scanai.core.errors import InputError

SIZE = 256


def _grid(size=SIZE):
    centres = (np.arange(size) + 0.5) / size
    v, u = np.meshgrid(centres, centres, indexing="ij")
    return u, v


U, V = _grid()
TORSO = ((U - 0.50) / 0.44) ** 2 + ((V - 0.58) / 0.52) ** 2 <= 1


def case(spine_shift=0.0, lung_top=0.22, scapula_shift=0.0, fo_confidence=None, fo_centre=(0.12, 0.10)):
    """A phantom case drawn with numpy: lungs whose top edge is at v = ``lung_top``, a spine moved by
    ``spine_shift``, rectangular scapulae moved medially by ``scapula_shift``, and an optional button."""
    centre_v = lung_top + 0.26
    masks = {
        "lung_right": ((U - 0.33) / 0.12) ** 2 + ((V - centre_v) / 0.26) ** 2 <= 1,
        "lung_left": ((U - 0.67) / 0.12) ** 2 + ((V - centre_v) / 0.26) ** 2 <= 1,
        "heart": ((U - 0.54) / 0.13) ** 2 + ((V - 0.63) / 0.11) ** 2 <= 1,
        "spine": (np.abs(U - 0.50 - spine_shift) <= 0.03) & TORSO,
        "scapula_right": (U >= 0.10 + scapula_shift) & (U <= 0.20 + scapula_shift) & (V >= 0.20) & (V <= 0.42),
        "scapula_left": (U >= 0.80 - scapula_shift) & (U <= 0.90 - scapula_shift) & (V >= 0.20) & (V <= 0.42),
    }
    if fo_confidence is not None:
        masks["foreign_object"] = np.hypot(U - fo_centre[0], V - fo_centre[1]) <= 0.015
    return detections_from_masks(masks, confidences={"foreign_object": fo_confidence or 0.0}, body=TORSO)


# ---------------------------------------------------------------------------------------------------------------
# The grid scan
# ---------------------------------------------------------------------------------------------------------------

def test_separable_values_give_the_middle_of_the_gap():
    values = [0.01, 0.02, 0.03, 0.06, 0.07]
    labels = [True, True, True, False, False]
    result = calibrate_threshold(values, labels, np.arange(0.0, 0.101, 0.005), min_accuracy=0.9)
    # best run: 0.030 .. 0.055 (6 candidates) -> lower middle 0.040
    assert result.threshold == pytest.approx(0.040) and result.accuracy == 1.0 and result.accepted
    assert len(result.candidates) == len(result.accuracies) == 21 and (result.n_pass, result.n_fail) == (3, 2)
    assert max(result.accuracies) == 1.0 and min(result.accuracies) == pytest.approx(0.4)


def test_ties_take_the_longest_best_run_and_comparator_ge():
    values = [0.1, 0.2, 0.8, 0.9]
    labels = [True, False, True, False]  # no threshold separates: accuracy 0.75 in two separate runs
    result = calibrate_threshold(values, labels, [0.05, 0.15, 0.5, 0.85, 0.86, 0.87, 0.95])
    assert result.accuracy == pytest.approx(0.75) and result.threshold == pytest.approx(0.86)  # longer run
    first = calibrate_threshold(values, labels, [0.05, 0.15, 0.5, 0.85, 0.95])  # equal runs: the first
    assert first.threshold == pytest.approx(0.15)
    ge = calibrate_threshold([0.01, 0.02, 0.05, 0.06], [False, False, True, True], [0.01, 0.03, 0.04, 0.07], ">=")
    assert ge.threshold == pytest.approx(0.03) and ge.accuracy == 1.0 and ge.comparator == ">="


def test_acceptance_and_nan_and_bad_input():
    noisy = calibrate_threshold([0.1, 0.2, 0.3, 0.4], [True, False, True, False], [0.15, 0.25, 0.35], "<=", 0.9)
    assert noisy.accuracy < 0.9 and not noisy.accepted
    missing = calibrate_threshold([0.01, float("nan")], [True, False], [0.02])  # NaN (e.g. no spine) fails
    assert missing.accuracy == 1.0
    for args in (([0.1], [True, False], [0.1]), ([0.1], [2], [0.1]), ([], [], [0.1]), ([0.1], [True], []),
                 ([0.1], [True], [0.1], "<"), ([0.1], [True], [0.1], "<=", 1.5)):
        with pytest.raises(InputError):
            calibrate_threshold(*args)


# ---------------------------------------------------------------------------------------------------------------
# From detections
# ---------------------------------------------------------------------------------------------------------------

def test_quantities_reuse_the_metric_formulas():
    detections = case(spine_shift=0.04, scapula_shift=0.1, fo_confidence=0.7, fo_centre=(0.30, 0.48))
    values = quantities(detections)
    assert (values["C1"], values["C2"], values["C3"]) == scapula_ratios(detections)
    assert values["C4_left"] == lung_margins(detections)["left"]
    assert values["C6"] == pytest.approx(abs(spine_offset(detections))) and values["C6"] == pytest.approx(0.04, 0.1)
    assert values["C5"] == 0.7 and values["fo_inside_lung"] == 1.0
    result = assess(detections, Thresholds(experimental=True))  # C2 is an experimental object's test
    assert result.test("C2").value == values["C2"] and result.test("C6").value == values["C6"]
    assert np.isnan(quantities(detections_from_masks({"lung_right": TORSO & (U < 0.4)}))["C6"])


def test_spine_threshold_recovered_from_phantoms():
    """Digest §6.4 item 11: cases labelled by a hidden spine-offset threshold of 0.05 are separated."""
    shifts = np.random.default_rng(7).uniform(-0.1, 0.1, 60)
    detections = [case(spine_shift=shift) for shift in shifts]
    labels = [bool(abs(shift) <= 0.05) for shift in shifts]
    thresholds, results = calibrate_cases(detections, {"spine": labels})
    spine = results["to"]
    assert spine.accuracy >= 0.95 and spine.accepted and spine.min_accuracy == 0.95
    assert abs(spine.threshold - 0.05) <= 0.01 and thresholds.to == spine.threshold
    passing = max(abs(s) for s in shifts if abs(s) <= 0.05)
    failing = min(abs(s) for s in shifts if abs(s) > 0.05)
    assert passing - 0.005 <= spine.threshold <= failing + 0.005
    assert thresholds.t2 == Thresholds().t2 and set(results) == {"to"}
    # every threshold the grid offers lies in the patent's interval
    assert min(spine.candidates) == pytest.approx(0.02) and max(spine.candidates) == pytest.approx(0.07)


def test_joint_lung_and_scapula_and_foreign_object_calibration():
    rng = np.random.default_rng(11)
    tops = rng.uniform(0.0, 0.09, 40)            # lung top margin; hidden limit 0.05
    scapula = rng.uniform(0.0, 0.12, 40)          # scapula medial shift; hidden C2 limit 0.03
    confidences = rng.uniform(0.0, 1.0, 40)       # foreign-object confidence; hidden limit 0.6
    cases = [case(lung_top=top, scapula_shift=s, fo_confidence=c) for top, s, c in zip(tops, scapula, confidences,
                                                                                          strict=True)]
    c2 = np.array([scapula_ratios(d)[1] for d in cases])
    labels = {"lung": [bool(top >= 0.05) for top in tops], "scapula": [bool(v <= 0.03) for v in c2],
              "foreign_object": [bool(c <= 0.6) for c in confidences]}
    labels["foreign_object"][0] = None  # an unlabelled case is skipped
    thresholds, results = calibrate_cases(cases, labels, Thresholds(c3_enabled=False))
    assert set(results) == {"d_top", "d_bottom", "d_left", "d_right", "t2", "tc"}
    assert results["d_top"].accepted and results["d_top"].accuracy >= 0.95
    assert abs(thresholds.d_top - 0.05) <= 0.006
    assert results["t2"].accepted and results["t2"].accuracy >= 0.95 and abs(thresholds.t2 - 0.03) <= 0.01
    assert results["tc"].accepted and abs(thresholds.tc - 0.6) <= 0.06
    assert results["tc"].n_pass + results["tc"].n_fail == 39
    # margins that never fail keep any value in range; the joint accuracy is reported on each
    assert results["d_left"].accuracy == results["d_top"].accuracy
    assert PARAMETERS["d_left"].low <= thresholds.d_left <= PARAMETERS["d_left"].high


def test_rejected_calibration_keeps_the_starting_threshold():
    shifts = np.linspace(0.0, 0.1, 20)
    labels = [bool(i % 2) for i in range(20)]  # labels unrelated to the offset
    thresholds, results = calibrate_cases([case(spine_shift=s) for s in shifts], {"spine": labels},
                                          Thresholds(to=0.033))
    assert not results["to"].accepted and thresholds.to == 0.033
    with pytest.raises(InputError):
        calibrate_cases([case()], {"heart": [True]})
    with pytest.raises(InputError):
        calibrate_cases([case(), case()], {"spine": [True]})


# ---------------------------------------------------------------------------------------------------------------
# The command (with a stand-in detector)
# ---------------------------------------------------------------------------------------------------------------

def _write_png(path, index):
    import SimpleITK as sitk

    image = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    image[0, 0] = index  # the stand-in detector reads the case number here
    sitk.WriteImage(sitk.GetImageFromArray(image), str(path))


def test_command_calibrates_and_writes_json(tmp_path, monkeypatch, capsys):
    shifts = np.linspace(-0.09, 0.09, 25)
    prepared = [case(spine_shift=s) for s in shifts]
    lines = ["image,spine_ok,lung_ok"]
    for index, shift in enumerate(shifts):
        _write_png(tmp_path / f"case{index}.png", index)
        lines.append(f"case{index}.png,{int(abs(shift) <= 0.05)},")
    lines.append("missing.png,1,")
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    requested = []

    class StandIn:
        name = "stand-in"

        def detect(self, image, progress=None):
            return prepared[int(image[0, 0])]

    def detector_by_name(name):
        requested.append(name)
        return StandIn()

    monkeypatch.setitem(sys.modules, "scanai.chest.pipeline", types.SimpleNamespace(detector_by_name=detector_by_name))
    out = tmp_path / "out" / "thresholds.json"
    status = main([str(tmp_path / "cases.csv"), "--out", str(out), "--backend", "classical",
                   "--quantities", str(tmp_path / "q.csv")])
    captured = capsys.readouterr()
    assert status == 0 and requested == ["classical"]
    assert "missing.png: skipped" in captured.err and "spine" in captured.out and "accepted" in captured.out
    written = Thresholds.from_json(out)
    assert abs(written.to - 0.05) <= 0.0076 and written.name.startswith("calibrated (25 images")
    assert json.loads(out.read_text())["d_top"] == Thresholds().d_top  # lung labels all blank: not calibrated
    assert len((tmp_path / "q.csv").read_text().splitlines()) == 26


def test_cases_file_errors(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("path,spine_ok\na.png,1\n")
    with pytest.raises(InputError):
        read_cases(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("image,spine_ok\na.png,maybe\n")
    with pytest.raises(InputError):
        read_cases(tmp_path / "bad2.csv")
    (tmp_path / "ok.csv").write_text("image,spine_ok,scapula_ok\nsub/a.png,1,\nb.png,0,1\n")
    images, labels = read_cases(tmp_path / "ok.csv")
    assert images[0] == (tmp_path / "sub" / "a.png").resolve()
    assert labels == {"spine": [True, False], "scapula": [None, True]}
    assert main([str(tmp_path / "bad.csv")]) == 2 and "image" in capsys.readouterr().err
