"""Acquisition time windows and cardiac phases of phase volumes; selection, ranking and the output-window rule.

Vocabulary (digest §1.3): a *phase volume* is one 3-D volume reconstructed from the data of one short time window
(a patent "image sequence" / "first time period"); the set of them is a *phase sequence*. Times are seconds from
the scan start; the cardiac phase is given as a percentage of the R-R interval (``phase_pct``, 0-100 %) or as a
fraction (``phase_fraction``, 0-1), always measured from the R peak that starts the interval:
``phase = (t - R_prev) / (R_next - R_prev)``, which follows an irregular rhythm beat by beat.

What is here:

* windows (:class:`~scanai.artifact_correction.timing.PhaseWindow`, with the R peaks of
  :mod:`scanai.artifact_correction.timing`; timing tables are read by :mod:`scanai.artifact_correction.tables`)
  from sequence index values (``%`` or ``s``) or at a given phase (¶91);
* the selection modes of ¶55-¶57: successive windows, below a threshold, N smallest, with an image-based (¶56) or
  an ECG-based (¶57) motion amplitude;
* ranking (¶63-¶64, claims 7-9) and the output-window rule (¶68-¶70, claims 1/13: M < N).

Nothing here imports torch or Slicer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from scanai.artifact_correction.cardiac_cycle import contraction_rate
from scanai.artifact_correction.timing import PhaseWindow, RPeaks, _positive, _rows
from scanai.core.errors import InputError

#: Sequence index units read as a cardiac phase in % of the R-R interval.
PHASE_UNITS = ("%", "percent", "pct", "%rr")
#: Sequence index units read as the time of each window's centre, with the factor to seconds.
TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3}

_TIMING_ACTION = "Give an ECG / R-peak table or the R-R interval (heart rate) of the scan."


# --------------------------------------------------------------------------------------------------------------
# Windows and R peaks
# --------------------------------------------------------------------------------------------------------------












# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------
























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


def is_phase_index(index_unit: str) -> bool:
    """True when a phase sequence's index unit is a cardiac phase (%), False for a time unit; InputError for
    anything else."""
    return _index_kind(index_unit) == "%"


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
