"""Plasma input functions: sampled curves, tables, and the Feng 1993 FDG model.

An :class:`InputFunction` is the plasma activity concentration ``Cp(t)`` sampled at times ``t_s`` (seconds
after injection). Between samples it is linear; before the first sample it ramps linearly from ``(0 s, 0)``
(nothing is in the blood before the injection); after the last sample it stays at the last value. Every
integral below is the exact integral of that piecewise-linear curve, always **from the injection** (t = 0),
which is what the Patlak plot needs even when the image frames start later.

Integrals of activity are returned in activity·min, because kinetic rate constants are in 1/min.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.pet.tables import read_pet_table
from scanai.pet.timing import FrameTiming

#: Column names (lower case) taken as time in seconds, best first.
TIME_COLUMNS_S = ("time_s", "t_s", "time", "t", "times", "sec", "seconds", "time_sec", "time (s)", "time[s]",
                  "frame_time_s", "mid_s")
#: Column names (lower case) taken as time in minutes, best first.
TIME_COLUMNS_MIN = ("time_min", "t_min", "min", "minutes", "time (min)", "time[min]", "mid_min")
#: Column names (lower case) taken as the plasma activity, best first.
PLASMA_COLUMNS = ("cp", "cpl_metabcorr", "cp_metabcorr", "cpl", "cp_parent", "plasma", "plasma_metabcorr",
                  "plasma_parent", "parent_plasma", "plasma_activity", "aif", "activity", "value", "concentration",
                  "input", "input_function", "ascending_aorta")
#: Column names (lower case) taken as the whole-blood activity, best first. They are used as the plasma curve only
#: when the table has no plasma column at all (never in preference to one).
WHOLE_BLOOD_COLUMNS = ("whole_blood", "wholeblood", "whole blood", "cwb", "wb", "cbl_dispcorr", "cb_dispcorr", "cbl",
                       "cb", "blood", "whole_blood_activity", "blood_activity")
#: Every recognised activity column, plasma names first (kept for backwards compatibility).
ACTIVITY_COLUMNS = PLASMA_COLUMNS + WHOLE_BLOOD_COLUMNS

_TABLE_ACTION = ("Add a column named 'time_s' (seconds after injection) and a column named 'activity' "
                 "(plasma activity concentration), one row per blood sample.")


# ---------------------------------------------------------------------------------------------- Feng model
#: Feng, Huang & Wang, Int J Biomed Comput 32:95-110 (1993), model 2 fitted to FDG plasma data: amplitudes
#: A1 in µCi/mL/min, A2 and A3 in µCi/mL, exponents in 1/min, delay tau in min. (Some later codes swap the
#: pairing of lambda2/lambda3; A2 goes with the slow -0.0104/min term in the published fit.)
FENG_FDG_PARAMS: dict[str, float] = {
    "a1": 851.1225, "a2": 21.8798, "a3": 20.8113,
    "lambda1_per_min": -4.133859, "lambda2_per_min": -0.01043449, "lambda3_per_min": -0.1190996,
    "tau_min": 0.0,
}


def _feng_parts(params: Mapping[str, float] | None) -> tuple[float, float, float, float, float, float, float]:
    merged = dict(FENG_FDG_PARAMS)
    if params:
        unknown = set(params) - set(FENG_FDG_PARAMS)
        if unknown:
            raise InputError(f"Unknown Feng input-function parameter(s): {', '.join(sorted(unknown))}.",
                             f"Use only: {', '.join(FENG_FDG_PARAMS)}.")
        merged.update({k: float(v) for k, v in params.items()})
    keys = ("a1", "a2", "a3", "lambda1_per_min", "lambda2_per_min", "lambda3_per_min", "tau_min")
    values = tuple(float(merged[k]) for k in keys)
    if any(v >= 0 for v in values[3:6]):
        raise InputError("The Feng input-function exponents (lambda) must be negative (decaying curve).")
    return values  # type: ignore[return-value]


def feng_input(t_s: np.ndarray | Sequence[float] | float, params: Mapping[str, float] | None = None) -> np.ndarray:
    """Feng 1993 plasma input ``Cp(t)`` at times ``t_s`` (any shape, s after injection).

    ``Cp(t) = (A1 u - A2 - A3) e^{λ1 u} + A2 e^{λ2 u} + A3 e^{λ3 u}`` with ``u = t - τ`` (minutes), 0 for
    ``t < τ``. ``params`` overrides entries of :data:`FENG_FDG_PARAMS`. Returns µCi/mL (the model's unit), same
    shape as ``t_s``.
    """
    a1, a2, a3, l1, l2, l3, tau = _feng_parts(params)
    u = np.asarray(t_s, dtype=float) / 60.0 - tau
    after = u >= 0
    u = np.where(after, u, 0.0)
    value = (a1 * u - a2 - a3) * np.exp(l1 * u) + a2 * np.exp(l2 * u) + a3 * np.exp(l3 * u)
    return np.where(after, value, 0.0)


def feng_integral(t_s: np.ndarray | Sequence[float] | float, params: Mapping[str, float] | None = None) -> np.ndarray:
    """Analytic ``∫_0^t Cp`` of :func:`feng_input` at times ``t_s`` (s); returns µCi/mL·min, shape of ``t_s``."""
    a1, a2, a3, l1, l2, l3, tau = _feng_parts(params)
    u = np.maximum(np.asarray(t_s, dtype=float) / 60.0 - tau, 0.0)
    ramp = a1 * (np.exp(l1 * u) * (u / l1 - 1.0 / l1**2) + 1.0 / l1**2)
    return (ramp - (a2 + a3) * (np.exp(l1 * u) - 1.0) / l1 + a2 * (np.exp(l2 * u) - 1.0) / l2
            + a3 * (np.exp(l3 * u) - 1.0) / l3)


# ----------------------------------------------------------------------------------------- InputFunction
@dataclass(frozen=True, eq=False)
class InputFunction:
    """Plasma activity ``activity`` (N,) sampled at ``t_s`` (N,), seconds after injection.

    At least 3 samples, finite, times >= 0 and strictly increasing. ``unit`` is the activity unit (free text,
    e.g. "Bq/mL"); it is carried along, never converted.
    """

    t_s: np.ndarray
    activity: np.ndarray
    unit: str = ""

    def __post_init__(self) -> None:
        try:
            t = np.array(self.t_s, dtype=float).reshape(-1)
            a = np.array(self.activity, dtype=float).reshape(-1)
        except (TypeError, ValueError) as error:
            raise InputError("The input function contains values that are not numbers.", _TABLE_ACTION) from error
        if t.size != a.size:
            raise InputError(f"The input function has {t.size} sample times but {a.size} activity values.",
                             _TABLE_ACTION)
        if t.size < 3:
            raise InputError(f"The input function has only {t.size} sample(s); at least 3 are needed.",
                             "Provide the whole plasma curve from the injection to the end of the scan.")
        for values, what in ((t, "sample times"), (a, "activity values")):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                rows = ", ".join(str(int(i) + 1) for i in bad[:8])
                raise InputError(f"The input function has {bad.size} missing or non-numeric {what} (NaN) "
                                 f"(sample(s) {rows}).", "Fill in or delete those samples.")
        if t[0] < 0:
            raise InputError(f"The input function starts before the injection (first sample at {t[0]:g} s).",
                             "Give sample times in seconds after injection; shift them so the injection is at 0 s.")
        steps = np.flatnonzero(np.diff(t) <= 0)
        if steps.size:
            i = int(steps[0])
            raise InputError(f"The input function sample times are not increasing (sample {i + 2} at {t[i + 1]:g} s "
                             f"follows {t[i]:g} s).",
                             "Sort the samples by time and remove duplicates; if the table holds several scans, "
                             "keep one.")
        t.flags.writeable = False
        a.flags.writeable = False
        object.__setattr__(self, "t_s", t)
        object.__setattr__(self, "activity", a)
        knots_t, knots_a = (t, a) if t[0] == 0 else (np.concatenate([[0.0], t]), np.concatenate([[0.0], a]))
        dt = np.diff(knots_t)
        slope = np.append(np.diff(knots_a) / dt, 0.0)  # constant after the last sample
        # Cumulative first (activity*s) and second (activity*s^2) integrals at the knots, exact for the line.
        first = np.concatenate([[0.0], np.cumsum(dt * (knots_a[:-1] + 0.5 * slope[:-1] * dt))])
        second_steps = first[:-1] * dt + knots_a[:-1] * dt**2 / 2 + slope[:-1] * dt**3 / 6
        second = np.concatenate([[0.0], np.cumsum(second_steps)])
        object.__setattr__(self, "_knots", (knots_t, knots_a, slope, first, second))

    def __len__(self) -> int:
        return int(self.t_s.size)

    def __repr__(self) -> str:
        return (f"InputFunction({len(self)} samples, {self.t_s[0]:g}-{self.t_s[-1]:g} s, "
                f"peak {self.activity.max():.4g} {self.unit})")

    @property
    def end_s(self) -> float:
        """Time of the last sample, s."""
        return float(self.t_s[-1])

    # ------------------------------------------------------------------------------------------ evaluation
    def _locate(self, t_s: np.ndarray | Sequence[float] | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment index, offset into it (s) and a before-injection mask for times ``t_s`` (any shape)."""
        knots_t = self._knots[0]
        t = np.asarray(t_s, dtype=float)
        if not np.all(np.isfinite(t)):
            raise InputError("Times at which to evaluate the input function must be finite numbers.")
        before = t < 0
        t = np.where(before, 0.0, t)
        index = np.clip(np.searchsorted(knots_t, t, side="right") - 1, 0, knots_t.size - 1)
        return index, t - knots_t[index], before

    def value_at(self, t_s: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """``Cp`` at times ``t_s`` (any shape, s): linear between samples, ramp from (0, 0), held after the end."""
        _, knots_a, slope, _, _ = self._knots
        index, offset, before = self._locate(t_s)
        return np.where(before, 0.0, knots_a[index] + slope[index] * offset)

    def integral_from_injection(self, t_s: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """``∫_0^t Cp(τ) dτ`` at times ``t_s`` (any shape, s), in activity·min (exact for the sampled curve)."""
        _, knots_a, slope, first, _ = self._knots
        index, offset, before = self._locate(t_s)
        value = first[index] + knots_a[index] * offset + 0.5 * slope[index] * offset**2
        return np.where(before, 0.0, value) / 60.0

    def _double_integral_s(self, t_s: np.ndarray) -> np.ndarray:
        """``∫_0^t ∫_0^τ Cp`` in activity·s² at times ``t_s`` (exact for the sampled curve)."""
        _, knots_a, slope, first, second = self._knots
        index, offset, before = self._locate(t_s)
        value = (second[index] + first[index] * offset + knots_a[index] * offset**2 / 2
                 + slope[index] * offset**3 / 6)
        return np.where(before, 0.0, value)

    def mean_over_frames(self, timing: FrameTiming) -> np.ndarray:
        """(T,) frame-averaged ``Cp``: ``∫_frame Cp / duration``, in activity units."""
        first = self.integral_from_injection(timing.end_s) - self.integral_from_injection(timing.start_s)
        return first * 60.0 / timing.duration_s

    def mean_integral_over_frames(self, timing: FrameTiming) -> np.ndarray:
        """(T,) frame average of ``∫_0^t Cp`` (the Patlak abscissa numerator), in activity·min."""
        second = self._double_integral_s(timing.end_s) - self._double_integral_s(timing.start_s)
        return second / timing.duration_s / 60.0

    def check_covers(self, timing: FrameTiming) -> None:
        """Raise :class:`InputError` when the curve stops before the last frame starts (too much extrapolation)."""
        last_start = float(timing.start_s[-1])
        if self.end_s < last_start:
            raise InputError(f"The input function ends at {self.end_s / 60:.1f} min but the last frame starts at "
                             f"{last_start / 60:.1f} min.",
                             "Provide plasma samples up to the end of the scan (or drop the late frames).")

    def delayed(self, delay_s: float) -> InputFunction:
        """The curve arriving ``delay_s`` seconds later, ``Cp(t - delay)`` (an earlier one for a negative delay).

        A positive delay keeps every sample (0 before the first shifted sample, which the sampled curve reaches by
        its ramp from the injection); a negative one drops the samples it moves before the injection and starts at
        ``Cp(-delay)`` (the curve is held after its last sample, as always).
        """
        delay = float(delay_s)
        if not np.isfinite(delay):
            raise InputError(f"The input delay must be a number of seconds, got {delay_s!r}.")
        if delay == 0:
            return self
        if delay > 0:
            head_t, head_a = ([0.0], [0.0]) if self.t_s[0] == 0 else ([0.0, delay], [0.0, 0.0])
            return InputFunction(np.concatenate([head_t, self.t_s + delay]),
                                 np.concatenate([head_a, self.activity]), self.unit)
        keep = self.t_s + delay > 0
        t = np.concatenate([[0.0], self.t_s[keep] + delay])
        a = np.concatenate([self.value_at([-delay]), self.activity[keep]])
        return InputFunction(t, a, self.unit)

    def resampled(self, t_s: np.ndarray | Sequence[float]) -> InputFunction:
        """The same curve sampled at new times ``t_s`` (M,) in s."""
        t = np.asarray(t_s, dtype=float)
        return InputFunction(t, self.value_at(t), self.unit)

    # ---------------------------------------------------------------------------------------- constructors
    @classmethod
    def feng(cls, end_s: float = 3600.0, step_s: float = 1.0, params: Mapping[str, float] | None = None,
             unit: str = "uCi/mL") -> InputFunction:
        """The Feng 1993 FDG model sampled every ``step_s`` s from 0 to ``end_s`` (see :func:`feng_input`)."""
        if not (step_s > 0 and end_s > 2 * step_s):
            raise InputError("The Feng input function needs a positive step shorter than half the duration.")
        t = np.arange(0.0, end_s + 0.5 * step_s, step_s)
        return cls(t, feng_input(t, params), unit)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[float]], unit: str = "") -> InputFunction:
        """From a table given as ``{column name: values}``.

        Time: the first column named one of :data:`TIME_COLUMNS_S` (seconds) or :data:`TIME_COLUMNS_MIN`
        (minutes, converted to s), case-insensitive. Activity, in this order: the first of :data:`PLASMA_COLUMNS`;
        a column whose name contains 'plasma' or starts with 'cp'; only then a whole-blood column
        (:data:`WHOLE_BLOOD_COLUMNS`, or a name containing 'blood'); else the single remaining column. Rows whose
        activity cell is empty (NaN) are dropped (tables that hold samples of several curves at different rows).
        """
        names = blood_table_columns(columns)
        if names.plasma is None:
            others = [name for name in columns if name != names.time]
            raise InputError(f"The input function table has no recognisable activity column (found: "
                             f"{', '.join(map(str, others)) or 'none'}).",
                             "Name the plasma activity column 'activity' (or 'Cp').")
        return curve_from_columns(columns, names.time, names.time_scale, names.plasma, unit, "plasma")

    @classmethod
    def read_csv(cls, path: str | Path, where: Mapping[str, str] | None = None, unit: str = "") -> InputFunction:
        """Read a CSV table (header row; see :meth:`from_columns`).

        ``where`` keeps only rows whose text columns equal the given values, e.g. ``{"PET": "cgyu_1"}`` when
        one file holds several scans.
        """
        return cls.from_columns(read_pet_table(path, "input function", where), unit)


@dataclass(frozen=True)
class BloodTableColumns:
    """Which columns of a blood table hold what: ``time`` (its values times ``time_scale`` are seconds),
    ``plasma`` (None when no activity column was found) and ``whole_blood`` (None when absent, or when the only
    whole-blood column had to serve as the plasma curve)."""

    time: str
    time_scale: float
    plasma: str | None
    whole_blood: str | None


def _is_whole_blood_name(lower: str) -> bool:
    return lower in WHOLE_BLOOD_COLUMNS or ("blood" in lower and "plasma" not in lower)


def _numeric(values: object) -> bool:
    """True for a column of numbers (a text column, e.g. a scan name in a Slicer table, is not one)."""
    return np.asarray(values).dtype.kind in "biuf"


def _check_whole_blood_alone(whole_blood: object, unknown: list[object]) -> None:
    """InputError when a whole-blood column would serve as the plasma curve although the table has other columns
    (``unknown``: the other number columns; one of them may be a plasma column whose name is misspelt or damaged)."""
    if unknown:
        raise InputError(f"The blood table has no recognisable plasma column: the whole-blood column '{whole_blood}' "
                         f"would serve as the plasma curve, but the table also has the column(s) "
                         f"{', '.join(repr(str(name)) for name in unknown)}, which are not understood.",
                         "Name the plasma column 'Cp' (or 'plasma'), or remove the other columns to use whole blood "
                         "as the input function.")


def blood_table_columns(columns: Mapping[str, object]) -> BloodTableColumns:
    """Find the time, plasma and whole-blood columns of a table (names are matched case-insensitively).

    A whole-blood column is never taken as plasma when a plasma column exists; when no plasma column exists,
    the whole-blood column (else a single remaining column) serves as the plasma curve, provided no other column is
    left over (which may be a misspelt plasma column). Raises :class:`InputError` when there is no time column or
    when the whole blood would serve although other columns are left.
    """
    by_lower = {str(name).strip().lower(): name for name in columns}
    time_name, scale = None, 1.0
    for candidates, factor in ((TIME_COLUMNS_S, 1.0), (TIME_COLUMNS_MIN, 60.0)):
        found = next((by_lower[c] for c in candidates if c in by_lower), None)
        if found is not None:
            time_name, scale = found, factor
            break
    if time_name is None:
        looked = ", ".join(TIME_COLUMNS_S[:5] + TIME_COLUMNS_MIN[:2])
        raise InputError(f"The input function table has no time column (looked for {looked}, ...; found: "
                         f"{', '.join(map(str, columns)) or 'no columns'}).",
                         "Add a column named 'time_s' with the sample times in seconds after injection "
                         "(or 'time_min' in minutes).")
    others = [name for name in columns if name != time_name]
    lower = {name: str(name).strip().lower() for name in others}
    plasma = next((by_lower[c] for c in PLASMA_COLUMNS if c in by_lower and by_lower[c] != time_name), None)
    if plasma is None:
        loose = [n for n in others if "plasma" in lower[n] or lower[n].startswith("cp")]
        plasma = loose[0] if len(loose) == 1 else None
    whole_blood = next((by_lower[c] for c in WHOLE_BLOOD_COLUMNS if c in by_lower and by_lower[c] != time_name),
                       None)
    if whole_blood is None:
        loose = [n for n in others if n != plasma and _is_whole_blood_name(lower[n])]
        whole_blood = loose[0] if len(loose) == 1 else None
    if plasma is None:
        if whole_blood is not None:
            _check_whole_blood_alone(whole_blood, [n for n in others if n != whole_blood and _numeric(columns[n])])
            plasma, whole_blood = whole_blood, None
        elif len(others) == 1:
            plasma = others[0]
    return BloodTableColumns(time_name, scale, plasma, whole_blood)


def curve_from_columns(columns: Mapping[str, Sequence[float]], time_name: str, time_scale: float, value_name: str,
                       unit: str = "", what: str = "plasma") -> InputFunction:
    """The curve ``value_name`` against ``time_name`` (times ``time_scale`` -> s), dropping rows whose value is
    empty (NaN). A value without a time is an :class:`InputError`."""
    times = np.asarray(columns[time_name], dtype=float).reshape(-1) * time_scale
    values = np.asarray(columns[value_name], dtype=float).reshape(-1)
    if times.size != values.size:
        raise InputError(f"The {what} column '{value_name}' has {values.size} rows but the time column "
                         f"'{time_name}' has {times.size}.", _TABLE_ACTION)
    lost = np.flatnonzero(np.isfinite(values) & ~np.isfinite(times))
    if lost.size:
        rows = ", ".join(str(int(i) + 1) for i in lost[:8])
        raise InputError(f"The {what} column '{value_name}' has values without a sample time (row(s) {rows}).",
                         "Fill in the time of those samples or delete them.")
    keep = np.isfinite(values)
    if keep.sum() < 3:
        raise InputError(f"The {what} column '{value_name}' has only {int(keep.sum())} value(s); at least 3 are "
                         "needed.", "Provide the whole curve from the injection to the end of the scan.")
    return InputFunction(times[keep], values[keep], unit)


def check_frames_covered(input_function: InputFunction, timing: FrameTiming, *, end_tolerance: float = 0.1,
                         require_start: bool = True) -> None:
    """Raise :class:`InputError` when ``input_function`` does not describe the frames of ``timing``.

    End: the samples must reach the end of the last frame within ``end_tolerance`` x its duration, and must never
    stop before the last frame starts (after the last sample the curve is only held constant). Use
    ``end_tolerance=0.5`` for curves sampled at frame mid-times (an image-derived input), and ``1.0`` for the
    lenient rule of :meth:`InputFunction.check_covers` (what the kinetic models use: real blood sampling often
    stops inside the last frame, where the late curve is flat).

    Start (``require_start``): the first sample after the injection (an explicit ``(0 s, 0)`` sample does not
    count, it is what the curve assumes anyway) must not come after the first frame ends; otherwise the curve
    before it, and hence ``∫_0^t Cp`` for every frame, is a pure guess (a linear ramp from the injection).
    Pass ``require_start=False`` for a curve legitimately known only at late frames (e.g. venous samples used to
    scale a population input function).
    """
    if not (np.isfinite(end_tolerance) and end_tolerance >= 0):
        raise InputError(f"The end tolerance must be a fraction >= 0 of the last frame, got {end_tolerance}.")
    last_start, last_end = float(timing.start_s[-1]), float(timing.end_s[-1])
    allowed = end_tolerance * float(timing.duration_s[-1]) + 1e-6
    if input_function.end_s < last_start or input_function.end_s < last_end - allowed:
        raise InputError(f"The input function ends at {input_function.end_s / 60:.2f} min but the last frame runs "
                         f"from {last_start / 60:.2f} to {last_end / 60:.2f} min.",
                         "Provide plasma samples up to the end of the scan (or drop the late frames).")
    if require_start:
        t, a = input_function.t_s, input_function.activity
        first = float(t[1] if t[0] == 0 and a[0] == 0 else t[0])
        first_end = float(timing.end_s[0])
        if first > first_end + 1e-6:
            raise InputError(f"The input function starts at {first / 60:.2f} min, after the first frame ends "
                             f"({first_end / 60:.2f} min): the curve before that, and so its integral from the "
                             "injection, would be a guess.",
                             "Provide blood samples (or an image-derived curve) from the injection on, or use a "
                             "population input function scaled to the late samples.")

