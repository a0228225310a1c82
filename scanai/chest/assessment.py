"""The chest metric's result types: test rows, findings, width lines and the :class:`Assessment` with its report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from scanai.chest.thresholds import Thresholds

LEVELS = ("FIRST", "INTERMEDIATE", "SECOND")
FIRST, INTERMEDIATE, SECOND = LEVELS
NOT_ASSESSABLE = "NOT ASSESSABLE"
USABLE = "usable"
RESCAN = "rescan recommended"
NOT_ASSESSABLE_DISPOSITION = "not assessable: review the image"
NOT_A_DIAGNOSIS = ("Not a diagnosis. These are automated measurements for image quality control; a qualified reader "
                   "must interpret the image.")
#: Columns of :meth:`Assessment.table_rows` (digest §6.2).
TABLE_COLUMNS = ("id", "object", "quantity", "value", "comparator", "threshold", "pass", "contributes_to_level")
#: Which patient side each image edge is on (column 0 = image left = patient right).
SIDE_WORDS = {"top": "top (head)", "bottom": "bottom (feet)", "left": "image left = patient right",
              "right": "image right = patient left"}
#: The label every row, reason and finding of an experimental object carries when experimental objects are on.
EXPERIMENTAL_LABEL = "[experimental: not validated on real radiographs]"
#: The objects of the test rows computed from experimental objects (C1-C3 and the rotation check).
EXPERIMENTAL_TEST_OBJECTS = ("scapula", "clavicle", "foreign_object")
#: What each grading rule says (digest §3.4).
RULES = {
    "R1": "all tests pass (claim 9)",
    "R2": "the lung field fails C4 (claim 9)",
    "R3": "a foreign object lies inside the lung (claim 9; ¶0064's 'intermediate' is overruled)",
    "R4": "a foreign object outside the lung (claim 10)",
    "R5": "the scapula or the spine fails (claim 10)",
    "R4+R5": "a foreign object outside the lung and the scapula or the spine fails (claim 10)",
    "R6": "both the scapula and the spine fail, weighted rule (¶0132)",
    "NA": "not assessable",
}


@dataclass(frozen=True)
class TestResult:
    """One quality test: ``value`` ``comparator`` ``threshold`` -> ``passed``. ``value`` is NaN when it could not be
    measured (then ``passed`` is False and ``quantity`` says why). ``contributes_to_level`` is False for
    informational rows and for our extensions (``extension=True``)."""

    __test__ = False  # not a pytest test class

    id: str
    object: str
    quantity: str
    value: float
    comparator: str
    threshold: float
    passed: bool
    contributes_to_level: bool
    extension: bool = False


@dataclass(frozen=True)
class WidthLine:
    """A horizontal measurement line of the cardiothoracic ratio (FIG. 13 lines 1330/1340), in pixel-edge
    coordinates: from column ``col_start`` (the mask's leftmost column) to ``col_end`` (its rightmost column + 1) at
    ``row`` (the mask's centroid row + 0.5). Subtract 0.5 for pixel-index (pixel-centre) coordinates."""

    name: str
    row: float
    col_start: float
    col_end: float

    @property
    def length_px(self) -> float:
        """Length in pixels (the width it measures)."""
        return self.col_end - self.col_start


@dataclass(frozen=True)
class Finding:
    """A clinical finding (claims 15-20): ``value`` (ratio), the ``threshold`` it is compared with (the "high" one
    for abnormal parts), whether the condition is ``present``, a ``severity`` word and a sentence. ``measurements``
    holds the widths (px, and mm when the pixel size is known) or pixel counts behind the value."""

    name: str
    value: float
    threshold: float
    present: bool
    severity: str
    text: str
    measurements: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Assessment:
    """The image metric: quality ``level`` (FIRST / INTERMEDIATE / SECOND or NOT ASSESSABLE), the ``rule`` that
    fired (R1-R6, see :data:`RULES`), one ``reasons`` sentence per failed test, every test row, the findings and
    their width lines (empty unless the level is FIRST or INTERMEDIATE), the ``disposition`` ("usable" or "rescan
    recommended"), ``notes`` (missing objects, failed extension checks) and the thresholds used."""

    level: str
    rule: str
    reasons: tuple[str, ...]
    tests: tuple[TestResult, ...]
    findings: tuple[Finding, ...]
    width_lines: tuple[WidthLine, ...]
    disposition: str
    notes: tuple[str, ...] = ()
    thresholds: Thresholds | None = None

    @property
    def usable(self) -> bool:
        """Whether the image may be used for findings (FIRST or INTERMEDIATE)."""
        return self.level in (FIRST, INTERMEDIATE)

    def test(self, test_id: str) -> TestResult:
        """The test row with this id (KeyError when absent)."""
        for result in self.tests:
            if result.id == test_id:
                return result
        raise KeyError(test_id)

    def finding(self, name: str) -> Finding:
        """The finding with this name (KeyError when absent)."""
        for result in self.findings:
            if result.name == name:
                return result
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return _json_ready({
            "level": self.level, "rule": self.rule, "rule_text": RULES.get(self.rule, ""),
            "reasons": list(self.reasons), "disposition": self.disposition,
            "tests": [asdict(test) for test in self.tests],
            "findings": [asdict(finding) for finding in self.findings],
            "width_lines": [asdict(line) for line in self.width_lines],
            "notes": list(self.notes),
            "thresholds": self.thresholds.as_dict() if self.thresholds is not None else None,
            "statement": NOT_A_DIAGNOSIS,
        })

    def table_rows(self) -> list[dict[str, Any]]:
        """One dict per test, an ``overall_level`` row, and finding rows (keys :data:`TABLE_COLUMNS`; NaN -> None).
        For findings, ``pass`` means "no abnormal finding"."""
        rows = [{"id": t.id, "object": t.object, "quantity": t.quantity + (" [extension]" if t.extension else ""),
                 "value": t.value, "comparator": t.comparator, "threshold": t.threshold, "pass": t.passed,
                 "contributes_to_level": t.contributes_to_level} for t in self.tests]
        rows.append({"id": "overall_level", "object": "image",
                     "quantity": f"image quality level, rule {self.rule}: {RULES.get(self.rule, '')}",
                     "value": self.level, "comparator": "", "threshold": "", "pass": self.usable,
                     "contributes_to_level": True})
        for finding in self.findings:
            rows += _finding_rows(finding)
        return _json_ready(rows)

    def report_text(self) -> str:
        """Plain-text report: level and rule, explanation, disposition, findings (not for SECOND), our extension
        checks, notes, and the statement that this is not a diagnosis."""
        lines = [f"Image quality: {self.level}" + (f" (rule {self.rule}: {RULES[self.rule]})"
                                                   if self.rule in RULES and self.rule != "NA" else "")]
        lines.append(f"Disposition: {self.disposition}")
        if self.reasons:
            lines.append("Explanation:")
            lines += [f"  - {reason}" for reason in self.reasons]
        elif self.level == FIRST:
            lines.append("Explanation: every quality test passes.")
        if self.usable:
            lines.append("Findings:")
            lines += [f"  - {finding.text}" for finding in self.findings] or ["  - none computed"]
        elif self.level == SECOND:
            lines.append("Findings are not reported: a second-level image should not be used for them (¶0150).")
        extension_fails = [t for t in self.tests if t.extension and not t.passed]
        if extension_fails:
            lines.append("Our additional checks (not part of the patent's grade):")
            lines += [f"  - {_failure_text(t)}" for t in extension_fails]
        other_notes = [note for note in self.notes if not note.startswith("extension (")]
        if other_notes:
            lines.append("Notes:")
            lines += [f"  - {note}" for note in other_notes]
        lines.append(NOT_A_DIAGNOSIS)
        return "\n".join(lines) + "\n"


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finding_rows(finding: Finding) -> list[dict[str, Any]]:
    rows = []
    if finding.name == "cardiothoracic_ratio":
        m = finding.measurements
        for part, obj in (("heart", "heart"), ("lung", "lung")):
            if f"{part}_width_px" in m:
                mm = m.get(f"{part}_width_mm")
                rows.append({"id": f"F_{part}_width", "object": obj,
                             "quantity": f"maximum horizontal width of the {'heart' if part == 'heart' else 'lungs'}"
                                         + (" (mm)" if mm is not None else " (px)"),
                             "value": mm if mm is not None else m[f"{part}_width_px"], "comparator": "",
                             "threshold": None, "pass": None, "contributes_to_level": False})
        rows.append({"id": "F_ctr", "object": "heart",
                     "quantity": f"cardiothoracic ratio = heart width / lung width: {finding.severity}",
                     "value": finding.value, "comparator": ">", "threshold": finding.threshold,
                     "pass": not finding.present, "contributes_to_level": False})
    else:
        low = finding.measurements.get("low_threshold", float("nan"))
        rows.append({"id": f"F_{finding.name}", "object": finding.name,
                     "quantity": f"{finding.name} pixels / (lungs ∪ {finding.name}) pixels: {finding.severity} "
                                 f"(high-risk > {finding.threshold:g}, self-healing < {low:g})",
                     "value": finding.value, "comparator": ">", "threshold": finding.threshold,
                     "pass": not finding.present, "contributes_to_level": False})
    return rows


def _failure_text(test: TestResult) -> str:
    """The explanation sentence of a failed test (¶0133: the object and the failing value), e.g. "scapula: second
    ratio 0.083 > 0.05 (scapula overlaps lung)"."""
    subject = test.object.replace("_", " ")
    if test.id == "C4_both_lungs" or not math.isfinite(test.value):
        return f"{subject}: {test.quantity}"
    key = test.id.rsplit("_", 1)[0] if test.id.startswith(("C4_", "X_collimation_")) else test.id
    side = test.id.rsplit("_", 1)[-1]
    name = _SHORT.get(key, test.quantity).format(side=side)
    why = _WHY.get(key, "").format(side=SIDE_WORDS.get(side, side))
    if test.id == "C6":
        why += " toward the " + ("image right (patient left)" if "patient left" in test.quantity
                                 else "image left (patient right)")
    op = {"<=": ">", ">=": "<"}.get(test.comparator, "vs")
    label = f" {EXPERIMENTAL_LABEL}" if test.object in EXPERIMENTAL_TEST_OBJECTS else ""
    return f"{subject}: {name} {compared(test.value, op, test.threshold)}" + (f" ({why})" if why else "") + label


def compared(value: float, op: str, threshold: float) -> str:
    """``"VALUE OP THRESHOLD"`` with VALUE printed to 3 decimals, or as many more (up to 9) as it takes for the
    printed numbers to agree with ``op`` ('>', '<', '<=', '>='): "0.0197 < 0.02", never "0.020 < 0.02"."""
    holds = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__}.get(op)
    for decimals in range(3, 10):
        text = f"{value:.{decimals}f}"
        if holds is None or holds(float(text), float(f"{threshold:g}")):
            break
    return f"{text} {op} {threshold:g}"


_SHORT = {"C1": "first ratio", "C2": "second ratio", "C3": "third ratio", "C4": "{side} margin",
          "C6": "offset from the image centreline", "X_rotation": "clavicle-head asymmetry",
          "X_inspiration": "lung-field height / width", "X_collimation": "{side} margin"}
_WHY = {
    "C1": "scapula too large within the chest",
    "C2": "scapula overlaps lung",
    "C3": "scapula-lung overlap too large for the chest",
    "C4": "lung field cut off or too close to the {side} edge",
    "C6": "spine off the image centre",
    "X_rotation": "patient rotated",
    "X_inspiration": "lung field short for its width: shallow inspiration?",
    "X_collimation": "field too wide at the {side} edge",
}


def not_assessable(reason: str, thresholds: Thresholds | None = None) -> Assessment:
    """An assessment that grades nothing: level NOT ASSESSABLE with ``reason`` as its explanation."""
    return Assessment(NOT_ASSESSABLE, "NA", (reason,), (), (), (), NOT_ASSESSABLE_DISPOSITION, (), thresholds)
