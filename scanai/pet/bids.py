"""BIDS-PET JSON sidecars: frame timing and quantification metadata, read and written.

BIDS-PET (bids-specification PR #633) gives frame times in seconds relative to ``TimeZero`` (a clock time,
often the injection or the scan start): ``FrameTimesStart`` (T,), ``FrameDuration`` (T,), ``InjectionStart``
and ``ScanStart`` (s relative to ``TimeZero``; ``InjectionStart`` is usually 0 or negative) and
``ImageDecayCorrectionTime`` (s relative to ``TimeZero``). ScanAI works in seconds **after injection**, so
every time is converted as ``t_after_injection = t - InjectionStart`` (InjectionStart taken as 0 when absent,
which is recorded in the ``warnings`` of the result).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.pet.timing import FrameTiming
from scanai.pet.units import HALF_LIVES_S, normalise_unit, parse_unit, radionuclide_key

#: Activity units allowed for ``InjectedRadioactivityUnits`` and their size in Bq.
_ACTIVITY_BQ = {"bq": 1.0, "kbq": 1e3, "mbq": 1e6, "gbq": 1e9, "ci": 3.7e10, "mci": 3.7e7, "uci": 3.7e4,
                "µci": 3.7e4, "μci": 3.7e4, "nci": 37.0}
_WEIGHT_KG = {"kg": 1.0, "g": 1e-3, "lb": 0.45359237, "lbs": 0.45359237, "pound": 0.45359237, "pounds": 0.45359237}

_SIDECAR_ACTION = ("Give a BIDS-PET JSON sidecar with FrameTimesStart and FrameDuration (s, one per frame), "
                   "or a CSV with columns start_s,duration_s.")


def _number(meta: Mapping[str, Any], key: str) -> float | None:
    value = meta.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"The sidecar entry {key} ({value!r}) is not a number.", _SIDECAR_ACTION) from error
    return number if math.isfinite(number) else None


def _times(meta: Mapping[str, Any], key: str) -> np.ndarray | None:
    value = meta.get(key)
    if value is None:
        return None
    try:
        return np.array(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as error:
        raise InputError(f"The sidecar entry {key} is not a list of numbers.", _SIDECAR_ACTION) from error


def parse_bids_metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a BIDS-PET JSON dictionary (see :func:`read_bids_sidecar` for the keys returned)."""
    warnings: list[str] = []
    injection = _number(raw, "InjectionStart")
    if injection is None:
        injection = 0.0
        if "FrameTimesStart" in raw:
            warnings.append("The sidecar has no InjectionStart: frame times were taken as seconds after injection "
                            "(TimeZero assumed to be the injection).")
    start, duration = _times(raw, "FrameTimesStart"), _times(raw, "FrameDuration")
    scan_start = _number(raw, "ScanStart")
    decay_time = _number(raw, "ImageDecayCorrectionTime")
    decayed = raw.get("ImageDecayCorrected")
    if isinstance(decayed, str):
        decayed = {"true": True, "false": False}.get(decayed.strip().lower())
    radionuclide = str(raw.get("TracerRadionuclide", "") or "")
    key = radionuclide_key(radionuclide)
    dose = _number(raw, "InjectedRadioactivity")
    dose_bq = None
    if dose is not None:
        dose_unit = str(raw.get("InjectedRadioactivityUnits", "MBq") or "MBq").strip().lower()
        if dose_unit not in _ACTIVITY_BQ:
            raise InputError(f"The sidecar's InjectedRadioactivityUnits {dose_unit!r} is not an activity unit.",
                             "Use MBq or mCi.")
        dose_bq = dose * _ACTIVITY_BQ[dose_unit]
    weight = _number(raw, "BodyWeight")
    weight_kg = None
    if weight is not None:
        weight_unit = str(raw.get("BodyWeightUnits", raw.get("BodyWeightUnit", "kg")) or "kg").strip().lower()
        if weight_unit not in _WEIGHT_KG:
            raise InputError(f"The sidecar's body weight unit {weight_unit!r} is not known.", "Use kg.")
        weight_kg = weight * _WEIGHT_KG[weight_unit]
    unit_text = str(raw.get("Units", "") or "")
    try:
        unit = parse_unit(unit_text)
    except InputError as error:  # a unit that says something must not silently become "unknown"
        raise InputError(f"The sidecar's Units {unit_text!r} is not understood.", error.action) from error
    if unit_text and not unit:
        warnings.append(f"The sidecar's Units {unit_text!r} is not an activity concentration unit (a DICOM code of "
                        "another quantity); it is treated as unknown.")
    return {
        "start_s": None if start is None else start - injection,
        "duration_s": duration,
        "injection_start_s": injection,
        "scan_start_s": None if scan_start is None else scan_start - injection,
        "time_zero": str(raw.get("TimeZero", "") or ""),
        "unit": unit,
        "decay_corrected": decayed if isinstance(decayed, bool) else None,
        "decay_reference_s": None if decay_time is None else decay_time - injection,
        "radionuclide": key or radionuclide,
        "half_life_s": HALF_LIVES_S.get(key) if key else None,
        "injected_dose_bq": dose_bq,
        "weight_kg": weight_kg,
        "warnings": tuple(warnings),
        "raw": dict(raw),
    }


def read_bids_sidecar(path: str | Path) -> dict[str, Any]:
    """Read a BIDS-PET JSON sidecar; returns normalised metadata.

    Keys: ``start_s`` (T,) frame starts in s after injection (None when absent), ``duration_s`` (T,) in s,
    ``injection_start_s`` and ``scan_start_s`` (BIDS values, s), ``time_zero`` (clock text), ``unit`` (normalised,
    "" unknown), ``decay_corrected`` (bool | None), ``decay_reference_s`` (s after injection the image is decay
    corrected to, None when not given), ``radionuclide`` ("F18", ...), ``half_life_s``, ``injected_dose_bq``,
    ``weight_kg``, ``warnings`` (tuple of str), ``raw`` (the JSON dictionary).
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The JSON sidecar {path} does not exist.", "Check the path and the file name.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(f"{path.name} is not a valid JSON file ({error}).",
                              "Check the sidecar in a text editor or export it again.") from error
    if not isinstance(raw, dict):
        raise FileFormatError(f"{path.name} does not hold a JSON object (key/value pairs).",
                              "Give a BIDS-PET sidecar.")
    return parse_bids_metadata(raw)


def timing_from_sidecar(meta: Mapping[str, Any], n_frames: int | None = None) -> FrameTiming:
    """Frame timing (s after injection) from sidecar metadata (the result of :func:`read_bids_sidecar`, or a raw
    BIDS dictionary). ``n_frames``: the number of frames of the image, checked against the sidecar."""
    if "start_s" not in meta:
        meta = parse_bids_metadata(meta)
    start, duration = meta["start_s"], meta["duration_s"]
    if start is None or duration is None:
        missing = " and ".join(k for k, v in (("FrameTimesStart", start), ("FrameDuration", duration)) if v is None)
        raise InputError(f"The JSON sidecar has missing frame timing ({missing} absent).", _SIDECAR_ACTION)
    if start.size != duration.size:
        raise InputError(f"The JSON sidecar lists {start.size} FrameTimesStart but {duration.size} FrameDuration "
                         "values.", _SIDECAR_ACTION)
    if n_frames is not None and start.size != int(n_frames):
        raise InputError(f"The JSON sidecar gives timing for {start.size} frames (FrameTimesStart) but the image "
                         f"has {n_frames} frames.",
                         "Use the sidecar that belongs to this image, or fix FrameTimesStart/FrameDuration.")
    return FrameTiming(start, duration)


def write_bids_sidecar(path: str | Path, timing: FrameTiming, unit: str, radionuclide: str | None = None,
                       decay_corrected: bool | None = None, injected_dose_bq: float | None = None,
                       weight_kg: float | None = None, time_zero: str | None = None,
                       extra: Mapping[str, Any] | None = None) -> Path:
    """Write a BIDS-PET JSON sidecar with TimeZero at the injection (InjectionStart = 0).

    timing: frames in s after injection (written as FrameTimesStart/FrameDuration). unit: activity unit text.
    decay_corrected: True = to injection (ImageDecayCorrectionTime 0). time_zero: injection clock time
    "hh:mm:ss" (BIDS requires it; written only when given). extra: further BIDS keys. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if time_zero:
        data["TimeZero"] = str(time_zero)
    data.update({
        "InjectionStart": 0.0,
        "ScanStart": float(timing.start_s[0]),
        "FrameTimesStart": [float(v) for v in timing.start_s],
        "FrameDuration": [float(v) for v in timing.duration_s],
        "Units": normalise_unit(unit) or str(unit or ""),
    })
    if radionuclide:
        key = radionuclide_key(radionuclide)
        data["TracerRadionuclide"] = key or str(radionuclide)
    if decay_corrected is not None:
        data["ImageDecayCorrected"] = bool(decay_corrected)
        if decay_corrected:
            data["ImageDecayCorrectionTime"] = 0.0
    if injected_dose_bq is not None:
        data["InjectedRadioactivity"] = float(injected_dose_bq) / 1e6
        data["InjectedRadioactivityUnits"] = "MBq"
    if weight_kg is not None:
        data["BodyWeight"] = float(weight_kg)
        data["BodyWeightUnits"] = "kg"
    if extra:
        data.update(dict(extra))
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
