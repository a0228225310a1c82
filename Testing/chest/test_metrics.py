"""The ChestQC metric engine on hand-made masks: C1-C6 against independent recomputation, the grade rules, findings,
gating, flip/resize invariance, extensions, threshold profiles and the report (digest §6.4 items 1-8, 10)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from scanai.chest.detection import detections_from_masks
from scanai.chest.metrics import (
    EXPERIMENTAL_LABEL,
    FIRST,
    INTERMEDIATE,
    NOT_ASSESSABLE,
    SECOND,
    TABLE_COLUMNS,
    THRESHOLD_PROFILES,
    WITHHELD_NOTE,
    Thresholds,
    _grade,
    age_in_years,
    not_assessable,
    thresholds_for,
)
from scanai.chest.metrics import assess as assess_as_shipped
from scanai.core.errors import FileFormatError, InputError


def assess(found, thresholds: Thresholds | None = None, spacing_mm=None):
    """The metric engine with the experimental objects on: these tests check its machinery (scapula tests, rotation,
    abnormal parts) on exact masks; what a user gets by default is tested with ``assess_as_shipped``."""
    return assess_as_shipped(found, replace(thresholds or Thresholds(), experimental=True), spacing_mm)

# ---------------------------------------------------------------------------------------------------------------
# The digest's phantom (§6.4) as masks, drawn here with numpy (normalised coordinates u = x / W, v = y / H)
# ---------------------------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size) + 0.5) / size
    v, u = np.meshgrid(centres, centres, indexing="ij")
    return u, v


def _ellipse(u, v, centre, axes):
    return ((u - centre[0]) / axes[0]) ** 2 + ((v - centre[1]) / axes[1]) ** 2 <= 1.0


def _triangle(u, v, points):
    """Pixels whose centre lies inside the triangle (half-plane signs)."""
    signs = []
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        signs.append((u - x2) * (y1 - y2) - (x1 - x2) * (v - y2))
    signs = np.stack(signs)
    return ~((signs < 0).any(axis=0) & (signs > 0).any(axis=0))


def _segment(u, v, start, end, half_width):
    """A thick segment (capsule)."""
    (x1, y1), (x2, y2) = start, end
    dx, dy = x2 - x1, y2 - y1
    t = np.clip(((u - x1) * dx + (v - y1) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(u - (x1 + t * dx), v - (y1 + t * dy)) <= half_width


def phantom_masks(size=512, heart_axis=0.13, scapula_shift=0.0, spine_shift=0.0, fo=None, clavicles=True,
                  clavicle_shift=0.0, lung_axes=(0.12, 0.26)):
    """Masks of the digest's phantom. Returns (masks, torso). ``scapula_shift`` moves both scapulae medially,
    ``spine_shift`` moves the spine toward the image right, ``fo`` = (u, v, radius) adds a button,
    ``clavicle_shift`` moves both clavicles toward the image right (patient rotation)."""
    u, v = _grid(size)
    torso = _ellipse(u, v, (0.50, 0.58), (0.44, 0.52))
    masks = {
        "lung_right": _ellipse(u, v, (0.33, 0.48), lung_axes),
        "lung_left": _ellipse(u, v, (0.67, 0.48), lung_axes),
        "heart": _ellipse(u, v, (0.54, 0.63), (heart_axis, 0.11)),
        "spine": (np.abs(u - 0.50 - spine_shift) <= 0.03) & ((v % 0.04) > 0.006) & torso,
        "scapula_right": _triangle(u, v, [(0.10 + scapula_shift, 0.17), (0.21 + scapula_shift, 0.19),
                                          (0.15 + scapula_shift, 0.45)]),
        "scapula_left": _triangle(u, v, [(0.90 - scapula_shift, 0.17), (0.79 - scapula_shift, 0.19),
                                         (0.85 - scapula_shift, 0.45)]),
    }
    if clavicles:
        masks["clavicle_right"] = _segment(u, v, (0.47 + clavicle_shift, 0.20), (0.25 + clavicle_shift, 0.15), 0.012)
        masks["clavicle_left"] = _segment(u, v, (0.53 + clavicle_shift, 0.20), (0.75 + clavicle_shift, 0.15), 0.012)
    if fo is not None:
        masks["foreign_object"] = np.hypot(u - fo[0], v - fo[1]) <= fo[2]
    return masks, torso


def detections(masks, torso, fo_confidence=1.0):
    return detections_from_masks(masks, confidences={"foreign_object": fo_confidence}, body=torso, backend="test")


def lateral_part(masks, fraction):
    """The most lateral lung pixels (bilateral crescents) covering ``fraction`` of the lung pixels."""
    lungs = masks["lung_right"] | masks["lung_left"]
    u, _v = _grid(lungs.shape[0])
    score = np.where(lungs, np.abs(u - 0.5), -1.0).ravel()
    count = int(round(fraction * lungs.sum()))
    part = np.zeros(lungs.size, dtype=bool)
    part[np.argsort(-score, kind="stable")[:count]] = True
    return part.reshape(lungs.shape) & lungs


def basal_part(masks, fraction):
    """Basal lung pixels with a meniscus (higher laterally) covering ``fraction`` of the lung pixels."""
    lungs = masks["lung_right"] | masks["lung_left"]
    u, v = _grid(lungs.shape[0])
    score = np.where(lungs, v + 0.3 * np.abs(u - 0.5), -1.0).ravel()
    count = int(round(fraction * lungs.sum()))
    part = np.zeros(lungs.size, dtype=bool)
    part[np.argsort(-score, kind="stable")[:count]] = True
    return part.reshape(lungs.shape) & lungs


# independent recomputations -------------------------------------------------------------------------------------

def spine_offset_loop(spine):
    width = spine.shape[1]
    xs = [np.flatnonzero(row).mean() + 0.5 for row in spine if row.any()]
    return sum(x - width / 2 for x in xs) / (len(xs) * width)


def margins_loop(lungs):
    rows = [r for r in range(lungs.shape[0]) if lungs[r].any()]
    cols = [c for c in range(lungs.shape[1]) if lungs[:, c].any()]
    height, width = lungs.shape
    return {"top": rows[0] / height, "bottom": (height - 1 - rows[-1]) / height, "left": cols[0] / width,
            "right": (width - 1 - cols[-1]) / width}


def extent(mask):
    cols = np.flatnonzero(mask.any(axis=0))
    return cols[-1] - cols[0] + 1


# ---------------------------------------------------------------------------------------------------------------
# C1-C3: scapula (digest §6.4 item 2, on 1024² with the torso as chest area)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("shift", "c2", "c3", "passes"), [(0.0, 0.0, 0.0, True), (0.08, 0.038, 0.011, True),
                                                           (0.12, 0.083, 0.024, False)])
def test_scapula_overlap_digest_values(shift, c2, c3, passes):
    masks, torso = phantom_masks(1024, scapula_shift=shift)
    result = assess(detections(masks, torso))
    scapula = masks["scapula_right"] | masks["scapula_left"]
    lungs = masks["lung_right"] | masks["lung_left"]
    overlap = np.logical_and(scapula, lungs).sum()
    assert result.test("C1").value == pytest.approx(scapula.sum() / torso.sum(), abs=1e-9)
    assert result.test("C2").value == pytest.approx(overlap / lungs.sum(), abs=1e-9)
    assert result.test("C3").value == pytest.approx(overlap / torso.sum(), abs=1e-9)
    assert result.test("C2").value == pytest.approx(c2, abs=0.005)
    assert result.test("C3").value == pytest.approx(c3, abs=0.005)
    assert result.test("C1").value == pytest.approx(0.044, abs=0.002)  # area preserved: why C1 is off
    assert not result.test("C1").contributes_to_level
    if passes:
        assert (result.level, result.rule, result.reasons) == (FIRST, "R1", ())
    else:
        assert (result.level, result.rule) == (INTERMEDIATE, "R5")
        assert not result.test("C2").passed and not result.test("C3").passed
        assert any(r.startswith("scapula:") and "0.083 > 0.05" in r and "overlaps lung" in r for r in result.reasons)
        assert any(r.startswith("scapula:") and "0.024 > 0.015" in r for r in result.reasons)
        assert len(result.reasons) == 2  # one per failed test


def test_c1_when_enabled_fails_on_whole_scapulae():
    masks, torso = phantom_masks(256)
    result = assess(detections(masks, torso), Thresholds(c1_enabled=True))
    assert result.test("C1").contributes_to_level and not result.test("C1").passed
    assert result.level == INTERMEDIATE and any("first ratio" in r for r in result.reasons)


def test_scapula_tie_passes_and_only_enabled_tests_count():
    masks, torso = phantom_masks(512, scapula_shift=0.12)
    c2 = assess(detections(masks, torso)).test("C2").value
    tied = assess(detections(masks, torso), Thresholds(t2=c2, c3_enabled=False))
    assert tied.test("C2").passed and tied.level == FIRST
    assert assess(detections(masks, torso), Thresholds(t2=c2 - 1e-6, c3_enabled=False)).level == INTERMEDIATE


# ---------------------------------------------------------------------------------------------------------------
# C6: spine (item 1) and the weighted rule
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("shift", "level"), [(0.0, FIRST), (0.03, FIRST), (-0.03, FIRST), (0.08, INTERMEDIATE),
                                              (-0.08, INTERMEDIATE)])
def test_spine_shift(shift, level):
    masks, torso = phantom_masks(512, spine_shift=shift, clavicles=False)
    result = assess(detections(masks, torso))
    assert result.test("C6").value == pytest.approx(abs(spine_offset_loop(masks["spine"])), abs=1e-12)
    assert result.test("C6_signed").value == pytest.approx(spine_offset_loop(masks["spine"]), abs=1e-12)
    assert result.test("C6").value == pytest.approx(abs(shift), abs=0.005)
    assert np.sign(result.test("C6_signed").value) == np.sign(shift)
    assert result.level == level
    if level == INTERMEDIATE:
        assert result.rule == "R5" and len(result.reasons) == 1 and result.reasons[0].startswith("spine:")
        assert "offset from the image centreline 0.080 > 0.045" in result.reasons[0]
        assert ("patient left" if shift > 0 else "patient right") in result.test("C6").quantity


def test_spine_offset_of_an_irregular_spine():
    rng = np.random.default_rng(3)
    masks, torso = phantom_masks(256)
    spine = np.zeros_like(masks["spine"])
    for row in range(40, 220):
        start = int(rng.integers(110, 140))
        spine[row, start:start + int(rng.integers(4, 20))] = True
    masks["spine"] = spine
    assert assess(detections(masks, torso)).test("C6_signed").value == pytest.approx(spine_offset_loop(spine), 1e-12)


@pytest.mark.parametrize(("weighted", "level", "rule"), [(True, SECOND, "R6"), (False, INTERMEDIATE, "R5")])
def test_scapula_and_spine_fail_together(weighted, level, rule):
    masks, torso = phantom_masks(512, scapula_shift=0.12, spine_shift=0.08)
    result = assess(detections(masks, torso), Thresholds(weighted=weighted))
    assert (result.level, result.rule) == (level, rule)
    assert any(r.startswith("scapula:") for r in result.reasons) and any(r.startswith("spine:") for r in result.reasons)
    assert result.disposition == ("rescan recommended" if level == SECOND else "usable")


# ---------------------------------------------------------------------------------------------------------------
# C4: lung field (item 3)
# ---------------------------------------------------------------------------------------------------------------

def test_lung_margins_match_recomputation():
    masks, torso = phantom_masks(512)
    result = assess(detections(masks, torso))
    expected = margins_loop(masks["lung_right"] | masks["lung_left"])
    for side in ("top", "bottom", "left", "right"):
        assert result.test(f"C4_{side}").value == pytest.approx(expected[side], abs=1e-12)
    assert result.test("C4_top").value == pytest.approx(0.22, abs=0.003)
    assert result.test("C4_bottom").value == pytest.approx(0.26, abs=0.003)
    assert result.test("C4_left").value == pytest.approx(0.21, abs=0.003)
    assert "patient right" in result.test("C4_left").quantity and "patient left" in result.test("C4_right").quantity


def _cropped(masks, torso, top_fraction):
    start = int(round(top_fraction * torso.shape[0]))
    return {name: mask[start:] for name, mask in masks.items()}, torso[start:]


def test_crop_at_the_top_gives_second_level():
    masks, torso = phantom_masks(512)
    result = assess(detections(*_cropped(masks, torso, 0.21)))
    assert result.test("C4_top").value == pytest.approx(0.013, abs=0.003)
    assert (result.level, result.rule) == (SECOND, "R2")
    assert result.reasons[0].startswith("lung:") and "top" in result.reasons[0]
    assert result.findings == () and result.disposition == "rescan recommended"
    mild = assess(detections(*_cropped(masks, torso, 0.10)))
    assert mild.level == FIRST and mild.test("C4_top").value == pytest.approx(0.12 / 0.90, abs=0.005)


def test_lung_cut_at_the_side_and_one_lung_missing():
    masks, torso = phantom_masks(512)
    cut = {name: mask[:, 120:] for name, mask in masks.items()}
    result = assess(detections(cut, torso[:, 120:]))
    assert result.test("C4_left").value == 0.0 and result.level == SECOND
    one = {name: mask for name, mask in masks.items() if name != "lung_left"}
    result = assess(detections(one, torso))
    assert result.level == SECOND and not result.test("C4_both_lungs").passed
    assert any("left lung is missing" in r for r in result.reasons)


# ---------------------------------------------------------------------------------------------------------------
# C5: foreign objects (item 4; claim 9 vs ¶0064)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fo", "level", "rule"), [((0.30, 0.45, 0.012), SECOND, "R3"),   # in the right lung
                                                   ((0.12, 0.10, 0.012), INTERMEDIATE, "R4"),  # on the shoulder
                                                   (None, FIRST, "R1")])
def test_foreign_object_inside_outside_none(fo, level, rule):
    masks, torso = phantom_masks(512, fo=fo)
    result = assess(detections(masks, torso, fo_confidence=0.9))
    assert (result.level, result.rule) == (level, rule)
    assert result.test("C5").value == (0.9 if fo else 0.0)
    assert result.test("fo_inside_lung").value == (1.0 if rule == "R3" else 0.0)
    if fo is not None:
        where = "inside the lung" if rule == "R3" else "outside the lung"
        assert result.reasons == (f"foreign object: confidence 0.900 > 0.5 (foreign object {where}) "
                                  f"{EXPERIMENTAL_LABEL}",)
    default = assess_as_shipped(detections(masks, torso, fo_confidence=0.9))  # withheld: synthetic only
    assert (default.level, default.rule) == (FIRST, "R1") and default.reasons == ()
    assert "C5" not in [test.id for test in default.tests] and "foreign objects" in default.notes[0]


def test_foreign_object_confidence_tie_rules_and_maximum():
    masks, torso = phantom_masks(512, fo=(0.30, 0.45, 0.012))
    assert assess(detections(masks, torso, fo_confidence=0.5)).level == FIRST  # tie passes
    assert assess(detections(masks, torso, fo_confidence=0.3)).test("fo_inside_lung").value == 0.0
    u, v = _grid(512)
    masks["foreign_object"] = masks["foreign_object"] | (np.hypot(u - 0.12, v - 0.10) <= 0.01)
    found = detections(masks, torso)
    found = replace(found, foreign_objects=(replace(found.foreign_objects[0], confidence=0.7),
                                            replace(found.foreign_objects[1], confidence=0.2)))
    result = assess(found)
    assert result.test("C5").value == 0.7 and result.level in (SECOND, INTERMEDIATE)
    inside = [f for f in found.foreign_objects if f.confidence == 0.7][0].box.centre[1] > 0.2 * 512
    assert result.level == (SECOND if inside else INTERMEDIATE)


def test_foreign_object_inside_rule_overlap():
    # a button on the lateral edge of the right lung: centre just outside the lung, most pixels inside
    masks, torso = phantom_masks(512, fo=(0.205, 0.48, 0.03))
    lungs = masks["lung_right"] | masks["lung_left"]
    fraction = (masks["foreign_object"] & lungs).sum() / masks["foreign_object"].sum()
    centre_rule = assess(detections(masks, torso))
    overlap_rule = assess(detections(masks, torso), Thresholds(fo_inside="overlap", fo_overlap_min=0.3))
    assert 0.3 < fraction < 0.5
    assert centre_rule.level == INTERMEDIATE and overlap_rule.level == SECOND
    assert assess(detections(masks, torso), Thresholds(fo_inside="overlap")).level == INTERMEDIATE


def test_grade_truth_table():
    """All 32 combinations of the reference decision function (digest §3.4)."""
    for lung in (True, False):
        for scapula in (True, False):
            for spine in (True, False):
                for fo in (True, False):
                    for inside in (True, False):
                        for weighted in (True, False):
                            level, rule = _grade(lung, scapula, spine, fo, inside, weighted)
                            if not lung:
                                expected = (SECOND, "R2")
                            elif not fo and inside:
                                expected = (SECOND, "R3")
                            elif scapula and spine and fo:
                                expected = (FIRST, "R1")
                            elif weighted and not scapula and not spine:
                                expected = (SECOND, "R6")
                            elif not fo:
                                expected = (INTERMEDIATE, "R4" if scapula and spine else "R4+R5")
                            else:
                                expected = (INTERMEDIATE, "R5")
                            assert (level, rule) == expected


# ---------------------------------------------------------------------------------------------------------------
# Findings (items 5-8)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("axis", "ctr", "flag"), [(0.10, 0.348, False), (0.13, 0.449, False), (0.18, 0.625, True)])
def test_cardiothoracic_ratio(axis, ctr, flag):
    masks, torso = phantom_masks(512, heart_axis=axis)
    result = assess(detections(masks, torso), spacing_mm=(0.7, 0.7))
    finding = result.finding("cardiothoracic_ratio")
    lungs = masks["lung_right"] | masks["lung_left"]
    assert finding.value == pytest.approx(extent(masks["heart"]) / extent(lungs), abs=1e-12)
    assert finding.value == pytest.approx(ctr, abs=0.01)
    assert finding.present is flag and finding.severity == ("cardiomegaly" if flag else "normal")
    assert finding.measurements["heart_width_px"] == pytest.approx(2 * axis * 512, abs=2)
    assert finding.measurements["lung_width_px"] == pytest.approx(0.58 * 512, abs=2)
    assert finding.measurements["heart_width_mm"] == pytest.approx(0.7 * finding.measurements["heart_width_px"])
    heart_line, lung_line = result.width_lines
    assert (heart_line.name, lung_line.name) == ("heart", "lungs")
    assert heart_line.length_px == finding.measurements["heart_width_px"]
    assert heart_line.row == pytest.approx(0.63 * 512, abs=1)
    assert heart_line.col_start == np.flatnonzero(masks["heart"].any(axis=0))[0]
    assert lung_line.length_px == finding.measurements["lung_width_px"]
    assert ("cardiomegaly" in finding.text) and (("no cardiomegaly" in finding.text) is not flag)


@pytest.mark.parametrize(("name", "make"), [("pneumothorax", lateral_part), ("effusion", basal_part)])
@pytest.mark.parametrize(("fraction", "severity"), [(0.05, "self-healing"), (0.25, "present, severity not graded"),
                                                    (0.50, "high-risk")])
def test_abnormal_part_ratio_and_severity(name, make, fraction, severity):
    masks, torso = phantom_masks(256)
    masks[name] = make(masks, fraction)
    result = assess(detections(masks, torso))
    finding = result.finding(name)
    assert finding.value == pytest.approx(fraction, abs=0.01)
    assert finding.severity == severity and finding.present
    other = "effusion" if name == "pneumothorax" else "pneumothorax"
    assert not result.finding(other).present and "no " in result.finding(other).text
    # a detector whose lung masks exclude the abnormal region gives the same ratio (denominator lungs ∪ abnormal)
    excluded = {key: (mask & ~masks[name] if key.startswith("lung") else mask) for key, mask in masks.items()}
    assert assess(detections(excluded, torso)).finding(name).value == pytest.approx(finding.value, abs=1e-12)


def test_second_level_has_no_findings_and_recommends_rescan():
    masks, torso = phantom_masks(512, heart_axis=0.18, fo=(0.30, 0.45, 0.012))
    masks["pneumothorax"] = lateral_part(masks, 0.5)
    result = assess(detections(masks, torso))
    assert result.level == SECOND and result.findings == () and result.width_lines == ()
    text = result.report_text()
    assert "rescan recommended" in text and "Not a diagnosis." in text
    assert "cardiothoracic" not in text and "pneumothorax" not in text
    assert not any(row["id"].startswith("F_") for row in result.table_rows())


# ---------------------------------------------------------------------------------------------------------------
# Invariance (item 10)
# ---------------------------------------------------------------------------------------------------------------

SWAP = {"lung_right": "lung_left", "lung_left": "lung_right", "scapula_right": "scapula_left",
        "scapula_left": "scapula_right", "clavicle_right": "clavicle_left", "clavicle_left": "clavicle_right"}


def _ratios(result):
    values = {t.id: t.value for t in result.tests}
    values.update({f.name: f.value for f in result.findings})
    return values


@pytest.mark.parametrize("shift", [0.08, 0.12])
def test_horizontal_flip(shift):
    masks, torso = phantom_masks(512, scapula_shift=shift, spine_shift=0.03, heart_axis=0.18)
    masks["effusion"] = basal_part(masks, 0.25)
    flipped = {SWAP.get(name, name): np.fliplr(mask) for name, mask in masks.items()}
    first, second = assess(detections(masks, torso)), assess(detections(flipped, np.fliplr(torso)))
    assert (first.level, first.rule) == (second.level, second.rule)
    a, b = _ratios(first), _ratios(second)
    for key in ("C1", "C2", "C3", "C4_top", "C4_bottom", "C6", "cardiothoracic_ratio", "effusion"):
        assert a[key] == pytest.approx(b[key], abs=1e-12), key
    assert a["C4_left"] == pytest.approx(b["C4_right"], abs=1e-12)
    assert a["C6_signed"] == pytest.approx(-b["C6_signed"], abs=1e-12)


def _with_pneumothorax(size, **options):
    masks, torso = phantom_masks(size, **options)
    u, _v = _grid(size)
    masks["pneumothorax"] = masks["lung_right"] & (u < 0.27)  # a lateral band of the right lung
    return masks, torso


def test_resize_512_to_256_keeps_ratios():
    """The same anatomy drawn on a 512 and a 256 raster (what a detector returns on the resized image)."""
    options = {"scapula_shift": 0.12, "spine_shift": 0.03, "heart_axis": 0.18}
    loose = Thresholds(t2=0.2, t3=0.1)
    big = _ratios(assess(detections(*_with_pneumothorax(512, **options)), loose))
    small = _ratios(assess(detections(*_with_pneumothorax(256, **options)), loose))
    for key in ("C1", "C2", "C3", "C4_top", "C4_bottom", "C4_left", "C4_right", "cardiothoracic_ratio",
                "pneumothorax"):
        assert small[key] == pytest.approx(big[key], rel=0.01), key
    assert small["C6"] == pytest.approx(big["C6"], abs=0.002)


# ---------------------------------------------------------------------------------------------------------------
# Missing objects, extensions, thresholds, outputs
# ---------------------------------------------------------------------------------------------------------------

def test_missing_objects():
    masks, torso = phantom_masks(256)
    no_lung = {k: m for k, m in masks.items() if not k.startswith("lung")}
    result = assess(detections(no_lung, torso))
    assert result.level == NOT_ASSESSABLE and result.tests == () and "frontal" in result.reasons[0]
    assert result.disposition.startswith("not assessable")
    no_spine = assess(detections({k: m for k, m in masks.items() if k != "spine"}, torso))
    assert no_spine.level == INTERMEDIATE and np.isnan(no_spine.test("C6").value)
    assert no_spine.reasons[0].startswith("spine:") and "not found" in no_spine.reasons[0]
    no_scapula = assess(detections({k: m for k, m in masks.items() if not k.startswith("scapula")}, torso))
    assert no_scapula.level == FIRST and no_scapula.test("scapula_found").value == 0.0
    assert no_scapula.test("C2").value == 0.0 and any("no scapula" in note for note in no_scapula.notes)
    no_body = assess(detections_from_masks(masks))  # no image, no body: whole image is the chest
    assert no_body.test("C3").value == pytest.approx(0.0) and no_body.level == FIRST
    assert not_assessable("why").reasons == ("why",)
    with pytest.raises(InputError):
        assess(masks)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        assess(detections(masks, torso), spacing_mm=(0.7, -1.0))


def test_extensions_are_labelled_and_never_change_the_level():
    masks, torso = phantom_masks(512)
    normal = assess(detections(masks, torso))
    ext = [t for t in normal.tests if t.extension]
    assert {t.id for t in ext} == {"X_rotation", "X_inspiration", "X_collimation_top", "X_collimation_bottom",
                                   "X_collimation_left", "X_collimation_right"}
    assert all(t.passed and not t.contributes_to_level for t in ext)
    assert normal.test("X_rotation").value == pytest.approx(0.0, abs=0.02)
    assert normal.test("X_inspiration").value == pytest.approx(0.52 / 0.58, abs=0.01)
    # rotation: the clavicle heads move relative to the spine
    for shift, passes in ((0.002, True), (0.005, False)):
        rotated = assess(detections(*phantom_masks(512, clavicle_shift=shift)))
        assert rotated.test("X_rotation").passed is passes and rotated.level == FIRST
        # medial capsule ends at u = 0.5 -+ 0.018 + shift: |dR - dL| / (dR + dL) = 2 shift / 0.036
        assert rotated.test("X_rotation").value == pytest.approx(2 * shift / 0.036, abs=0.03)
    # shallow inspiration and a field that is too wide (small lungs) -> extension failures only
    small = assess(detections(*phantom_masks(512, lung_axes=(0.10, 0.13))))
    assert not small.test("X_inspiration").passed and not small.test("X_collimation_top").passed
    assert small.level == FIRST and small.reasons == ()
    assert "not part of the patent's grade" in small.report_text()
    assert len(assess(detections(masks, torso), Thresholds(extensions=False)).tests) == len(normal.tests) - 6


def test_unvalidated_objects_are_withheld_by_default():
    """Validated or withheld: with a pneumothorax, an effusion, scapulae over the lungs and rotated clavicles on the
    masks, the default assessment tests, grades and reports none of them, and says so; turned on, every row, reason
    and finding they give is labelled experimental."""
    masks, torso = phantom_masks(512, scapula_shift=0.12, clavicle_shift=0.01)
    masks["pneumothorax"] = lateral_part(masks, 0.5)
    masks["effusion"] = basal_part(masks, 0.3)
    shipped = assess_as_shipped(detections(masks, torso))
    assert shipped.level == FIRST and shipped.reasons == ()
    assert [item.name for item in shipped.findings] == ["cardiothoracic_ratio"]
    assert not {test.object for test in shipped.tests} & {"scapula", "clavicle"}
    assert WITHHELD_NOTE in shipped.notes and "Turn on experimental objects" in shipped.report_text()
    shown = assess(detections(masks, torso))
    assert shown.level == INTERMEDIATE and shown.rule == "R5"
    assert all("[experimental" in reason for reason in shown.reasons)
    assert all("[experimental" in shown.finding(name).text for name in ("pneumothorax", "effusion"))
    assert all("[experimental" in test.quantity for test in shown.tests if test.object in ("scapula", "clavicle"))
    assert not shown.test("X_rotation").passed and WITHHELD_NOTE not in shown.notes


def test_threshold_profiles_and_json(tmp_path):
    assert thresholds_for() is THRESHOLD_PROFILES["default"]
    assert thresholds_for(view="AP").ctr == 0.55 and thresholds_for(view="pa").ctr == 0.50
    assert thresholds_for(view="AP", age="006Y").name == "paediatric"
    assert thresholds_for(age="006M").name == "infant" and thresholds_for(age=40, sex="F").name == "default"
    assert age_in_years("002W") == pytest.approx(14 / 365.25) and age_in_years(None) is None
    with pytest.raises(InputError):
        age_in_years("old")
    # the AP profile lifts the CTR limit: a 0.52 ratio is cardiomegaly on PA, not on AP
    masks, torso = phantom_masks(512, heart_axis=0.151)
    ctr_default = assess(detections(masks, torso)).finding("cardiothoracic_ratio")
    ctr_ap = assess(detections(masks, torso), thresholds_for(view="AP")).finding("cardiothoracic_ratio")
    assert 0.5 < ctr_default.value < 0.55 and ctr_default.present and not ctr_ap.present

    custom = Thresholds(name="site", to=0.06, t2=0.04, fo_inside="center", weighted=False)
    assert custom.fo_inside == "centre"
    path = custom.to_json(tmp_path / "t.json")
    assert Thresholds.from_json(path) == custom
    (tmp_path / "partial.json").write_text(json.dumps({"to": 0.05, "c1_enabled": True, "_comment": "x", "tc": 1}))
    partial = Thresholds.from_json(tmp_path / "partial.json")
    assert (partial.to, partial.c1_enabled, partial.t2, partial.tc) == (0.05, True, 0.05, 1.0)
    for bad in ({"to": -0.1}, {"t2": "high"}, {"weighted": 1}, {"nonsense": 1}, {"fo_inside": "edge"},
                {"pneumothorax_low": 0.5}, {"collimation_max_top": 0.01}, {"ctr": float("nan")}):
        with pytest.raises(InputError):
            Thresholds.from_dict(bad)
    with pytest.raises(InputError):
        Thresholds(d_left=0.6)
    (tmp_path / "broken.json").write_text("{to: ")
    with pytest.raises(FileFormatError):
        Thresholds.from_json(tmp_path / "broken.json")
    with pytest.raises(FileFormatError):
        Thresholds.from_json(tmp_path / "missing.json")


def test_outputs_dict_table_and_report():
    masks, torso = phantom_masks(512, spine_shift=0.08, heart_axis=0.18)
    masks["pneumothorax"] = lateral_part(masks, 0.5)
    result = assess(detections(masks, torso), spacing_mm=(0.7, 0.7))
    data = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert data["level"] == INTERMEDIATE and data["rule"] == "R5" and data["thresholds"]["to"] == 0.045
    rows = result.table_rows()
    assert all(tuple(row) == TABLE_COLUMNS for row in rows)
    ids = [row["id"] for row in rows]
    for expected in ("C1", "C2", "C3", "C4_top", "C4_bottom", "C4_left", "C4_right", "C5", "fo_inside_lung", "C6",
                     "overall_level", "F_heart_width", "F_lung_width", "F_ctr", "F_pneumothorax", "F_effusion"):
        assert expected in ids
    overall = rows[ids.index("overall_level")]
    assert overall["value"] == INTERMEDIATE and "R5" in overall["quantity"] and overall["pass"] is True
    assert rows[ids.index("F_ctr")]["pass"] is False and rows[ids.index("F_heart_width")]["quantity"].endswith("(mm)")
    json.dumps(rows, allow_nan=False)
    text = result.report_text()
    for words in ("INTERMEDIATE", "usable", "spine:", "cardiomegaly", "high-risk pneumothorax", "Not a diagnosis."):
        assert words in text
    clean = assess(detections(*phantom_masks(256)))
    assert "every quality test passes" in clean.report_text() and clean.disposition == "usable"


def test_reason_numbers_agree_with_their_comparison():
    from scanai.chest.assessment import compared

    assert compared(0.0197, "<", 0.02) == "0.0197 < 0.02"
    assert compared(0.04503, ">", 0.045) == "0.04503 > 0.045"
    assert compared(0.5, "<=", 0.5) == "0.500 <= 0.5"
    assert compared(0.8123, ">", 0.5) == "0.812 > 0.5"
