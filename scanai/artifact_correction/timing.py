"""The scan's timing: acquisition windows (:class:`PhaseWindow`), R peaks (:class:`RPeaks`, from a table, a regular
rhythm, or detected in a raw ECG trace), and the shared wording of row and time-span messages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError


@dataclass(frozen=True)
class PhaseWindow:
    """One acquisition window (a patent "time period").

    start_s, end_s: window limits in seconds from the scan start (end > start).
    cycle_index: the R-R interval holding the mid-point (0 = the one that starts at the first R peak), or None.
    phase_pct: position of the mid-point in its R-R interval, 0-100 %, or None when unknown.
    """

    start_s: float
    end_s: float
    cycle_index: int | None = None
    phase_pct: float | None = None

    def __post_init__(self) -> None:
        start, end = float(self.start_s), float(self.end_s)
        if not (math.isfinite(start) and math.isfinite(end) and end > start):
            raise InputError(f"A time window must run from a start to a later end (finite seconds), got "
                             f"{self.start_s} to {self.end_s} s.", "Check the window start and end times.")
        object.__setattr__(self, "start_s", start)
        object.__setattr__(self, "end_s", end)
        if self.cycle_index is not None:
            object.__setattr__(self, "cycle_index", int(self.cycle_index))
        if self.phase_pct is not None:
            phase = float(self.phase_pct)
            if not (math.isfinite(phase) and 0.0 <= phase <= 100.0):
                raise InputError(f"A cardiac phase must lie within 0-100 % of the R-R interval, got {phase}.",
                                 "Check the phase values (percent of the R-R interval).")
            object.__setattr__(self, "phase_pct", phase)

    @property
    def mid_s(self) -> float:
        """Mid-point of the window (s)."""
        return 0.5 * (self.start_s + self.end_s)

    @property
    def duration_s(self) -> float:
        """Length of the window (s)."""
        return self.end_s - self.start_s


def _positive(value: float | None, what: str, unit: str) -> float:
    number = float("nan") if value is None else float(value)
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{what} must be a positive number of {unit}, got {value}.")
    return number


_ECG_ACTION = ("Give a table with columns 'time_s' and 'ecg_mV' (the ECG trace), or a single column "
               "'r_peak_time_s' (R-peak times in seconds from the scan start).")


#: Plausible R-R intervals (s); anything outside is almost surely a unit mistake (ms given as s, ...).
RR_RANGE_S = (0.15, 5.0)


_COVER_ACTION = ("Load an ECG (or R-peak table) recorded over the whole scan, with an R peak before the first window "
                 "and one after the last, or give a regular R-R interval instead.")


@dataclass(frozen=True, eq=False)
class RPeaks:
    """R-peak times in seconds from the scan start: 1-D, finite, strictly increasing, at least 2."""

    times_s: np.ndarray

    def __post_init__(self) -> None:
        times = np.array(self.times_s, dtype=np.float64).reshape(-1)
        if times.size < 2:
            raise InputError(f"The ECG gives {times.size} R peak(s); at least 2 are needed to define a heart cycle.",
                             "Provide an ECG (or R-peak list) covering at least one whole heart beat around the "
                             "scan, or give the R-R interval.")
        bad = np.flatnonzero(~np.isfinite(times))
        if bad.size:
            raise InputError(f"The R-peak times contain missing or non-numeric values (NaN) at row(s) "
                             f"{_rows(bad)}.", "Fill in or delete those rows of the R-peak table.")
        rr = np.diff(times)
        if np.any(rr <= 0):
            raise InputError(f"The R-peak times must increase strictly; row {int(np.argmax(rr <= 0)) + 2} does not.",
                             "Sort the R-peak table by time and remove duplicate rows.")
        low, high = RR_RANGE_S
        if rr.min() < low or rr.max() > high:
            raise InputError(f"R-R intervals of {rr.min():.3g}-{rr.max():.3g} s are not plausible heart beats "
                             f"(expected {low}-{high} s).",
                             "Check that the R-peak times are in seconds (not milliseconds) and that no beat is "
                             "missing or doubled.")
        times.setflags(write=False)
        object.__setattr__(self, "times_s", times)

    @classmethod
    def regular(cls, rr_s: float, count: int, start_s: float = 0.0) -> RPeaks:
        """``count`` R peaks every ``rr_s`` seconds from ``start_s`` (a regular rhythm)."""
        rr = _positive(rr_s, "The R-R interval", "s")
        if int(count) < 2:
            raise InputError(f"A regular rhythm needs at least 2 R peaks, got {count}.")
        return cls(float(start_s) + rr * np.arange(int(count)))

    @classmethod
    def from_ecg(cls, time_s: Sequence[float] | np.ndarray, ecg_mv: Sequence[float] | np.ndarray, *,
                 refractory_s: float = 0.25, polarity: str = "auto") -> RPeaks:
        """Detect R peaks in an ECG trace (see :func:`detect_r_peaks`)."""
        return cls(detect_r_peaks(time_s, ecg_mv, refractory_s=refractory_s, polarity=polarity))

    @property
    def rr_s(self) -> np.ndarray:
        """(R-1,) R-R interval lengths (s); interval c runs from peak c to peak c+1."""
        return np.diff(self.times_s)

    @property
    def cycles(self) -> int:
        """Number of complete R-R intervals."""
        return int(self.times_s.size - 1)

    def locate(self, time_s: np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Cycle index (int array) and phase fraction in [0, 1] of times (s, any shape) inside the R peaks.

        A time exactly on an inner R peak starts the next cycle (phase 0); the last R peak ends the last cycle
        (phase 1). Raises :class:`InputError` for times outside the first-last R peak.
        """
        times = np.asarray(time_s, dtype=np.float64)
        if times.size:
            self.check_covers(float(times.min()), float(times.max()))
        cycle = np.clip(np.searchsorted(self.times_s, times, side="right") - 1, 0, self.cycles - 1)
        start = self.times_s[cycle]
        fraction = np.clip((times - start) / (self.times_s[cycle + 1] - start), 0.0, 1.0)
        return cycle.astype(int), fraction

    def phase_of(self, time_s: float) -> tuple[int, float]:
        """(cycle_index, phase_fraction 0-1) of one time (s): ``(t - R_prev) / (R_next - R_prev)``."""
        cycle, fraction = self.locate(np.array([float(time_s)]))
        return int(cycle[0]), float(fraction[0])

    def time_of(self, cycle_index: int, phase_fraction: float) -> float:
        """Time (s) at ``phase_fraction`` (0-1) of R-R interval ``cycle_index`` (0 .. cycles-1)."""
        cycle, fraction = int(cycle_index), float(phase_fraction)
        if not 0 <= cycle < self.cycles:
            raise InputError(f"Heart cycle {cycle} does not exist: the ECG holds cycles 0-{self.cycles - 1}.",
                             "Choose a cycle inside the ECG recording, or load a longer ECG.")
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise InputError(f"A phase fraction must lie within 0-1, got {phase_fraction}.")
        return float(self.times_s[cycle] + fraction * (self.times_s[cycle + 1] - self.times_s[cycle]))

    def check_covers(self, start_s: float, end_s: float) -> None:
        """Raise :class:`InputError`, naming the uncovered times, unless [start_s, end_s] lies between the first
        and the last R peak (a phase needs the R peak before and the one after)."""
        first, last = float(self.times_s[0]), float(self.times_s[-1])
        tolerance = 1e-9 * max(1.0, abs(first), abs(last))
        gaps = []
        if start_s < first - tolerance:
            gaps.append(f"{_span(start_s, min(end_s, first))} before the first R peak")
        if end_s > last + tolerance:
            gaps.append(f"{_span(max(start_s, last), end_s)} after the last R peak")
        if gaps:
            raise InputError(f"The ECG does not cover the phase windows: its R peaks span {_span(first, last)} "
                             f"but the windows need {_span(start_s, end_s)} (uncovered: {'; '.join(gaps)}).",
                             _COVER_ACTION)

    def check_covers_windows(self, windows: Sequence[PhaseWindow]) -> None:
        """Raise :class:`InputError` naming every window (item number and times) that does not lie between the
        first and the last R peak."""
        first, last = float(self.times_s[0]), float(self.times_s[-1])
        tolerance = 1e-9 * max(1.0, abs(first), abs(last))
        outside = [f"{i} ({w.start_s:.3f}-{w.end_s:.3f} s)" for i, w in enumerate(windows)
                   if w.start_s < first - tolerance or w.end_s > last + tolerance]
        if outside:
            raise InputError(f"The ECG does not cover the phase windows: its R peaks span {first:.3f}-{last:.3f} s "
                             f"but phase window(s) {', '.join(outside[:8])}{', ...' if len(outside) > 8 else ''} "
                             "lie outside.", _COVER_ACTION)


def detect_r_peaks(time_s: Sequence[float] | np.ndarray, ecg_mv: Sequence[float] | np.ndarray, *,
                   refractory_s: float = 0.25, polarity: str = "auto") -> np.ndarray:
    """R-peak times (s) of an ECG trace, refined to sub-sample precision.

    time_s: (S,) strictly increasing, evenly spaced sample times (s), at least 100 Hz; ecg_mv: (S,) one lead
    (any unit, mV usual). QRS complexes are found as peaks (``scipy.signal.find_peaks``) of the QRS energy (the
    trace band-passed to 8-25 Hz, squared, averaged over 80 ms), at least ``refractory_s`` apart (0.25 s = 240
    beats/min) and with at least a fifth of the typical QRS energy, so P and T waves are not taken. The R peak is
    the extreme of the baseline-free trace within 80 ms of each QRS: its maximum, or its minimum for an inverted
    lead (``polarity`` "auto" decides from the QRS shapes; "positive" / "negative" force it).
    """
    from scipy.ndimage import median_filter, uniform_filter1d
    from scipy.signal import butter, find_peaks, sosfiltfilt

    t, x = _checked_trace(time_s, ecg_mv)
    dt = float(np.median(np.diff(t)))
    if 1.0 / dt < 100.0:
        raise InputError(f"The ECG is sampled at {1.0 / dt:.0f} Hz, too coarse to time the R peaks.",
                         "Export the ECG at 100 Hz or more, or give the R-peak times ('r_peak_time_s').")
    if t[-1] - t[0] < 0.5:
        raise InputError(f"The ECG lasts only {t[-1] - t[0]:.2f} s.", "Provide an ECG covering at least two heart "
                         "beats around the scan, or an 'r_peak_time_s' column with the R-peak times.")
    x = x - median_filter(x, size=max(3, int(round(0.6 / dt)) | 1), mode="nearest")
    band = sosfiltfilt(butter(2, [8.0, 25.0], btype="bandpass", fs=1.0 / dt, output="sos"), x)
    energy = uniform_filter1d(band * band, size=max(1, int(round(0.08 / dt))), mode="nearest")
    distance = max(1, int(round(_positive(refractory_s, "The refractory period", "s") / dt)))
    _, props = find_peaks(energy, distance=distance, prominence=0.0)
    typical = float(np.percentile(props["prominences"], 90)) if props["prominences"].size else 0.0
    qrs = find_peaks(energy, distance=distance, prominence=0.2 * typical)[0] if typical > 0 else np.zeros(0, int)
    if qrs.size < 2:
        raise InputError(f"Fewer than 2 R peaks were found in the ECG ({t[-1] - t[0]:.2f} s long).",
                         "Provide an ECG covering at least two heart beats around the scan, or an 'r_peak_time_s' "
                         "column with the R-peak times.")
    half = max(1, int(round(0.08 / dt)))
    x = _oriented(x, qrs, half, polarity)
    starts = np.maximum(qrs - half, 0)
    peaks = np.unique([a + int(np.argmax(x[a:q + half + 1])) for a, q in zip(starts, qrs, strict=True)])
    return _refined_times(t, x, peaks)


def _checked_trace(time_s: Sequence[float] | np.ndarray, ecg_mv: Sequence[float] | np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time_s, dtype=np.float64).reshape(-1)
    x = np.asarray(ecg_mv, dtype=np.float64).reshape(-1)
    if t.size != x.size:
        raise InputError(f"The ECG has {t.size} sample times but {x.size} values.", _ECG_ACTION)
    for values, name in ((t, "time"), (x, "ECG")):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InputError(f"The ECG {name} column has missing or non-numeric values (NaN) at row(s) {_rows(bad)}.",
                             "Fill in or delete those rows of the ECG table.")
    if t.size < 10:
        raise InputError(f"The ECG has only {t.size} samples.", _ECG_ACTION)
    if np.any(np.diff(t) <= 0):
        raise InputError("The ECG sample times must increase strictly.", "Sort the ECG table by time and remove "
                         "duplicate rows.")
    return t, x


def _oriented(x: np.ndarray, qrs: np.ndarray, half: int, polarity: str) -> np.ndarray:
    """The baseline-free trace ``x`` with its R waves pointing up (flipped when the QRS complexes around the
    sample indices ``qrs``, +-``half`` samples, point clearly down)."""
    if polarity not in ("auto", "positive", "negative"):
        raise InputError(f"Unknown ECG polarity '{polarity}'.", "Use 'auto', 'positive' or 'negative'.")
    if polarity == "negative":
        return -x
    if polarity == "auto":
        segments = [x[max(0, q - half):q + half + 1] for q in qrs]
        up = np.median([segment.max() for segment in segments])
        down = np.median([-segment.min() for segment in segments])
        if down > 1.5 * up:
            return -x
    return x


def _refined_times(t: np.ndarray, x: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Peak times with a parabola through each peak sample and its two neighbours (s)."""
    inner = (peaks > 0) & (peaks < x.size - 1)
    times = t[peaks].copy()
    p = peaks[inner]
    left, centre, right = x[p - 1], x[p], x[p + 1]
    curvature = left - 2.0 * centre + right
    offset = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    offset = np.clip(offset, -0.5, 0.5)
    step = np.where(offset >= 0, t[np.minimum(p + 1, t.size - 1)] - t[p], t[p] - t[p - 1])
    times[inner] = t[p] + offset * step
    return times


def _span(start_s: float, end_s: float) -> str:
    """'a-b s', or 'a s' for a single time."""
    return f"{start_s:.3f} s" if end_s <= start_s else f"{start_s:.3f}-{end_s:.3f} s"


def _rows(indices: np.ndarray, base: int = 1) -> str:
    """Up to 8 indices as text, counted from ``base`` (1 for table rows, 0 for phase volume items)."""
    shown = ", ".join(str(int(i) + base) for i in indices[:8])
    return shown + (", ..." if indices.size > 8 else "")
