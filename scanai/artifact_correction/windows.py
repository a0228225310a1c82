"""Acquisition time windows and cardiac phases of phase volumes; selection, ranking and the output-window rule.

Vocabulary (digest §1.3): a *phase volume* is one 3-D volume reconstructed from the data of one short time window
(a patent "image sequence" / "first time period"); the set of them is a *phase sequence*. Times are seconds from
the scan start; the cardiac phase is given as a percentage of the R-R interval (``phase_pct``, 0-100 %) or as a
fraction (``phase_fraction``, 0-1), always measured from the R peak that starts the interval:
``phase = (t - R_prev) / (R_next - R_prev)``, which follows an irregular rhythm beat by beat.

What is here:

* :class:`PhaseWindow`, :class:`RPeaks` (from a table, from a raw ECG trace, or a regular rhythm);
* windows from sequence index values (``%`` or ``s``), from a timing table, or at a given phase (¶91);
* the selection modes of ¶55-¶57: successive windows, below a threshold, N smallest, with an image-based (¶56) or
  an ECG-based (¶57) motion amplitude;
* ranking (¶63-¶64, claims 7-9) and the output-window rule (¶68-¶70, claims 1/13: M < N).

Nothing here imports torch or Slicer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scanai.artifact_correction.cardiac_cycle import contraction_rate
from scanai.core.errors import InputError
from scanai.io.text_table import read_text_table

#: Sequence index units read as a cardiac phase in % of the R-R interval.
PHASE_UNITS = ("%", "percent", "pct", "%rr")
#: Sequence index units read as the time of each window's centre, with the factor to seconds.
TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3}
#: Plausible R-R intervals (s); anything outside is almost surely a unit mistake (ms given as s, ...).
RR_RANGE_S = (0.15, 5.0)

_TIME_COLUMNS = {"time_s": 1.0, "time": 1.0, "t_s": 1.0, "t": 1.0, "time_ms": 1e-3}
_ECG_COLUMNS = ("ecg_mv", "ecg", "ecg_uv", "lead", "signal", "mv")
_PEAK_COLUMNS = {"r_peak_time_s": 1.0, "r_peak_s": 1.0, "r_peaks_s": 1.0, "r_peak": 1.0, "r_peak_time_ms": 1e-3}
_ECG_ACTION = ("Give a table with columns 'time_s' and 'ecg_mV' (the ECG trace), or a single column "
               "'r_peak_time_s' (R-peak times in seconds from the scan start).")
_COVER_ACTION = ("Load an ECG (or R-peak table) recorded over the whole scan, with an R peak before the first window "
                 "and one after the last, or give a regular R-R interval instead.")
_TIMING_ACTION = "Give an ECG / R-peak table or the R-R interval (heart rate) of the scan."


# --------------------------------------------------------------------------------------------------------------
# Windows and R peaks
# --------------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------
def read_ecg_table(source: str | Path | Mapping[str, Sequence[object]]) -> RPeaks:
    """R peaks from an ECG table: a CSV/TSV file with a header row, or a ``{column: values}`` mapping (e.g. the
    columns of a Slicer table node).

    Columns (case-insensitive): ``r_peak_time_s`` (R-peak times, s; used when not empty), else ``time_s`` and
    ``ecg_mV`` (the trace, R peaks detected by :func:`detect_r_peaks`). ``time_ms`` / ``r_peak_time_ms`` are
    converted to seconds. Empty cells at the end of a column are ignored (columns of different lengths).
    """
    columns = _read_table_file(source, "ECG") if isinstance(source, (str, Path)) else _lower_keys(source)
    peak = next((name for name in _PEAK_COLUMNS if name in columns), None)
    time = next((name for name in _TIME_COLUMNS if name in columns), None)
    ecg = next((name for name in _ECG_COLUMNS if name in columns), None)
    if peak is not None:
        peaks = _trimmed(_numeric(columns[peak], peak, "ECG"))
        if peaks.size or time is None or ecg is None:  # an empty R-peak column next to a trace: use the trace
            return RPeaks(peaks * _PEAK_COLUMNS[peak])
    if time is None or ecg is None:
        raise InputError(f"The ECG table has no usable columns (found: {', '.join(columns) or 'none'}).", _ECG_ACTION)
    t, x = _numeric(columns[time], time, "ECG"), _numeric(columns[ecg], ecg, "ECG")
    keep = _trailing_empty_rows(t, x)
    return RPeaks.from_ecg(t[:keep] * _TIME_COLUMNS[time], x[:keep])


def windows_from_table(rows: Sequence[Mapping[str, object]]) -> list[PhaseWindow]:
    """Phase windows from a timing table: one row per phase volume with columns ``window_start_s``,
    ``window_end_s`` (s) and optionally ``item`` (the phase volume's index; rows are returned in item order),
    ``cycle_index`` and ``phase_pct`` (empty cells = unknown). Column names are case-insensitive."""
    if not rows:
        raise InputError("The timing table has no rows.", "Give one row per phase volume with window_start_s and "
                         "window_end_s.")
    table = [_lower_keys({k: [v] for k, v in row.items()}) for row in rows]
    missing = [name for name in ("window_start_s", "window_end_s") if name not in table[0]]
    if missing:
        raise InputError(f"The timing table has no column {' or '.join(missing)} (found: {', '.join(table[0])}).",
                         "Give one row per phase volume with window_start_s and window_end_s in seconds.")
    windows = [_window_from_row(row, number) for number, row in enumerate(table, start=1)]
    if "item" not in table[0]:
        return windows
    items = [_cell(row, "item", number) for number, row in enumerate(table, start=1)]
    if any(item is None or item != int(item) for item in items) or len(set(items)) != len(items):
        raise InputError("The timing table's 'item' column must hold distinct whole numbers (the phase volume "
                         "indexes).", "Number the rows 0, 1, 2, ... in the order of the phase sequence.")
    return [windows[i] for i in np.argsort(items, kind="stable")]


def read_timing_table(path: str | Path) -> list[PhaseWindow]:
    """Phase windows from a CSV/TSV timing table file (see :func:`windows_from_table`)."""
    columns = _read_table_file(path, "timing")
    count = len(next(iter(columns.values())))
    return windows_from_table([{name: values[i] for name, values in columns.items()} for i in range(count)])


def _window_from_row(row: Mapping[str, list[object]], number: int) -> PhaseWindow:
    start, end = _cell(row, "window_start_s", number), _cell(row, "window_end_s", number)
    if start is None or end is None:
        raise InputError(f"Row {number} of the timing table has no window start or end.",
                         "Fill in window_start_s and window_end_s (seconds) for every phase volume.")
    cycle, phase = _cell(row, "cycle_index", number), _cell(row, "phase_pct", number)
    if cycle is not None and (cycle != int(cycle) or cycle < 0):
        raise InputError(f"Row {number} of the timing table has cycle_index {cycle}; it must be a whole number >= 0.")
    return PhaseWindow(start, end, None if cycle is None else int(cycle), phase)


def _cell(row: Mapping[str, list[object]], name: str, number: int) -> float | None:
    """A numeric cell (None when the column is absent or the cell empty)."""
    if name not in row:
        return None
    value = row[name][0]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number_value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"Row {number} of the timing table has '{value}' in column {name}, not a number.",
                         "Write plain numbers (seconds, percent, whole cycle numbers).") from None
    if math.isnan(number_value):
        return None
    return number_value


def _read_table_file(path: str | Path, what: str) -> dict[str, list[str]]:
    """``{lower-case column name: cells}`` of a CSV / TSV / semicolon table with a header row."""
    header, rows = read_text_table(path, f"{what} table")
    names = [name.strip().lower() for name in header]
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(names) if name}


def _lower_keys(columns: Mapping[str, object]) -> dict[str, object]:
    return {str(name).strip().lower(): values for name, values in columns.items()}


def _numeric(values: object, name: str, what: str) -> np.ndarray:
    """A column as floats; empty cells become NaN, other text is an :class:`InputError`."""
    cells = np.atleast_1d(np.asarray(values, dtype=object)).reshape(-1)
    out = np.empty(cells.size, dtype=np.float64)
    for i, cell in enumerate(cells):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            out[i] = np.nan
            continue
        try:
            out[i] = float(cell)
        except (TypeError, ValueError):
            raise InputError(f"The {what} table column '{name}' has '{cell}' at row {i + 1}, not a number.",
                             "Keep only numbers in that column (a single header row).") from None
    return out


def _trimmed(values: np.ndarray) -> np.ndarray:
    """Values without trailing empty (NaN) cells."""
    finite = np.flatnonzero(np.isfinite(values))
    return values[: finite[-1] + 1] if finite.size else values[:0]


def _trailing_empty_rows(*columns: np.ndarray) -> int:
    """Number of rows once rows empty in every column are dropped from the end."""
    finite = np.flatnonzero(np.any([np.isfinite(c) for c in columns], axis=0))
    return int(finite[-1] + 1) if finite.size else 0


def _span(start_s: float, end_s: float) -> str:
    """'a-b s', or 'a s' for a single time."""
    return f"{start_s:.3f} s" if end_s <= start_s else f"{start_s:.3f}-{end_s:.3f} s"


def _rows(indices: np.ndarray, base: int = 1) -> str:
    """Up to 8 indices as text, counted from ``base`` (1 for table rows, 0 for phase volume items)."""
    shown = ", ".join(str(int(i) + base) for i in indices[:8])
    return shown + (", ..." if indices.size > 8 else "")


# --------------------------------------------------------------------------------------------------------------
# Windows from phases, index values and R peaks
# --------------------------------------------------------------------------------------------------------------
def window_at_phase(phase_pct: float, duration_s: float, rhythm: RPeaks | float | None = None, cycle_index: int = 0,
                    *, r_peaks: RPeaks | None = None, rr_s: float | None = None) -> PhaseWindow:
    """The window of ``duration_s`` seconds centred on ``phase_pct`` (0-100 %) of R-R interval ``cycle_index``.

    The rhythm is ``rhythm`` (R peaks, or a regular R-R interval in s with an R peak at 0 s), or the keyword
    ``r_peaks`` / ``rr_s``. ¶91: 69 % of a 1 s cycle with a 30 ms window -> 0.675-0.705 s.
    """
    peaks = _rhythm(rhythm, r_peaks, rr_s, cycles=int(cycle_index) + 1)
    phase = float(phase_pct)
    if not (math.isfinite(phase) and 0.0 <= phase <= 100.0):
        raise InputError(f"A cardiac phase must lie within 0-100 % of the R-R interval, got {phase_pct}.",
                         "Give phases in percent of the R-R interval.")
    centre = peaks.time_of(cycle_index, phase / 100.0)
    duration = _positive(duration_s, "The window duration", "s")
    rr = float(peaks.rr_s[int(cycle_index)])
    if duration >= rr:
        raise InputError(f"A {duration:.3f} s window is not shorter than the {rr:.3f} s heart cycle (claim 4).",
                         "Use windows shorter than the R-R interval (e.g. a half-scan, 0.1-0.3 s).")
    return PhaseWindow(centre - 0.5 * duration, centre + 0.5 * duration, int(cycle_index), phase)


def windows_from_index(index_values: Sequence[float] | np.ndarray, index_unit: str, duration_s: float,
                       r_peaks: RPeaks | None = None, rr_s: float | None = None,
                       cycle_index: int = 0) -> list[PhaseWindow]:
    """One window per phase volume from the phase sequence's index values.

    ``index_unit`` "%" (cardiac phase 0-100, all in R-R interval ``cycle_index``; needs ``r_peaks`` or ``rr_s``)
    or "s" / "ms" (the time of each window's centre; phases are filled in when ``r_peaks`` or ``rr_s`` is given,
    a regular rhythm then having an R peak at 0 s, which starts cycle 0 unless a window starts before 0 s).
    ``duration_s``: the window length (s).
    """
    values = np.asarray(index_values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise InputError("The phase sequence has no index values.", "Give one phase or time per phase volume.")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InputError(f"The phase sequence's index values are missing (NaN) at item(s) {_rows(bad, base=0)}.",
                         "Give every phase volume its phase (%) or window time (s).")
    if np.unique(values).size != values.size:
        raise InputError("Two phase volumes have the same index value.", "Give every phase volume its own phase "
                         "or time.")
    unit = _index_kind(index_unit)
    if unit == "%":
        if r_peaks is None and rr_s is None:
            raise InputError("The phase sequence is indexed by cardiac phase (%), but the scan timing is missing, "
                             "so the phases cannot be placed in time.", _TIMING_ACTION)
        peaks = _rhythm(None, r_peaks, rr_s, cycles=int(cycle_index) + 1)
        return [window_at_phase(v, duration_s, peaks, cycle_index) for v in values]
    duration = _positive(duration_s, "The window duration", "s")
    centres = values * TIME_UNITS[unit]
    windows = [PhaseWindow(c - 0.5 * duration, c + 0.5 * duration) for c in centres]
    if r_peaks is None and rr_s is None:
        return windows
    return assign_phases(windows, r_peaks if r_peaks is not None else regular_peaks_covering(windows, rr_s))


def regular_peaks_covering(windows: Sequence[PhaseWindow], rr_s: float) -> RPeaks:
    """A regular rhythm of R-R interval ``rr_s`` with an R peak at 0 s, from the beat before the first window to
    the one after the last (beats before 0 s only when a window starts before 0 s)."""
    rr = _positive(rr_s, "The R-R interval", "s")
    first = min(0, math.floor(min(w.start_s for w in windows) / rr))
    last = math.ceil(max(w.end_s for w in windows) / rr)
    return RPeaks.regular(rr, last - first + 1, first * rr)


def consecutive_windows(start_s: float, duration_s: float, count: int, step_s: float | None = None
                        ) -> list[PhaseWindow]:
    """``count`` windows of ``duration_s`` seconds, starting every ``step_s`` (default: end to end) from
    ``start_s`` (¶55 (b): 0 s, 0.05 s, N = 3 -> 0-0.05, 0.05-0.1, 0.1-0.15 s)."""
    duration = _positive(duration_s, "The window duration", "s")
    step = duration if step_s is None else _positive(step_s, "The window step", "s")
    if int(count) < 1:
        raise InputError(f"The number of windows must be at least 1, got {count}.")
    return [PhaseWindow(start_s + k * step, start_s + k * step + duration) for k in range(int(count))]


def assign_phases(windows: Sequence[PhaseWindow], r_peaks: RPeaks) -> list[PhaseWindow]:
    """Copies of ``windows`` with ``cycle_index`` and ``phase_pct`` of their mid-points from the R peaks.
    Raises :class:`InputError` when the R peaks do not cover every window."""
    windows = _checked_windows(windows)
    r_peaks.check_covers_windows(windows)
    cycles, fractions = r_peaks.locate(np.array([w.mid_s for w in windows]))
    return [replace(w, cycle_index=int(c), phase_pct=100.0 * float(f))
            for w, c, f in zip(windows, cycles, fractions, strict=True)]


def to_one_cycle(windows: Sequence[PhaseWindow], rhythm: RPeaks | float, cycle_index: int = 0) -> list[PhaseWindow]:
    """Windows from different cycles re-expressed at the same phases and durations in one R-R interval (e.g. to
    apply :func:`output_windows` to windows from several beats, ¶63). Every window needs its ``phase_pct``."""
    windows = _checked_windows(windows)
    if any(w.phase_pct is None for w in windows):
        raise InputError("Some windows have no cardiac phase, so they cannot be placed in one heart cycle.",
                         _TIMING_ACTION)
    return [window_at_phase(w.phase_pct, w.duration_s, rhythm, cycle_index) for w in windows]  # type: ignore[arg-type]


def _index_kind(index_unit: str) -> str:
    """'%' for a phase index, else the key of :data:`TIME_UNITS`."""
    unit = str(index_unit or "").strip().lower()
    if unit in PHASE_UNITS:
        return "%"
    if unit in TIME_UNITS:
        return unit
    raise InputError(f"The phase sequence's index unit is '{index_unit}'; it must be '%' (cardiac phase, 0-100) or "
                     "'s' (time of each window's centre).",
                     "Set the sequence's index unit to % or s (Sequences module), or give a timing table with "
                     "window_start_s and window_end_s.")


def _rhythm(rhythm: RPeaks | float | None, r_peaks: RPeaks | None, rr_s: float | None, cycles: int) -> RPeaks:
    """R peaks from one of the three ways of giving them; a regular R-R interval has an R peak at 0 s."""
    given = rhythm if rhythm is not None else r_peaks if r_peaks is not None else rr_s
    if given is None:
        raise InputError("The scan timing is missing.", _TIMING_ACTION)
    if isinstance(given, RPeaks):
        return given
    return RPeaks.regular(float(given), max(2, cycles + 1))


def _positive(value: float | None, what: str, unit: str) -> float:
    number = float("nan") if value is None else float(value)
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{what} must be a positive number of {unit}, got {value}.")
    return number


def _checked_windows(windows: Sequence[PhaseWindow], minimum: int = 1) -> list[PhaseWindow]:
    windows = list(windows)
    if len(windows) < minimum:
        raise InputError(f"At least {minimum} phase window(s) are needed, got {len(windows)}.")
    if not all(isinstance(w, PhaseWindow) for w in windows):
        raise InputError("Phase windows must be PhaseWindow objects.")
    return windows


# --------------------------------------------------------------------------------------------------------------
# Ranking (¶62-¶64, claims 7-9)
# --------------------------------------------------------------------------------------------------------------
def same_cycle(windows: Sequence[PhaseWindow]) -> bool:
    """True when every window carries the same ``cycle_index``. Windows without any cycle information (all None,
    e.g. a time-indexed sequence with no ECG) count as one cycle; a mix of known and unknown is an error."""
    cycles = {w.cycle_index for w in _checked_windows(windows)}
    if None in cycles and len(cycles) > 1:
        raise InputError("Some windows have a heart-cycle number and others do not.", _TIMING_ACTION)
    return len(cycles) == 1


def rank_windows(windows: Sequence[PhaseWindow], descending: bool = False) -> list[int]:
    """Indices of ``windows`` in ranked order (¶63, claims 7-9).

    Same cycle: chronological order of the mid-points. Different cycles: by the mid-point's relative position in
    its own cycle (``phase_pct``; ties broken chronologically). ¶64: (0-0.2, 1.4-1.6, 2.2-2.4 s), RR 1 s from 0 s
    -> 10, 50, 30 % -> ascending [0, 2, 1], descending [1, 2, 0].
    """
    windows = _checked_windows(windows)
    if same_cycle(windows):
        keys = [(w.mid_s, w.start_s) for w in windows]
    else:
        if any(w.phase_pct is None for w in windows):
            raise InputError("The phase windows come from different heart cycles, so they are ranked by their "
                             "position in the cycle (phase %), but some have no phase.", _TIMING_ACTION)
        keys = [(round(w.phase_pct, 6), w.mid_s) for w in windows]  # type: ignore[arg-type]
    order = sorted(range(len(windows)), key=lambda i: keys[i])
    return order[::-1] if descending else order


# --------------------------------------------------------------------------------------------------------------
# Selection (¶55-¶57)
# --------------------------------------------------------------------------------------------------------------
def select_successive(windows: Sequence[PhaseWindow], n: int, first: int = 0) -> list[int]:
    """¶55 (b): indices of ``n`` chronologically successive windows, starting at the ``first``-th in time order
    (returned in time order)."""
    windows = _checked_windows(windows)
    n, first = int(n), int(first)
    if n < 1 or first < 0 or first + n > len(windows):
        raise InputError(f"Cannot take {n} successive windows from window {first} on: there are {len(windows)}.",
                         "Choose fewer phase volumes or an earlier first window.")
    chronological = sorted(range(len(windows)), key=lambda i: (windows[i].mid_s, windows[i].start_s))
    return chronological[first:first + n]


def select_smallest(amplitudes: Sequence[float] | np.ndarray, n: int) -> list[int]:
    """¶57: indices of the ``n`` smallest motion amplitudes, in index order (ties: the earlier index)."""
    values = _amplitudes(amplitudes)
    n = int(n)
    if not 1 <= n <= values.size:
        raise InputError(f"Cannot select {n} phase volumes out of {values.size}.",
                         "Choose a number of phase volumes between 1 and the number available.")
    return sorted(int(i) for i in np.argsort(values, kind="stable")[:n])


def select_below(amplitudes: Sequence[float] | np.ndarray, threshold: float, minimum: int = 1) -> list[int]:
    """¶55 (a) / ¶57: indices (in order) of the amplitudes strictly below ``threshold`` (same unit).
    Raises :class:`InputError` when fewer than ``minimum`` qualify."""
    values = _amplitudes(amplitudes)
    limit = float(threshold)
    if not math.isfinite(limit):
        raise InputError(f"The motion-amplitude threshold must be a number, got {threshold}.")
    chosen = [int(i) for i in np.flatnonzero(values < limit)]
    if len(chosen) < int(minimum):
        raise InputError(f"Only {len(chosen)} phase volume(s) have a motion amplitude below {limit:.4g} (the smallest "
                         f"is {values.min():.4g}); {int(minimum)} are needed.",
                         "Raise the threshold, or select the N smallest amplitudes instead.")
    return chosen


def _amplitudes(amplitudes: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(amplitudes, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InputError(f"Motion amplitudes must be a non-empty list of numbers, got shape {values.shape}.")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InputError(f"The motion amplitude of phase volume(s) {_rows(bad, base=0)} is missing (NaN).",
                         "Check those phase volumes for missing voxels (NaN) or restrict the amplitude to an ROI.")
    return values


# --------------------------------------------------------------------------------------------------------------
# Motion amplitudes (¶56, ¶57)
# --------------------------------------------------------------------------------------------------------------
def image_motion_amplitude(volumes: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """¶56: per phase volume, the mean |V_k - V_k-1| and |V_k+1 - V_k| inside ``mask`` (one neighbour at the ends,
    the average of the two elsewhere), in image units (HU for CT).

    volumes: (N, K, J, I) or (N, H, W), N >= 2, in chronological order. mask: (K, J, I) / (H, W) boolean or None.
    Returns (N,) float64.
    """
    data = np.asarray(volumes)
    if data.ndim not in (3, 4) or data.shape[0] < 2:
        raise InputError(f"The image motion amplitude needs at least 2 phase volumes as an (N, K, J, I) or "
                         f"(N, H, W) array, got shape {data.shape}.", "Give two or more phase volumes.")
    if mask is None:
        region = np.ones(data.shape[1:], dtype=bool)
    else:
        region = np.asarray(mask, dtype=bool)
        if region.shape != data.shape[1:]:
            raise InputError(f"The ROI mask has shape {region.shape} but the phase volumes have {data.shape[1:]}.",
                             "Use a mask drawn on the phase volumes' grid.")
        if not region.any():
            raise InputError("The ROI mask is empty.", "Draw the region (e.g. the heart) on the phase volumes.")
    steps = np.array([_mean_abs_difference(data[k], data[k + 1], region) for k in range(data.shape[0] - 1)])
    amplitude = np.empty(data.shape[0])
    amplitude[0], amplitude[-1] = steps[0], steps[-1]
    amplitude[1:-1] = 0.5 * (steps[:-1] + steps[1:])
    return amplitude


def _mean_abs_difference(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    difference = np.abs(b[region].astype(np.float64) - a[region].astype(np.float64))
    if not np.all(np.isfinite(difference)):
        raise InputError("The phase volumes contain missing voxels (NaN) inside the region.",
                         "Fill the missing voxels or restrict the amplitude to an ROI without them.")
    return float(difference.mean())


def ecg_motion_amplitude(windows: Sequence[PhaseWindow], r_peaks: RPeaks, samples: int = 33) -> np.ndarray:
    """¶57: per window, the mean cardiac motion rate |dc/dphase| / RR over the window (contraction per second),
    with c(phase) the reference contraction curve (:mod:`scanai.artifact_correction.cardiac_cycle`) and the phase of
    each time
    from its own R-R interval. Smallest in diastasis (about 65-80 %). Returns (N,) float64; raises
    :class:`InputError` when the R peaks do not cover every window."""
    windows = _checked_windows(windows)
    r_peaks.check_covers_windows(windows)
    weights = np.full(max(2, int(samples)), 1.0)
    weights[[0, -1]] = 0.5
    amplitude = np.empty(len(windows))
    for n, window in enumerate(windows):
        times = np.linspace(window.start_s, window.end_s, weights.size)
        cycles, fractions = r_peaks.locate(times)
        rate = np.abs(contraction_rate(fractions)) / r_peaks.rr_s[cycles]
        amplitude[n] = float(np.sum(weights * rate) / weights.sum())
    return amplitude


# --------------------------------------------------------------------------------------------------------------
# Output windows (¶68-¶70)
# --------------------------------------------------------------------------------------------------------------
def output_windows(inputs: Sequence[PhaseWindow], m: int = 1) -> list[PhaseWindow]:
    """The M output ("second") windows of N ranked, chronological input windows (¶68-¶70; claims 1/13: M < N).

    Every output lasts the inputs' mean duration. When N - M is even the outputs are centred on the mid-points
    of the M inner inputs; when it is odd, half-way between consecutive mid-points of the M + 1 inner inputs.
    ¶68-¶70 with 0.05 s windows from 0 s: N=2, M=1 -> 0.025-0.075; N=3 -> 0.05-0.1; N=4, M=1 -> 0.075-0.125;
    N=4, M=2 -> 0.05-0.1 and 0.1-0.15 s. Phases are filled in when all inputs share one cycle and have a phase.
    """
    inputs = _checked_windows(inputs, minimum=2)
    n, m = len(inputs), int(m)
    if not 1 <= m < n:
        raise InputError(f"{m} output window(s) from {n} phase volumes: the correction must return fewer volumes "
                         "than it is given (M < N, claims 1 and 13) and at least one.",
                         f"Ask for 1 to {n - 1} output volume(s), or give more phase volumes.")
    mids = np.array([w.mid_s for w in inputs])
    if np.any(np.diff(mids) <= 0):
        raise InputError("The output window needs the phase windows in chronological order (one heart cycle).",
                         "Rank the windows first (rank_windows); windows from different cycles must be placed in "
                         "one cycle at their phases (to_one_cycle).")
    duration = float(np.mean([w.duration_s for w in inputs]))
    centres = _rule_positions(mids, m)
    phases = _output_phases(inputs, m)
    if phases is None:
        return [PhaseWindow(c - 0.5 * duration, c + 0.5 * duration) for c in centres]
    return [PhaseWindow(c - 0.5 * duration, c + 0.5 * duration, inputs[0].cycle_index, float(p))
            for c, p in zip(centres, phases, strict=True)]


def _rule_positions(positions: np.ndarray, m: int) -> np.ndarray:
    """The ¶68-¶70 centres of ``m`` outputs among ``positions`` (N,) sorted increasing."""
    n = positions.size
    if (n - m) % 2 == 0:
        skip = (n - m) // 2
        return positions[skip:skip + m].copy()
    skip = (n - m - 1) // 2
    inner = positions[skip:skip + m + 1]
    return 0.5 * (inner[:-1] + inner[1:])


def _output_phases(inputs: list[PhaseWindow], m: int) -> np.ndarray | None:
    """Output phases (%) by the same rule, when every input has a phase and all share one known cycle."""
    if any(w.phase_pct is None or w.cycle_index is None for w in inputs) or len({w.cycle_index for w in inputs}) > 1:
        return None
    phases = np.array([w.phase_pct for w in inputs], dtype=np.float64)
    if np.any(np.diff(phases) <= 0):
        return None
    return _rule_positions(phases, m)
