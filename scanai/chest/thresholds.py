"""Thresholds of the chest metric engine: the :class:`Thresholds` settings, the named profiles and their choice."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from scanai.core.errors import FileFormatError, InputError

SIDES = ("top", "bottom", "left", "right")
FO_INSIDE_RULES = ("centre", "overlap")


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
    pneumothorax_min_ratio, pneumothorax_min_confidence, effusion_min_ratio, effusion_min_confidence:
                        the decision rule of the experimental findings (:mod:`scanai.chest.abnormal`): a region in
                        the plausible place counts only when its extent |R| / |L ∪ A| and the part's network
                        confidence exceed these. Defaults written by ``python -m scanai.chest.calibrate_abnormal``:
                        <= 1 % of the 207 normal Wingspan training radiographs get a finding (the model card's
                        ``extra.abnormal_calibration`` has the figures).

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
    pneumothorax_min_ratio: float = 0.015
    pneumothorax_min_confidence: float = 0.96
    effusion_min_ratio: float = 0.01
    effusion_min_confidence: float = 0.991
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
            "pneumothorax_min_ratio": (0.0, 1.0, True), "pneumothorax_min_confidence": (0.0, 1.0, True),
            "effusion_min_ratio": (0.0, 1.0, True), "effusion_min_confidence": (0.0, 1.0, True),
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
