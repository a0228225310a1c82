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
(pneumothorax, effusion) ratio = |A| / |L ∪ A| (the lung masks include the abnormal region; the union guards against
a detector whose lungs exclude it): > high "high-risk", < low "self-healing", in between "present, severity not
graded" (digest §7.9). An abnormal part that was not detected gives a finding with ``present=False`` ("none
detected"), so the report shows it was looked for.

Our extensions (not in the patent; ``extension=True``, never part of the grade): rotation (asymmetry of the
medial clavicle ends about the spine midline), inspiration (lung-field height / width), collimation upper bound
(lung box margins too large = field too wide), each reported as a test row and a note.

Validated or withheld: the objects in :data:`~scanai.chest.detection.EXPERIMENTAL` (scapulae, clavicles,
pneumothorax, effusion) are not validated on real radiographs. Unless ``Thresholds.experimental`` is on they are
dropped before any test: no scapula test (C1-C3 leave the grade, so R5/R6 see only the spine), no rotation check,
no pneumothorax or effusion finding, and a note says so. Turned on, each of their rows, reasons and findings is
labelled "experimental".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from scanai.chest.detection import EXPERIMENTAL, Box, Detections, Found
from scanai.core.errors import FileFormatError, InputError

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
SIDES = ("top", "bottom", "left", "right")
#: Which patient side each image edge is on (column 0 = image left = patient right).
SIDE_WORDS = {"top": "top (head)", "bottom": "bottom (feet)", "left": "image left = patient right",
              "right": "image right = patient left"}
FO_INSIDE_RULES = ("centre", "overlap")
ABNORMAL_WORDS = {"pneumothorax": "pneumothorax", "effusion": "pleural effusion"}
#: The label every row, reason and finding of an experimental object carries when experimental objects are on.
EXPERIMENTAL_LABEL = "[experimental: not validated on real radiographs]"
#: The objects of the test rows computed from experimental objects (C1-C3 and the rotation check).
EXPERIMENTAL_TEST_OBJECTS = ("scapula", "clavicle")
#: The note of an assessment made with experimental objects off (the default).
WITHHELD_NOTE = ("Scapulae, clavicles, pneumothorax and pleural effusion were not assessed: their detection is "
                 "experimental (not validated on real radiographs), so the scapula tests C1-C3, the rotation check "
                 "and the pneumothorax / effusion findings are off. Turn on experimental objects to see them.")
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


# ----------------------------------------------------------------------------------------------------------------
# Thresholds and profiles
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the metric engine (dimensionless ratios; margins are fractions of the image height or
    width). Defaults are the digest's §6.1 mid-range values; ``validate`` runs on construction and raises InputError.

    Patent tests: t1/t2/t3 (C1-C3, with enable flags; C1 off), d_top/d_bottom/d_left/d_right (C4; left/right are
    *image* edges: image left = patient right), tc (C5), to (C6), fo_inside ("centre" | "overlap") with
    fo_overlap_min, weighted (¶0132 rule R6). Findings: ctr (> flags cardiomegaly), pneumothorax_high/low and
    effusion_high/low (> high = "high-risk", < low = "self-healing").

    experimental:       False (the default) withholds the objects not validated on real radiographs
                        (:data:`~scanai.chest.detection.EXPERIMENTAL`): no scapula tests C1-C3, no rotation check,
                        no pneumothorax or effusion finding. True shows them, labelled experimental.

    Our extensions (not in the patent; ``extensions=False`` leaves them out):
    rotation_max:       max |dR - dL| / (dR + dL) of the medial clavicle ends' horizontal distances to the spine
                        midline; 0.2 means the larger distance is at most 1.5 x the smaller (our choice).
    inspiration_min:    min lung-field height / width (union box of both lungs). 0.60 is below the 5th percentile
                        (0.62) of the Wingspan training masks (images resampled to square, so approximate); the
                        digest phantom has 0.90.
    collimation_max_*:  max normalised margin of the lung box to each edge (field too wide). Defaults top 0.30,
                        bottom 0.45, left/right 0.28: just above the 99th percentiles of the Wingspan training masks
                        (0.26, 0.42, 0.24, 0.21); the phantom has 0.22, 0.26, 0.21, 0.21.
    """

    name: str = "default"
    t1: float = 0.02
    t2: float = 0.05
    t3: float = 0.015
    c1_enabled: bool = False
    c2_enabled: bool = True
    c3_enabled: bool = True
    d_top: float = 0.045
    d_bottom: float = 0.045
    d_left: float = 0.02
    d_right: float = 0.02
    tc: float = 0.5
    to: float = 0.045
    fo_inside: str = "centre"
    fo_overlap_min: float = 0.5
    weighted: bool = True
    ctr: float = 0.50
    pneumothorax_high: float = 0.40
    pneumothorax_low: float = 0.10
    effusion_high: float = 0.40
    effusion_low: float = 0.10
    experimental: bool = False
    extensions: bool = True
    rotation_max: float = 0.20
    inspiration_min: float = 0.60
    collimation_max_top: float = 0.30
    collimation_max_bottom: float = 0.45
    collimation_max_left: float = 0.28
    collimation_max_right: float = 0.28

    def __post_init__(self) -> None:
        if self.fo_inside == "center":
            object.__setattr__(self, "fo_inside", "centre")
        self.validate()

    def validate(self) -> None:
        """InputError naming the first bad value (types, ranges, and low <= high pairs)."""
        ranges = {  # name -> (low, high, low inclusive)
            "t1": (0.0, 1.0, True), "t2": (0.0, 1.0, True), "t3": (0.0, 1.0, True),
            "d_top": (0.0, 0.5, True), "d_bottom": (0.0, 0.5, True), "d_left": (0.0, 0.5, True),
            "d_right": (0.0, 0.5, True), "tc": (0.0, 1.0, True), "to": (0.0, 0.5, True),
            "fo_overlap_min": (0.0, 1.0, False), "ctr": (0.0, 2.0, False),
            "pneumothorax_high": (0.0, 1.0, True), "pneumothorax_low": (0.0, 1.0, True),
            "effusion_high": (0.0, 1.0, True), "effusion_low": (0.0, 1.0, True),
            "rotation_max": (0.0, 1.0, True), "inspiration_min": (0.0, 5.0, True),
            "collimation_max_top": (0.0, 1.0, False), "collimation_max_bottom": (0.0, 1.0, False),
            "collimation_max_left": (0.0, 1.0, False), "collimation_max_right": (0.0, 1.0, False),
        }
        fix = "Use the documented range (see scanai.chest.metrics.Thresholds) or delete the entry to get the default."
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"The threshold profile name must be a non-empty text, got {self.name!r}.", fix)
        for key in ("c1_enabled", "c2_enabled", "c3_enabled", "weighted", "experimental", "extensions"):
            if not isinstance(getattr(self, key), bool):
                raise InputError(f"Threshold setting '{key}' must be true or false, got {getattr(self, key)!r}.", fix)
        for key, (low, high, inclusive) in ranges.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InputError(f"Threshold '{key}' must be a number, got {value!r}.", fix)
            if not ((low <= value if inclusive else low < value) and value <= high):
                bracket = "[" if inclusive else "("
                raise InputError(f"Threshold '{key}' = {value} is outside its range {bracket}{low}, {high}].", fix)
        if self.fo_inside not in FO_INSIDE_RULES:
            raise InputError(f"fo_inside must be one of {FO_INSIDE_RULES}, got {self.fo_inside!r}.", fix)
        for part in ("pneumothorax", "effusion"):
            low, high = getattr(self, f"{part}_low"), getattr(self, f"{part}_high")
            if low > high:
                raise InputError(f"{part}_low ({low}) is above {part}_high ({high}).", "Make the low level <= high.")
        for side in SIDES:
            low, high = getattr(self, f"d_{side}"), getattr(self, f"collimation_max_{side}")
            if high <= low:
                raise InputError(f"collimation_max_{side} ({high}) must exceed d_{side} ({low}); otherwise every "
                                 "image fails one of the two margin tests.", "Raise collimation_max or lower d.")

    def as_dict(self) -> dict[str, Any]:
        """All settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Thresholds | None = None) -> Thresholds:
        """Thresholds from a dict of settings; missing keys keep ``base`` (default: the defaults); keys starting
        with "_" (comments) are ignored; an unknown key or a bad value raises InputError."""
        if not isinstance(data, dict):
            raise InputError("The thresholds must be a JSON object (name: value pairs).",
                             "Write the file with Thresholds.to_json and edit the values.")
        known = {item.name for item in fields(cls)}
        unknown = sorted(key for key in data if key not in known and not str(key).startswith("_"))
        if unknown:
            raise InputError(f"Unknown threshold settings {unknown}.", f"Use names from {sorted(known)}.")
        values = {key: value for key, value in data.items() if key in known}
        start = base or cls()
        for key, value in list(values.items()):  # JSON has no int/float distinction: accept 1 for 1.0
            if isinstance(getattr(start, key), float) and isinstance(value, int) and not isinstance(value, bool):
                values[key] = float(value)
        return replace(start, **values)

    def to_json(self, path: str | Path) -> Path:
        """Write all settings to ``path`` (JSON, indented); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path, base: Thresholds | None = None) -> Thresholds:
        """Read thresholds written by :meth:`to_json` (or a partial file: missing keys keep ``base``)."""
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(f"The thresholds file {path} does not exist.", "Check the path.")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FileFormatError(f"The thresholds file {path.name} is not valid JSON ({error}).",
                                  "Write it with Thresholds.to_json or fix the syntax.") from error
        return cls.from_dict(data, base)


#: Named threshold profiles (¶0108-0109, digest §7.11). Only the CTR limit differs; these are our choices:
#: "AP": 0.55 because an AP film magnifies the heart; "paediatric" (1-15 years): 0.55; "infant" (< 1 year): 0.60,
#: following the common teaching that a normal infant heart can reach 60 % of the chest width.
THRESHOLD_PROFILES: dict[str, Thresholds] = {
    "default": Thresholds(),
    "AP": Thresholds(name="AP", ctr=0.55),
    "paediatric": Thresholds(name="paediatric", ctr=0.55),
    "infant": Thresholds(name="infant", ctr=0.60),
}

_AGE_UNITS = {"Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}


def age_in_years(age: float | int | str | None) -> float | None:
    """Age in years from a number (years) or a DICOM Age String such as "045Y", "006M", "002W", "010D"."""
    if age is None or (isinstance(age, str) and not age.strip()):
        return None
    if isinstance(age, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([YMWDymwd]?)\s*", age)
        if match is None:
            raise InputError(f"The patient age '{age}' is not understood.",
                             "Give the age in years (a number) or as a DICOM age such as 045Y or 006M.")
        return float(match.group(1)) * _AGE_UNITS[(match.group(2) or "Y").upper()]
    value = float(age)
    if not math.isfinite(value) or value < 0 or value > 150:
        raise InputError(f"The patient age {age} is not a plausible age in years.", "Give the age in years.")
    return value


def thresholds_for(view: str | None = None, age: float | int | str | None = None,
                   sex: str | None = None) -> Thresholds:
    """The threshold profile for a patient (¶0108-0109): age < 1 year -> "infant", < 16 -> "paediatric", else
    view "AP" -> "AP", else "default". Age takes precedence over view (both change only the CTR limit, and the
    age-based limits are already at least the AP one). ``sex`` is accepted for the patent's interface but no
    profile depends on it (we have no basis for sex-specific limits). Unknown views use the default profile;
    rejecting lateral views is the reader's job."""
    del sex  # no sex-specific profile (documented above)
    years = age_in_years(age)
    if years is not None and years < 1.0:
        return THRESHOLD_PROFILES["infant"]
    if years is not None and years < 16.0:
        return THRESHOLD_PROFILES["paediatric"]
    if view is not None and str(view).strip().upper() == "AP":
        return THRESHOLD_PROFILES["AP"]
    return THRESHOLD_PROFILES["default"]


# ----------------------------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------------
# Measurements (one place for each formula; scanai.chest.calibrate reuses them)
# ----------------------------------------------------------------------------------------------------------------

def chest_mask(detections: Detections) -> np.ndarray:
    """(rows, cols) bool "chest area" of C1/C3: ``detections.body``, or the whole image when there is none."""
    body = detections.body
    if body is None or not np.asarray(body).any():
        return np.ones(detections.shape, dtype=bool)
    return np.asarray(body, dtype=bool)


def scapula_mask(detections: Detections) -> np.ndarray:
    """(rows, cols) bool union of both scapulae (empty when none was found)."""
    return detections.mask("scapula_right") | detections.mask("scapula_left")


def scapula_ratios(detections: Detections) -> tuple[float, float, float]:
    """(C1, C2, C3) = (|S|/|chest|, |S ∩ L|/|L|, |S ∩ L|/|chest|); 0 for a ratio whose denominator is empty."""
    scapula = scapula_mask(detections)
    lungs = detections.lungs()
    chest = int(chest_mask(detections).sum())
    overlap = int((scapula & lungs).sum())
    lung_area = int(lungs.sum())
    return (int(scapula.sum()) / chest if chest else 0.0, overlap / lung_area if lung_area else 0.0,
            overlap / chest if chest else 0.0)


def lung_box(detections: Detections) -> Box | None:
    """The union box of both lungs (``None`` when no lung was found)."""
    return Box.of_mask(detections.lungs())


def lung_margins(detections: Detections) -> dict[str, float] | None:
    """Normalised margins of the lung union box to each image edge: {"top": top / H, "bottom": (H - bottom) / H,
    "left": left / W, "right": (W - right) / W} (image sides; left = patient right), or None without lungs."""
    box = lung_box(detections)
    if box is None:
        return None
    rows, cols = detections.shape
    return {"top": box.top / rows, "bottom": (rows - box.bottom) / rows, "left": box.left / cols,
            "right": (cols - box.right) / cols}


def foreign_object_confidence(detections: Detections) -> float:
    """C5's value: the highest foreign-object confidence after NMS, 0.0 when none was found."""
    return max((float(found.confidence) for found in detections.foreign_objects), default=0.0)


def fo_is_inside_lung(found: Found, lungs: np.ndarray, rule: str = "centre", min_fraction: float = 0.5) -> bool:
    """Whether one foreign object lies inside the lung mask: its box centre is a lung pixel ("centre"), or at least
    ``min_fraction`` of its pixels are lung pixels ("overlap")."""
    if rule == "overlap":
        area = int(np.count_nonzero(found.mask))
        return area > 0 and int(np.count_nonzero(found.mask & lungs)) / area >= min_fraction
    row, col = found.box.centre
    r, c = int(math.floor(row + 0.5)), int(math.floor(col + 0.5))
    return 0 <= r < lungs.shape[0] and 0 <= c < lungs.shape[1] and bool(lungs[r, c])


def lungs_under_object(detections: Detections, found: Found) -> np.ndarray:
    """(rows, cols) bool lung fields with the dents an opaque object can cut into a lung segmentation closed: each
    lung is morphologically closed with a square as large as the object's box, rounded up to an odd side (so the two
    lungs never merge). Separable maximum / minimum filters make this fast on full-size radiographs."""
    from scipy import ndimage

    size = (max(found.box.bottom - found.box.top, found.box.right - found.box.left) + 1) | 1
    closed = np.zeros(detections.shape, dtype=bool)
    for name in ("lung_right", "lung_left"):
        lung = detections.mask(name)
        if lung.any():
            padded = np.pad(lung.astype(np.uint8), size)
            dilated = ndimage.maximum_filter(padded, size, mode="constant", cval=0)
            closed |= ndimage.minimum_filter(dilated, size, mode="constant", cval=0)[size:-size, size:-size] > 0
    return closed


def foreign_objects_inside_lung(detections: Detections, thresholds: Thresholds) -> bool:
    """Whether any foreign object that fails C5 (confidence > tc) lies inside the lungs (digest §7.6; a confidence
    equal to tc passes C5, as every tie does, so it does not count here either). The lungs are taken with the dents
    the object itself may cut into their segmentation closed (:func:`lungs_under_object`)."""
    return any(fo_is_inside_lung(found, lungs_under_object(detections, found), thresholds.fo_inside,
                                 thresholds.fo_overlap_min)
               for found in detections.foreign_objects if float(found.confidence) > thresholds.tc)


def spine_centreline(detections: Detections) -> tuple[np.ndarray, np.ndarray]:
    """(rows, x): the rows (index) that hold spine pixels and the spine's centre in each (mean column + 0.5, pixel-
    edge units); empty arrays when no spine was found."""
    spine = detections.mask("spine")
    rows = np.flatnonzero(spine.any(axis=1))
    if rows.size == 0:
        return rows, np.zeros(0)
    counts = spine[rows].sum(axis=1)
    x = (spine[rows] * np.arange(spine.shape[1])).sum(axis=1) / counts + 0.5
    return rows, x


def spine_offset(detections: Detections) -> float | None:
    """C6's signed offset sum_k (x_k - W/2) / (K W) of the spine centreline from the image centreline (positive =
    toward the image right = patient left); None when no spine was found."""
    _rows, x = spine_centreline(detections)
    if x.size == 0:
        return None
    width = detections.shape[1]
    return float(np.sum(x - width / 2.0) / (x.size * width))


def horizontal_extent(mask: np.ndarray) -> tuple[int, int] | None:
    """(leftmost column, rightmost column + 1) of a (rows, cols) mask, or None when it is empty."""
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    return (int(cols[0]), int(cols[-1]) + 1) if cols.size else None


def width_line(name: str, mask: np.ndarray) -> WidthLine | None:
    """The maximum-width line of a mask (FIG. 13): its whole horizontal extent, drawn at its centroid row."""
    extent = horizontal_extent(mask)
    if extent is None:
        return None
    rows = np.nonzero(mask)[0]
    return WidthLine(name, float(rows.mean()) + 0.5, float(extent[0]), float(extent[1]))


def cardiothoracic_ratio(detections: Detections) -> tuple[float, int, int] | None:
    """(CTR, heart width px, lung width px) with widths = horizontal extents of the heart and of the union of both
    lungs (claim 16, FIG. 13); None when the heart or the lungs are missing."""
    heart = horizontal_extent(detections.mask("heart"))
    lungs = horizontal_extent(detections.lungs())
    if heart is None or lungs is None:
        return None
    heart_width, lung_width = heart[1] - heart[0], lungs[1] - lungs[0]
    return heart_width / lung_width, heart_width, lung_width


def abnormal_ratio(detections: Detections, name: str) -> tuple[float, int, int]:
    """(ratio, |A|, |L ∪ A|) for abnormal part ``name`` ("pneumothorax" | "effusion"): ratio = |A| / |L ∪ A|."""
    abnormal = detections.mask(name)
    field_mask = detections.lungs() | abnormal
    count, total = int(abnormal.sum()), int(field_mask.sum())
    return (count / total if total else 0.0), count, total


def clavicle_rotation(detections: Detections) -> tuple[float, float, float] | None:
    """Our rotation extension: (asymmetry, dR, dL) where dR / dL are the horizontal distances (px) from the medial
    end of the patient-right / patient-left clavicle to the spine midline, and asymmetry = (dR - dL) / (dR + dL)
    (positive: the spine is nearer the patient-left clavicle head). The medial end is the clavicle pixel nearest the
    image centre column; the midline is the mean spine centre over rows within 5 % of the image height of the
    medial ends (all rows when none). None when a clavicle or the spine is missing or the ends cross the midline."""
    right, left = detections.mask("clavicle_right"), detections.mask("clavicle_left")
    rows, x = spine_centreline(detections)
    if not right.any() or not left.any() or x.size == 0:
        return None
    r_rows, r_cols = np.nonzero(right)
    l_rows, l_cols = np.nonzero(left)
    right_end = float(r_cols.max()) + 1.0  # patient-right clavicle is on the image left: its medial end is its right
    left_end = float(l_cols.min())
    end_row = (r_rows[r_cols == r_cols.max()].mean() + l_rows[l_cols == l_cols.min()].mean()) / 2.0
    near = np.abs(rows - end_row) <= 0.05 * detections.shape[0]
    midline = float(x[near].mean() if near.any() else x.mean())
    d_right, d_left = midline - right_end, left_end - midline
    if d_right + d_left <= 0:
        return None
    return (d_right - d_left) / (d_right + d_left), d_right, d_left


def lung_aspect(detections: Detections) -> float | None:
    """Our inspiration extension: lung-field height / width of the union box of both lungs (None without lungs)."""
    box = lung_box(detections)
    if box is None:
        return None
    return (box.bottom - box.top) / (box.right - box.left)


# ----------------------------------------------------------------------------------------------------------------
# Assessment
# ----------------------------------------------------------------------------------------------------------------

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
    return f"{subject}: {name} {test.value:.3f} {op} {test.threshold:g}" + (f" ({why})" if why else "") + label


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
        text = (f"cardiothoracic ratio {ratio:.3f} {'>' if present else '<='} {t.ctr:g}: "
                f"{'cardiomegaly (enlarged heart)' if present else 'no cardiomegaly'} ({widths})")
        findings.append(Finding("cardiothoracic_ratio", ratio, t.ctr, present, severity, text, measurements))
        lines += [width_line("heart", detections.mask("heart")), width_line("lungs", detections.lungs())]
    for name, words in ABNORMAL_WORDS.items() if t.experimental else ():
        high, low = getattr(t, f"{name}_high"), getattr(t, f"{name}_low")
        ratio, count, total = abnormal_ratio(detections, name)
        measurements = {"abnormal_px": float(count), "lung_px": float(total), "low_threshold": low,
                        "high_threshold": high}
        if not detections.found(name) or count == 0:
            findings.append(Finding(name, 0.0, high, False, "none", f"no {words} detected {EXPERIMENTAL_LABEL}",
                                    measurements))
            continue
        if ratio > high:
            severity, text = "high-risk", f"high-risk {words}"
        elif ratio < low:
            severity, text = "self-healing", f"self-healing {words}"
        else:
            severity, text = "present, severity not graded", f"{words} present, severity not graded"
        text += (f": {100 * ratio:.1f} % of the lung field (high-risk > {100 * high:g} %, "
                 f"self-healing < {100 * low:g} %) {EXPERIMENTAL_LABEL}")
        findings.append(Finding(name, ratio, high, True, severity, text, measurements))
    return findings, [line for line in lines if line is not None]


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


def not_assessable(reason: str, thresholds: Thresholds | None = None) -> Assessment:
    """An assessment that grades nothing: level NOT ASSESSABLE with ``reason`` as its explanation."""
    return Assessment(NOT_ASSESSABLE, "NA", (reason,), (), (), (), NOT_ASSESSABLE_DISPOSITION, (), thresholds)


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
    foreign, fo_inside = _foreign_object_tests(detections, t)
    spine = _spine_test(detections, t)
    extensions = _extension_tests(detections, t, notes) if t.extensions else []

    lung_ok = all(test.passed for test in lung)
    scapula_ok = all(test.passed for test in scapula if test.contributes_to_level)
    spine_ok = spine[0].passed
    fo_ok = foreign[0].passed
    level, rule = _grade(lung_ok, scapula_ok, spine_ok, fo_ok, fo_inside, t.weighted)

    reasons = [_failure_text(test) for test in lung if not test.passed]
    if not fo_ok:
        where = "inside the lung" if fo_inside else "outside the lung"
        reasons.append(f"foreign object: confidence {foreign[0].value:.3f} > {t.tc:g} (foreign object {where})")
    reasons += [_failure_text(test) for test in scapula if test.contributes_to_level and not test.passed]
    reasons += [_failure_text(test) for test in spine[:1] if not test.passed]

    findings: list[Finding] = []
    lines: list[WidthLine] = []
    if level in (FIRST, INTERMEDIATE):
        findings, lines = _findings(detections, t, spacing)
    disposition = RESCAN if level == SECOND else USABLE
    return Assessment(level, rule, tuple(reasons), tuple(scapula + lung + foreign + spine + extensions),
                      tuple(findings), tuple(lines), disposition, tuple(notes), t)
