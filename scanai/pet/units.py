"""Radionuclide half-lives, decay correction, activity units and the SUV factor.

Conventions:

- Times are seconds after injection (t = 0), as in :class:`~scanai.pet.timing.FrameTiming`.
- "Decay corrected" without more words means corrected **to the injection time** (BIDS ``TimeZero`` at the
  injection, DICOM DecayCorrection ``ADMIN``). Image frames and the plasma input function must refer to the same
  time zero, otherwise kinetic parameters are biased (factor ``e^{λ t_ref}``).
- Activity concentration units are normalised to one of :data:`CONCENTRATION_UNITS`, ``"SUV"`` or ``""``
  (unknown). Nothing is ever converted silently: :func:`check_compatible_units` refuses SUV against a
  concentration and returns the scale factor between two concentration units for the caller to apply. The image's
  unit is the one it carries or, where it carries none, the one the user states (:func:`settle_image_unit`, which
  refuses the two disagreeing); an unknown image unit is taken as the input function's, with a warning
  (:func:`unit_assumption`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from scanai.core.errors import InputError
from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming

#: Physical half-lives in seconds (NNDC/DDEP values, as used by scanners and BIDS tools).
HALF_LIVES_S: dict[str, float] = {
    "F18": 6586.2,
    "C11": 1221.66,
    "O15": 122.24,
    "N13": 597.9,
    "Ga68": 4062.6,
    "Rb82": 75.45,
    "Cu64": 45720.0,
    "Zr89": 282276.0,
}

_ELEMENT_NAMES = {
    "fluorine": "F", "carbon": "C", "oxygen": "O", "nitrogen": "N", "gallium": "Ga", "rubidium": "Rb",
    "copper": "Cu", "zirconium": "Zr",
}
_SYMBOLS = {symbol.lower(): symbol for symbol in ("F", "C", "O", "N", "Ga", "Rb", "Cu", "Zr")}


def radionuclide_key(name: str) -> str:
    """The key of :data:`HALF_LIVES_S` for a radionuclide name, or ``""`` when not recognised.

    Accepts "F18", "F-18", "18F", "^18^F", "Fluorine-18", "18F-FDG" and DICOM RadionuclideCodeSequence meanings
    such as "^18^Fluorine" (case and punctuation do not matter).
    """
    text = str(name or "").strip().lower()
    if not text:
        return ""
    # Drop a tracer suffix such as "-FDG" after the nuclide ("18F-FDG", "[11C]raclopride" keeps the nuclide).
    digits = re.findall(r"\d+", text)
    words = re.findall(r"[a-z]+", text)
    if not digits:
        return ""
    mass = digits[0]
    for word in words:
        symbol = _ELEMENT_NAMES.get(word) or _SYMBOLS.get(word)
        if symbol is not None and f"{symbol}{mass}" in HALF_LIVES_S:
            return f"{symbol}{mass}"
    return ""


def half_life_s(name_or_seconds: str | float | None) -> float:
    """Half-life in s of a radionuclide given by name (see :func:`radionuclide_key`) or directly in seconds.

    Raises :class:`InputError` for an unknown name or a non-positive number.
    """
    if isinstance(name_or_seconds, (int, float, np.floating, np.integer)) and not isinstance(name_or_seconds, bool):
        value = float(name_or_seconds)
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"The half-life must be a positive number of seconds, got {name_or_seconds!r}.",
                             "Give the radionuclide (e.g. 'F18') or its half-life in seconds (F-18: 6586.2 s).")
        return value
    key = radionuclide_key(str(name_or_seconds or ""))
    if not key:
        try:
            return half_life_s(float(str(name_or_seconds)))
        except (TypeError, ValueError):
            pass
        raise InputError(f"The radionuclide {name_or_seconds!r} is not known, so its half-life is unknown.",
                         f"Give its half-life in seconds, or one of: {', '.join(HALF_LIVES_S)}.")
    return HALF_LIVES_S[key]


def decay_constant_per_s(half_life: float) -> float:
    """λ = ln 2 / T½ in 1/s (``half_life`` in s)."""
    return math.log(2.0) / half_life_s(half_life)


# ------------------------------------------------------------------------------------------- decay maths
def frame_decay_factors(timing: FrameTiming, half_life: float) -> np.ndarray:
    """(T,) factors that correct each frame's mean (not decay corrected) to the injection time.

    ``f_j = e^{λ t_s,j} · λ Δt_j / (1 − e^{−λ Δt_j})`` (dynamicpet ``get_decay_correction_factor``), i.e. the
    inverse of the frame average of ``e^{−λ t}``. ``half_life`` in s.
    """
    lam = decay_constant_per_s(half_life)
    x = lam * timing.duration_s
    # λΔt / (1 − e^{−λΔt}) computed stably for small λΔt: x / -expm1(-x).
    return np.exp(lam * timing.start_s) * x / -np.expm1(-x)


def decay_weighted_offset_s(duration_s: np.ndarray | float, half_life: float) -> np.ndarray:
    """Time after a frame's start at which the decaying activity equals its frame mean, s (shape of duration).

    This is what DICOM FrameReferenceTime (0054,1300) usually marks; slightly earlier than the mid-frame.
    """
    lam = decay_constant_per_s(half_life)
    x = lam * np.asarray(duration_s, dtype=float)
    return -np.log(-np.expm1(-x) / x) / lam


def _as_float_array(frames: np.ndarray) -> np.ndarray:
    array = np.asarray(frames)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
    return np.array(array, dtype=dtype, copy=True)


def _frame_axis_factors(factors: np.ndarray, frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 0 or frames.shape[0] != factors.size:
        raise InputError(f"The frames (shape {frames.shape}) do not match the frame timing ({factors.size} frames).",
                         "Give one timing row per frame, frames along the first axis.")
    return factors.reshape((-1,) + (1,) * (frames.ndim - 1))


def shift_decay_reference(frames: np.ndarray, timing: FrameTiming, half_life: float,
                          reference_s: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Frames decay corrected to ``reference_s`` (s after injection) -> corrected to the injection.

    frames:      (T, ...) values decay corrected to ``reference_s`` (e.g. the scan start, DICOM ``START``).
    reference_s: one time, or (T,) times (one per frame, e.g. for merged series), in s after injection.
    Returns a new array ``frames · e^{λ·reference_s}``.
    """
    array = _as_float_array(frames)
    reference = np.broadcast_to(np.asarray(reference_s, dtype=float), (len(timing),))
    factors = np.exp(decay_constant_per_s(half_life) * reference)
    return (array * _frame_axis_factors(factors, array)).astype(array.dtype, copy=False)


def decay_correct_frames(frames: np.ndarray, timing: FrameTiming, half_life: float,
                         from_reference_s: float | Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Frames (T, ...) corrected to the injection time (a new array).

    from_reference_s: None when ``frames`` are not decay corrected at all (each frame's mean is multiplied by
                      :func:`frame_decay_factors`); otherwise the time(s) in s after injection the frames are
                      already corrected to (see :func:`shift_decay_reference`).
    """
    if from_reference_s is not None:
        return shift_decay_reference(frames, timing, half_life, from_reference_s)
    array = _as_float_array(frames)
    factors = frame_decay_factors(timing, half_life)
    return (array * _frame_axis_factors(factors, array)).astype(array.dtype, copy=False)


def decay_correct_input(input_function: InputFunction, half_life: float) -> InputFunction:
    """Sample-wise decay correction to injection: ``Cp(t) · e^{λ t}`` (a new :class:`InputFunction`)."""
    lam = decay_constant_per_s(half_life)
    return InputFunction(input_function.t_s, input_function.activity * np.exp(lam * input_function.t_s),
                         input_function.unit)


def decay_uncorrect_input(input_function: InputFunction, half_life: float) -> InputFunction:
    """Inverse of :func:`decay_correct_input`: ``Cp(t) · e^{−λ t}``."""
    lam = decay_constant_per_s(half_life)
    return InputFunction(input_function.t_s, input_function.activity * np.exp(-lam * input_function.t_s),
                         input_function.unit)


# ------------------------------------------------------------------------------------------------- units
#: Activity concentration units and their size in Bq/mL.
CONCENTRATION_UNITS: dict[str, float] = {
    "Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6, "nCi/mL": 37.0, "uCi/mL": 37e3, "mCi/mL": 37e6,
}
SUV = "SUV"

#: DICOM Units (0054,1001) codes. GML = SUVbw (g/mL); CM2ML = SUVbsa; counts and other quantities are unknown.
DICOM_UNITS: dict[str, str] = {
    "BQML": "Bq/mL", "GML": SUV, "CM2ML": SUV, "CNTS": "", "PROPCNTS": "", "CPS": "", "NPI": "", "PERCENT": "",
    "MGMINML": "", "UMOLMINML": "", "MLMING": "", "MLG": "", "1CM": "", "UMOLML": "", "MGML": "",
}

_PREFIX = {"": "", "k": "k", "m": "M", "u": "u", "µ": "u", "μ": "u", "micro": "u", "mega": "M", "kilo": "k",
           "n": "n", "nano": "n", "milli": "m"}


def normalise_unit(text: str | None) -> str:
    """One of :data:`CONCENTRATION_UNITS` keys, ``"SUV"``, or ``""`` when unknown/empty.

    Understands DICOM codes (``BQML``, ``GML`` = SUVbw in g/mL, ``CNTS`` -> unknown), BIDS/free text such as
    "Bq/ml", "kBq/cc", "kBq.mL-1", "µCi/mL", "SUVbw", "g/ml".
    """
    raw = str(text or "").strip()
    if not raw:
        return ""
    if raw.upper() in DICOM_UNITS:
        return DICOM_UNITS[raw.upper()]
    lowered = raw.lower().replace(" ", "")
    if lowered.startswith("suv") or lowered in ("g/ml", "g/cc", "gml", "g.ml-1"):
        return SUV
    lowered = lowered.replace("cc", "ml").replace("cm3", "ml").replace("cm^3", "ml").replace("ml-1", "/ml")
    lowered = lowered.replace(".", "").replace("//", "/").replace("per", "/")
    match = re.fullmatch(r"(micro|mega|kilo|nano|milli|[kmuµμn]?)(bq|becquerel|ci|curie)/ml", lowered)
    if match is None:
        return ""
    prefix, base = match.groups()
    base = "Bq" if base.startswith("b") else "Ci"
    if base == "Bq" and prefix in ("m", "mega"):  # "mbq" means MBq in practice (mBq/mL is never used)
        prefix_text = "M"
    else:
        prefix_text = _PREFIX.get(prefix, None)
        if base == "Ci" and prefix == "m":
            prefix_text = "m"
    unit = f"{prefix_text}{base}/mL"
    return unit if unit in CONCENTRATION_UNITS else ""


def parse_unit(text: str | None) -> str:
    """The unit a user typed (:func:`normalise_unit`; ``""`` for an empty text or a DICOM code of an unknown
    quantity such as CNTS), or InputError listing the accepted spellings: an explicit unit must never silently
    become "unknown", which would be taken as equal to the image's."""
    raw = str(text or "").strip()
    unit = normalise_unit(raw)
    if raw and not unit and raw.upper() not in DICOM_UNITS:
        raise InputError(f"The activity unit {raw!r} is not understood.",
                         f"Write one of {', '.join([*CONCENTRATION_UNITS, SUV])} (kBq/cc, µCi/mL, kBq.mL-1 and the "
                         "DICOM codes BQML, GML work too).")
    return unit


def settle_image_unit(carried: str, stated: str, carried_by: str = "the image",
                      stated_as: str = "the unit stated for the image") -> str:
    """The activity unit of a dynamic image: the one it carries (DICOM Units, a BIDS sidecar's Units), else the one
    the user states (``stated``, parsed by :func:`parse_unit`); "" when neither is known.

    :class:`InputError` when both are known and differ (naming both and where each comes from), or when the stated
    unit is not understood. ``carried_by`` / ``stated_as`` say where each comes from, for the message.
    """
    own, given = normalise_unit(carried), parse_unit(stated)
    if own and given and own != given:
        raise InputError(f"The image's activity unit is {own} ({carried_by}) but {given} was stated ({stated_as}).",
                         "Leave the stated unit out, or check which of the two is right: a wrong unit scales every "
                         "kinetic parameter.")
    return own or given


def unit_assumption(image_unit: str, input_unit: str, how: str = "state the image's unit") -> str:
    """The warning for an image of unknown unit analysed with an input function of known unit ("" otherwise): the
    image is then taken to be in the input function's unit, which nothing can check. ``how`` says how to state it."""
    image, given = normalise_unit(image_unit), normalise_unit(input_unit)
    if image or not given:
        return ""
    return (f"The image's activity unit is unknown (it carries no concentration unit), so it is assumed to be in "
            f"the input function's unit, {given}; if it is not, {how}.")


def unit_scale_to_bq_per_ml(unit: str) -> float:
    """Size of one ``unit`` in Bq/mL (e.g. kBq/mL -> 1000). InputError for SUV or an unknown unit."""
    normalised = normalise_unit(unit)
    if normalised in CONCENTRATION_UNITS:
        return CONCENTRATION_UNITS[normalised]
    if normalised == SUV:
        raise InputError("SUV values are not an activity concentration, so they cannot be converted to Bq/mL.",
                         "Divide by the SUV factor (body weight / injected dose) to get Bq/mL.")
    raise InputError(f"The activity unit {unit!r} is not recognised.",
                     f"Use one of: {', '.join(CONCENTRATION_UNITS)}.")


def check_compatible_units(frames_unit: str, input_unit: str) -> float:
    """Scale factor that brings the input function into the frames' unit (multiply the input by it).

    - Both concentration units: their ratio, e.g. frames "Bq/mL", input "kBq/mL" -> 1000.0.
    - Equal units, or either unknown/empty: 1.0. An unknown unit means the user vouches that both are in the
      same unit; nothing can be checked.
    - One SUV and the other an activity concentration: :class:`InputError` (never converted silently).
    """
    frames, inputs = normalise_unit(frames_unit), normalise_unit(input_unit)
    if not frames or not inputs or frames == inputs:
        return 1.0
    if SUV in (frames, inputs):
        suv_side, other_side = ("frames", "input function") if frames == SUV else ("input function", "frames")
        other_unit = inputs if frames == SUV else frames
        raise InputError(
            f"The {suv_side} are in SUV but the {other_side} is in {other_unit}: kinetic parameters would be "
            "scaled by the SUV factor (weight/dose).",
            "Convert the input function with the SUV factor (multiply Bq/mL by body weight in g / injected dose "
            "in Bq), or give the frames in Bq/mL.")
    return CONCENTRATION_UNITS[inputs] / CONCENTRATION_UNITS[frames]


def suv_factor(weight_kg: float | None, injected_dose_bq: float | None, dose_reference_s: float = 0.0,
               half_life: float | None = None) -> float:
    """Factor (g/Bq·mL/mL = mL/Bq·g) such that ``SUV = C[Bq/mL] · factor``: ``weight[g] / dose[Bq]``.

    dose_reference_s: when the dose was measured, s after injection (negative = before). The dose is decayed to
                      the injection time (``dose · e^{λ·dose_reference_s}``), which needs ``half_life`` (s or
                      name) unless it is 0. The image must be decay corrected to injection as well.
    """
    if weight_kg is None or injected_dose_bq is None:
        missing = " and ".join(name for name, value in (("the patient weight", weight_kg),
                                                         ("the injected dose", injected_dose_bq)) if value is None)
        raise InputError(f"SUV cannot be computed: {missing} is missing.",
                         "Enter the patient weight (kg) and the injected activity (Bq) of this scan.")
    weight, dose = float(weight_kg), float(injected_dose_bq)
    if not (math.isfinite(weight) and weight > 0):
        raise InputError(f"The patient weight must be a positive number of kg, got {weight_kg!r}.",
                         "Enter the weight in kg.")
    if not (math.isfinite(dose) and dose > 0):
        raise InputError(f"The injected dose must be a positive number of Bq, got {injected_dose_bq!r}.",
                         "Enter the injected activity in Bq (1 MBq = 1e6 Bq).")
    if dose < 1e3:
        raise InputError(f"The injected dose of {dose:g} Bq is implausibly small (under 1 kBq); it is probably "
                         "in MBq or mCi.", "Enter the injected activity in Bq (1 MBq = 1e6 Bq, 1 mCi = 3.7e7 Bq).")
    if dose_reference_s:
        if half_life is None:
            raise InputError("The injected dose was measured at another time than the injection, and the "
                             "half-life is unknown, so it cannot be decay corrected.",
                             "Give the radionuclide or its half-life.")
        dose = dose * math.exp(decay_constant_per_s(half_life) * float(dose_reference_s))
    return weight * 1000.0 / dose
