"""The patent's image metric from detection results: quality tests C1-C6, the three-level grade, and findings.

Pure numpy on a :class:`~scanai.chest.detection.Detections` object, so it runs on hand-made masks as well as on any
detector's output (US 2020/0211186 A1, claims 6, 8-10, 15-20; digest ``seed-003-chest-qc.md`` §3.3-3.5, §6.1, §7).

Image convention (as in :mod:`scanai.chest.detection`): (rows, cols), row 0 = head, column 0 = image left =
**patient right**. Continuous coordinates are pixel-edge units: pixel (r, c) covers [r, r+1) x [c, c+1), so the
image centreline is at W / 2 and a mask spanning columns c0..c1 is c1 + 1 - c0 pixels wide.

Quality tests (claim 6; a tie passes, as the claims say "smaller than or equal to"):

====  ===============  ==========================================================  ==========================
id    object           quantity                                                    passes if
====  ===============  ==========================================================  ==========================
C1    scapula          |S| / |chest|  (off by default: whole scapulae are ~4 %)     <= t1 (0.02)
C2    scapula          |S ∩ L| / |L|                                               <= t2 (0.05)
C3    scapula          |S ∩ L| / |chest|                                           <= t3 (0.015)
C4_*  lung             margin of the union box of both lungs to each image edge,   >= d_top, d_bottom (0.045),
                       divided by the image height (top, bottom) or width          d_left, d_right (0.02)
C5    foreign_object   maximum foreign-object confidence (0 when none)             <= tc (0.5)
C6    spine            |sum_k (x_k - W/2)| / (K W) over the spine centreline        <= to (0.045)
====  ===============  ==========================================================  ==========================

S = both scapulae, L = both lungs, chest = ``Detections.body`` (whole image when absent). The spine centreline is
the mean column (+0.5) of the spine mask in each row that has spine pixels. ``fo_inside_lung`` (claim 9 vs 10):
a foreign object with confidence > tc lies inside the lung when its box centre falls in the lung mask (rule
"centre", default) or when at least ``fo_overlap_min`` of its pixels are lung pixels (rule "overlap").

Grade (digest §3.4, claims 9-10 and ¶0132): R2 lung fails -> SECOND; R3 foreign object fails inside the lung ->
SECOND (claim 9 wins over ¶0064); R1 everything passes -> FIRST; R6 (``weighted``) scapula and spine both fail ->
SECOND; otherwise INTERMEDIATE by R4 (foreign object outside the lung) and/or R5 (scapula or spine fails).

Findings, only for FIRST or INTERMEDIATE images (¶0101, ¶0150): the cardiothoracic ratio (widest horizontal extent
of the heart / of the union of both lungs, FIG. 13; > ctr flags cardiomegaly), and for each abnormal part
(pneumothorax, effusion) the decision rule of :mod:`scanai.chest.abnormal`: only regions in the plausible place
(inside the thorax; a pneumothorax on the lateral or apical pleura, an effusion at the lung base) whose extent and
confidence exceed ``<part>_min_ratio`` / ``<part>_min_confidence`` count, and ratio = |kept| / |L ∪ A| (the lung
masks include the abnormal region; the union guards against a detector whose lungs exclude it): > high "high-risk",
< low "self-healing", in between "present, severity not graded" (digest §7.9). An abnormal part with no region that
counts gives a finding with ``present=False`` ("none detected", saying how many candidate regions were discarded and
why), so the report shows it was looked for.

Our extensions (not in the patent; ``extension=True``, never part of the grade): rotation (asymmetry of the
medial clavicle ends about the spine midline), inspiration (lung-field height / width), collimation upper bound
(lung box margins too large = field too wide), each reported as a test row and a note.

Validated or withheld: the objects in :data:`~scanai.chest.detection.EXPERIMENTAL` (scapulae, clavicles,
foreign objects, pneumothorax, effusion) are not validated on real radiographs. Unless ``Thresholds.experimental``
is on they are dropped before any test: no scapula test (C1-C3 leave the grade, so R5/R6 see only the spine), no
foreign-object test (C5: R3/R4 cannot occur), no rotation check, no pneumothorax or effusion finding, and a note
says so. Turned on, each of their rows, reasons and findings is
labelled "experimental".

Where each part lives (all re-exported here): :mod:`scanai.chest.thresholds` (the thresholds and profiles),
:mod:`scanai.chest.measurements` (the formulas), :mod:`scanai.chest.assessment` (the result types and the report);
the test rows, the grade, the findings and :func:`assess` are here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from scanai.chest.abnormal import decide
from scanai.chest.assessment import (  # noqa: F401  (re-exported)
    EXPERIMENTAL_LABEL,
    EXPERIMENTAL_TEST_OBJECTS,
    FIRST,
    INTERMEDIATE,
    LEVELS,
    NOT_A_DIAGNOSIS,
    NOT_ASSESSABLE,
    NOT_ASSESSABLE_DISPOSITION,
    RESCAN,
    RULES,
    SECOND,
    SIDE_WORDS,
    TABLE_COLUMNS,
    USABLE,
    Assessment,
    Finding,
    TestResult,
    WidthLine,
    _failure_text,
    compared,
    not_assessable,
)
from scanai.chest.detection import EXPERIMENTAL, Detections
from scanai.chest.measurements import (  # noqa: F401  (re-exported)
    abnormal_ratio,
    cardiothoracic_ratio,
    chest_mask,
    clavicle_rotation,
    fo_is_inside_lung,
    foreign_object_confidence,
    foreign_objects_inside_lung,
    horizontal_extent,
    lung_aspect,
    lung_box,
    lung_margins,
    lungs_under_object,
    scapula_mask,
    scapula_ratios,
    spine_centreline,
    spine_offset,
    width_line,
)
from scanai.chest.thresholds import (  # noqa: F401  (re-exported)
    FO_INSIDE_RULES,
    SIDES,
    THRESHOLD_PROFILES,
    Thresholds,
    age_in_years,
    thresholds_for,
)
from scanai.core.errors import InputError

ABNORMAL_WORDS = {"pneumothorax": "pneumothorax", "effusion": "pleural effusion"}
#: The note of an assessment made with experimental objects off (the default).
WITHHELD_NOTE = ("Scapulae, clavicles, foreign objects, pneumothorax and pleural effusion were not assessed: their "
                 "detection is experimental (not validated on real radiographs), so the scapula tests C1-C3, the "
                 "foreign-object test C5, the rotation check and the pneumothorax / effusion findings are off. Turn "
                 "on experimental objects to see them.")


def _scapula_tests(detections: Detections, t: Thresholds, notes: list[str]) -> list[TestResult]:
    c1, c2, c3 = scapula_ratios(detections)
    found = [side for side in ("right", "left") if detections.found(f"scapula_{side}")]
    tests = [TestResult("scapula_found", "scapula", "scapulae found (patient sides: "
                        + (", ".join(found) if found else "none; the overlap counts as 0 and the scapula passes") + ")",
                        float(len(found)), "info", 0.0, True, False)]
    if not found:
        notes.append("scapula: no scapula was found, so its overlap with the lung is taken as 0 (pass).")
    if detections.body is None:
        notes.append("No body mask was given: the whole image is the chest area of C1 and C3.")
    specs = (("C1", "first ratio (scapula area / chest area)", c1, t.t1, t.c1_enabled),
             ("C2", "second ratio (scapula-lung overlap / lung area)", c2, t.t2, t.c2_enabled),
             ("C3", "third ratio (scapula-lung overlap / chest area)", c3, t.t3, t.c3_enabled))
    for test_id, quantity, value, threshold, enabled in specs:
        tests.append(TestResult(test_id, "scapula", quantity + ("" if enabled else " [disabled]"), value, "<=",
                                threshold, bool(value <= threshold), enabled))
    return [replace(test, quantity=f"{test.quantity} {EXPERIMENTAL_LABEL}") for test in tests]


def _lung_tests(detections: Detections, t: Thresholds) -> list[TestResult]:
    margins = lung_margins(detections)
    assert margins is not None
    tests = []
    for side in SIDES:
        threshold = getattr(t, f"d_{side}")
        quantity = f"{side} margin of the lung box to the {SIDE_WORDS[side]} edge / image " + (
            "height" if side in ("top", "bottom") else "width")
        tests.append(TestResult(f"C4_{side}", "lung", quantity, margins[side], ">=", threshold,
                                bool(margins[side] >= threshold), True))
    found = [side for side in ("right", "left") if detections.found(f"lung_{side}")]
    if len(found) < 2:
        missing = "left" if found == ["right"] else "right"
        quantity = (f"only the {found[0]} lung was found; the {missing} lung is missing (cut off, opaque or not "
                    "detected), so the lung field is not completely depicted")
        tests.append(TestResult("C4_both_lungs", "lung", quantity, float(len(found)), ">=", 2.0, False, True))
    return tests


def _foreign_object_tests(detections: Detections, t: Thresholds) -> tuple[list[TestResult], bool]:
    confidence = foreign_object_confidence(detections)
    count = len(detections.foreign_objects)
    inside = foreign_objects_inside_lung(detections, t)
    rule = ("box centre in the lung mask" if t.fo_inside == "centre"
            else f">= {t.fo_overlap_min:g} of its pixels in the lung")
    tests = [TestResult("C5", "foreign_object", f"maximum foreign-object confidence ({count} found)", confidence, "<=",
                        t.tc, bool(confidence <= t.tc), True),
             TestResult("fo_inside_lung", "foreign_object",
                        f"a foreign object with confidence > {t.tc:g} lies inside the lung ({rule}); 1 = yes",
                        1.0 if inside else 0.0, "==", 0.0, not inside, True)]
    return tests, inside


def _spine_test(detections: Detections, t: Thresholds) -> list[TestResult]:
    offset = spine_offset(detections)
    if offset is None:  # the failed C6 row's reason says it; no separate note
        return [TestResult("C6", "spine", "spine not found: its offset from the image centreline cannot be "
                           "evaluated (C6 counts as failed)", float("nan"), "<=", t.to, False, True)]
    toward = "image right (patient left)" if offset > 0 else "image left (patient right)"
    quantity = f"offset of the spine centreline from the image centreline, toward the {toward}"
    return [TestResult("C6", "spine", quantity, abs(offset), "<=", t.to, bool(abs(offset) <= t.to), True),
            TestResult("C6_signed", "spine", "signed spine offset (positive = toward image right = patient left)",
                       offset, "info", t.to, bool(abs(offset) <= t.to), False)]


def _extension_tests(detections: Detections, t: Thresholds, notes: list[str]) -> list[TestResult]:
    tests = []
    rotation = clavicle_rotation(detections) if t.experimental else None
    if t.experimental and rotation is None:
        notes.append("extension: rotation not evaluated (needs both clavicles and the spine, medial ends apart).")
    elif rotation is not None:
        asym, d_right, d_left = rotation
        tests.append(TestResult(
            "X_rotation", "clavicle", f"clavicle-head asymmetry |dR - dL| / (dR + dL) about the spine midline "
            f"(dR = {d_right:.1f} px patient right, dL = {d_left:.1f} px patient left) {EXPERIMENTAL_LABEL}",
            abs(asym), "<=", t.rotation_max, bool(abs(asym) <= t.rotation_max), False, True))
    aspect = lung_aspect(detections)
    if aspect is not None:
        tests.append(TestResult("X_inspiration", "lung", "lung-field height / width (union box of both lungs)",
                                aspect, ">=", t.inspiration_min, bool(aspect >= t.inspiration_min), False, True))
    margins = lung_margins(detections) or {}
    for side, margin in margins.items():
        limit = getattr(t, f"collimation_max_{side}")
        tests.append(TestResult(f"X_collimation_{side}", "lung", f"{side} margin of the lung box to the "
                                f"{SIDE_WORDS[side]} edge (upper bound: field not too wide)", margin, "<=", limit,
                                bool(margin <= limit), False, True))
    notes += [f"extension (not part of the grade): {_failure_text(test)}" for test in tests if not test.passed]
    return tests


def _grade(lung_ok: bool, scapula_ok: bool, spine_ok: bool, fo_ok: bool, fo_inside: bool,
           weighted: bool) -> tuple[str, str]:
    """(level, rule) by the digest's reference decision function (§3.4)."""
    if not lung_ok:
        return SECOND, "R2"
    if not fo_ok and fo_inside:
        return SECOND, "R3"
    if scapula_ok and spine_ok and fo_ok:
        return FIRST, "R1"
    if weighted and not scapula_ok and not spine_ok:
        return SECOND, "R6"
    if not fo_ok:
        return INTERMEDIATE, "R4" if scapula_ok and spine_ok else "R4+R5"
    return INTERMEDIATE, "R5"


def _findings(detections: Detections, t: Thresholds, spacing_mm: tuple[float, float] | None
              ) -> tuple[list[Finding], list[WidthLine]]:
    findings, lines = [], []
    ctr = cardiothoracic_ratio(detections)
    if ctr is None:
        findings.append(Finding("cardiothoracic_ratio", float("nan"), t.ctr, False, "not evaluated",
                                "cardiothoracic ratio not computed: the heart was not found"))
    else:
        ratio, heart_px, lung_px = ctr
        measurements = {"heart_width_px": float(heart_px), "lung_width_px": float(lung_px)}
        widths = f"heart width {heart_px} px, lung width {lung_px} px"
        if spacing_mm is not None:
            measurements["heart_width_mm"] = heart_px * spacing_mm[1]
            measurements["lung_width_mm"] = lung_px * spacing_mm[1]
            widths = (f"heart width {measurements['heart_width_mm']:.1f} mm, "
                      f"lung width {measurements['lung_width_mm']:.1f} mm")
        present = bool(ratio > t.ctr)
        severity = "cardiomegaly" if present else "normal"
        text = (f"cardiothoracic ratio {compared(ratio, '>' if present else '<=', t.ctr)}: "
                f"{'cardiomegaly (enlarged heart)' if present else 'no cardiomegaly'} ({widths})")
        findings.append(Finding("cardiothoracic_ratio", ratio, t.ctr, present, severity, text, measurements))
        lines += [width_line("heart", detections.mask("heart")), width_line("lungs", detections.lungs())]
    for name, words in ABNORMAL_WORDS.items() if t.experimental else ():
        findings.append(_abnormal_finding(detections, t, name, words))
    return findings, [line for line in lines if line is not None]


def _abnormal_finding(detections: Detections, t: Thresholds, name: str, words: str) -> Finding:
    """The finding of abnormal part ``name`` by the decision rule of :mod:`scanai.chest.abnormal`."""
    high, low = getattr(t, f"{name}_high"), getattr(t, f"{name}_low")
    decision = decide(detections, name, getattr(t, f"{name}_min_ratio"), getattr(t, f"{name}_min_confidence"))
    ratio = decision.ratio
    measurements = {"abnormal_px": float(decision.kept_px), "lung_px": float(decision.field_px),
                    "low_threshold": low, "high_threshold": high, "min_ratio": decision.min_ratio,
                    "min_confidence": decision.min_confidence, "candidate_regions": float(len(decision.regions)),
                    "detected_px": float(sum(region.pixels for region in decision.regions))}
    if not decision.present:
        why = f" ({decision.summary()})" if decision.regions else ""
        return Finding(name, 0.0, high, False, "none", f"no {words} detected{why} {EXPERIMENTAL_LABEL}",
                       measurements)
    if ratio > high:
        severity, text = "high-risk", f"high-risk {words}"
    elif ratio < low:
        severity, text = "self-healing", f"self-healing {words}"
    else:
        severity, text = "present, severity not graded", f"{words} present, severity not graded"
    text += (f": {100 * ratio:.1f} % of the lung field (high-risk > {100 * high:g} %, "
             f"self-healing < {100 * low:g} %) {EXPERIMENTAL_LABEL}")
    return Finding(name, ratio, high, True, severity, text, measurements)


def _check_inputs(detections: Detections, spacing_mm: tuple[float, float] | None) -> tuple[float, float] | None:
    if not isinstance(detections, Detections):
        raise InputError(f"assess needs a Detections object, got {type(detections).__name__}.",
                         "Run a detector, or wrap masks with scanai.chest.detection.detections_from_masks.")
    if spacing_mm is None:
        return None
    spacing = tuple(float(s) for s in np.ravel(spacing_mm))
    if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"The pixel spacing must be two positive numbers of mm (row, column), got {spacing_mm}.",
                         "Leave it out when the pixel size is unknown; widths are then given in pixels.")
    return spacing  # type: ignore[return-value]


NO_LUNG = ("No lung was found, so the patent's quality tests cannot be applied. Check that this is a frontal (PA or "
           "AP) chest radiograph with the lungs in the field; if it is, the detector failed: try the other detector "
           "backend or review the image by eye.")


def assess(detections: Detections, thresholds: Thresholds | None = None,
           spacing_mm: tuple[float, float] | None = None) -> Assessment:
    """Grade a radiograph from its detections (claims 6, 9, 10) and, when usable, compute findings (claims 16-20).

    detections:  what a detector found (masks on the image grid; ``body`` is the chest area).
    thresholds:  a :class:`Thresholds` (default: the digest's defaults); see :func:`thresholds_for`.
    spacing_mm:  (row, column) pixel size in mm, used only to give the CTR widths in mm.
    Returns an :class:`Assessment`; NOT ASSESSABLE when no lung was found.
    """
    spacing = _check_inputs(detections, spacing_mm)
    t = thresholds if thresholds is not None else Thresholds()
    if not isinstance(t, Thresholds):
        raise InputError(f"thresholds must be a Thresholds object, got {type(t).__name__}.",
                         "Use scanai.chest.metrics.Thresholds or thresholds_for(...).")
    if not detections.lungs().any():
        return not_assessable(NO_LUNG, t)
    notes: list[str] = []
    if not t.experimental:
        detections = detections.without(EXPERIMENTAL)
        notes.append(WITHHELD_NOTE)
    scapula = _scapula_tests(detections, t, notes) if t.experimental else []
    lung = _lung_tests(detections, t)
    foreign, fo_inside = _foreign_object_tests(detections, t) if t.experimental else ([], False)
    spine = _spine_test(detections, t)
    extensions = _extension_tests(detections, t, notes) if t.extensions else []

    lung_ok = all(test.passed for test in lung)
    scapula_ok = all(test.passed for test in scapula if test.contributes_to_level)
    spine_ok = spine[0].passed
    fo_ok = all(test.passed for test in foreign)
    level, rule = _grade(lung_ok, scapula_ok, spine_ok, fo_ok, fo_inside, t.weighted)

    reasons = [_failure_text(test) for test in lung if not test.passed]
    if not fo_ok:
        where = "inside the lung" if fo_inside else "outside the lung"
        reasons.append(f"foreign object: confidence {compared(foreign[0].value, '>', t.tc)} (foreign object {where})"
                       f" {EXPERIMENTAL_LABEL}")
    reasons += [_failure_text(test) for test in scapula if test.contributes_to_level and not test.passed]
    reasons += [_failure_text(test) for test in spine[:1] if not test.passed]

    findings: list[Finding] = []
    lines: list[WidthLine] = []
    if level in (FIRST, INTERMEDIATE):
        findings, lines = _findings(detections, t, spacing)
    disposition = RESCAN if level == SECOND else USABLE
    return Assessment(level, rule, tuple(reasons), tuple(scapula + lung + foreign + spine + extensions),
                      tuple(findings), tuple(lines), disposition, tuple(notes), t)
