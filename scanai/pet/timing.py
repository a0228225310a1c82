"""Frame timing of a dynamic PET acquisition.

Every time is in seconds after tracer injection (t = 0). A frame ``i`` covers ``[start_s[i], end_s[i])``.
Frames must be in acquisition order, must not overlap, and may leave gaps (e.g. bed moves of a whole-body
protocol). Kinetic rate constants elsewhere are in 1/min, so :attr:`FrameTiming.mid_min` is provided too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.pet.tables import read_pet_table

#: Two frames may overlap by this much (s) before it is an error: rounding in DICOM/CSV frame times.
OVERLAP_TOLERANCE_S = 1e-3

_HOW_TO_FIX = ("Give one start time and one duration in seconds per frame, in acquisition order "
               "(e.g. a CSV with columns start_s,duration_s).")


def _as_times(values: Sequence[float] | np.ndarray | None, what: str) -> np.ndarray:
    """``values`` as a finite float vector (T,), or an :class:`InputError` naming ``what``."""
    if values is None:
        raise InputError(f"The dynamic PET data has missing frame timing (no {what} given).", _HOW_TO_FIX)
    try:
        array = np.array(values, dtype=float).reshape(-1) if np.ndim(values) <= 1 else None
    except (TypeError, ValueError) as error:
        raise InputError(f"The frame {what} are not numbers.", _HOW_TO_FIX) from error
    if array is None:
        raise InputError(f"The frame {what} must be a list of numbers, got an array of shape {np.shape(values)}.",
                         _HOW_TO_FIX)
    if array.size == 0:
        raise InputError(f"The dynamic PET data has missing frame timing (the list of {what} is empty).",
                         _HOW_TO_FIX)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise InputError(f"The frame {what} of frame(s) {_frame_list(bad)} are missing or not numbers.", _HOW_TO_FIX)
    return array


def _frame_list(indices: np.ndarray, limit: int = 8) -> str:
    """1-based, human-readable list of frame numbers."""
    numbers = [str(int(i) + 1) for i in indices[:limit]]
    return ", ".join(numbers) + (f" (and {len(indices) - limit} more)" if len(indices) > limit else "")


#: Columns a frame table may hold beside durations alone without changing what they mean (frame numbers).
_FRAME_NUMBER_COLUMNS = ("frame", "frames", "frame_number", "frame_index", "index", "number", "#")


def _check_durations_alone(columns: dict[str, Sequence[float]]) -> None:
    """InputError when a frame table would be read from its durations alone (contiguous frames from the injection)
    although it has other number columns than durations and frame numbers: one may be a misspelt or damaged start
    column."""
    unknown = [name for name in columns if not name.strip().lower().startswith("duration")
               and name.strip().lower() not in _FRAME_NUMBER_COLUMNS and np.asarray(columns[name]).dtype.kind in "biuf"]
    if unknown:
        raise InputError(f"The frame table has durations but no start times, and the column(s) "
                         f"{', '.join(repr(name) for name in unknown)}, which are not understood: the frames cannot "
                         "safely be taken as contiguous from the injection.",
                         "Name the start column 'start_s' (seconds after injection), or keep only 'duration_s' for "
                         "contiguous frames from the injection.")


@dataclass(frozen=True, eq=False)
class FrameTiming:
    """Start and duration of each frame, seconds after injection.

    start_s:    (T,) frame start times in s, increasing, >= 0.
    duration_s: (T,) frame durations in s, > 0; frame ``i`` ends at ``start_s[i] + duration_s[i]``, no later
                than frame ``i + 1`` starts.
    """

    start_s: np.ndarray
    duration_s: np.ndarray

    def __post_init__(self) -> None:
        start = _as_times(self.start_s, "start times")
        duration = _as_times(self.duration_s, "durations")
        if start.shape != duration.shape:
            raise InputError(f"The frame timing lists {start.size} start times but {duration.size} durations.",
                             _HOW_TO_FIX)
        negative = np.flatnonzero(start < 0)
        if negative.size:
            raise InputError(f"Frame(s) {_frame_list(negative)} start before the injection (negative start time).",
                             "Give frame times in seconds after injection; shift them so the injection is at 0 s.")
        not_positive = np.flatnonzero(duration <= 0)
        if not_positive.size:
            raise InputError(f"Frame(s) {_frame_list(not_positive)} have a zero or negative duration.", _HOW_TO_FIX)
        not_increasing = np.flatnonzero(np.diff(start) <= 0)
        if not_increasing.size:
            raise InputError(f"The frame start times are not increasing (at frame {_frame_list(not_increasing + 1)}).",
                             "List the frames in acquisition order, one row per frame.")
        overlapping = np.flatnonzero(start[:-1] + duration[:-1] > start[1:] + OVERLAP_TOLERANCE_S)
        if overlapping.size:
            first = int(overlapping[0])
            raise InputError(f"Frame {first + 1} ({start[first]:g} s + {duration[first]:g} s) overlaps frame "
                             f"{first + 2} (starting at {start[first + 1]:g} s).",
                             "Check that the durations are in seconds and belong to the right frames.")
        start.flags.writeable = False
        duration.flags.writeable = False
        object.__setattr__(self, "start_s", start)
        object.__setattr__(self, "duration_s", duration)

    # ----------------------------------------------------------------------------------------------- views
    def __len__(self) -> int:
        return int(self.start_s.size)

    @property
    def end_s(self) -> np.ndarray:
        """(T,) frame end times in s."""
        return self.start_s + self.duration_s

    @property
    def mid_s(self) -> np.ndarray:
        """(T,) frame mid-times in s (arithmetic midpoint, not decay-weighted)."""
        return self.start_s + 0.5 * self.duration_s

    @property
    def mid_min(self) -> np.ndarray:
        """(T,) frame mid-times in minutes."""
        return self.mid_s / 60.0

    def subset(self, indices: Sequence[int] | np.ndarray) -> FrameTiming:
        """The timing of the frames ``indices`` (0-based, increasing) only."""
        indices = np.asarray(indices, dtype=int)
        return FrameTiming(self.start_s[indices], self.duration_s[indices])

    def __repr__(self) -> str:
        return (f"FrameTiming({len(self)} frames, {self.start_s[0]:g} s to {self.end_s[-1]:g} s, "
                f"durations {self.duration_s.min():g}-{self.duration_s.max():g} s)")

    # -------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_start_duration(cls, start_s: Sequence[float], duration_s: Sequence[float]) -> FrameTiming:
        """From (T,) start times and (T,) durations, both in s."""
        return cls(np.asarray(start_s, dtype=float), np.asarray(duration_s, dtype=float))

    @classmethod
    def from_start_end(cls, start_s: Sequence[float], end_s: Sequence[float]) -> FrameTiming:
        """From (T,) start and (T,) end times in s."""
        start = _as_times(start_s, "start times")
        end = _as_times(end_s, "end times")
        if start.shape != end.shape:
            raise InputError(f"The frame timing lists {start.size} start times but {end.size} end times.",
                             _HOW_TO_FIX)
        return cls(start, end - start)

    @classmethod
    def from_durations(cls, duration_s: Sequence[float], first_start_s: float = 0.0) -> FrameTiming:
        """Contiguous frames from their (T,) durations in s; the first starts at ``first_start_s``."""
        duration = _as_times(duration_s, "durations")
        start = first_start_s + np.concatenate([[0.0], np.cumsum(duration)[:-1]])
        return cls(start, duration)

    @classmethod
    def from_mid_times(cls, mid_s: Sequence[float], first_start_s: float = 0.0) -> FrameTiming:
        """Infer frames from (T,) mid-times in s alone.

        Assumption: the frames are **contiguous** (each starts where the previous one ends, no gaps) and the
        first starts at ``first_start_s`` (the injection, 0 s, by default). Then ``duration[i] = 2 (mid[i] -
        start[i])`` and ``start[i + 1] = start[i] + duration[i]``. Mid-times that do not fit this pattern (a
        gap, a rounded time) give a zero or negative duration and an :class:`InputError`: give start times and
        durations instead.
        """
        mid = _as_times(mid_s, "mid-times")
        start = np.empty_like(mid)
        duration = np.empty_like(mid)
        current = float(first_start_s)
        for index, middle in enumerate(mid):
            start[index] = current
            duration[index] = 2.0 * (middle - current)
            if duration[index] <= 0:
                raise InputError(
                    f"The frame durations cannot be worked out from the mid-times alone: frame {index + 1} "
                    f"(mid-time {middle:g} s) would start at {current:g} s, at or after its middle. The frames are "
                    "probably not contiguous or the mid-times are rounded.",
                    _HOW_TO_FIX)
            current = current + duration[index]
        return cls(start, duration)

    @classmethod
    def from_columns(cls, columns: dict[str, Sequence[float]]) -> FrameTiming:
        """From a table: ``start_s`` with ``duration_s`` or ``end_s`` (or the same in minutes: ``*_min``).

        Column names are matched without regard to case; ``start``/``duration``/``end`` alone mean seconds. Durations
        alone give contiguous frames from the injection, only when no other column (but a frame number) is left.
        """
        lowered = {name.strip().lower(): values for name, values in columns.items()}

        def find(stem: str) -> np.ndarray | None:
            for name, scale in ((f"{stem}_s", 1.0), (stem, 1.0), (f"{stem}_sec", 1.0), (f"{stem}_min", 60.0),
                                (f"{stem}time", 1.0), (f"{stem}_time", 1.0), (f"{stem}_time_s", 1.0)):
                if name in lowered:
                    return _as_times(lowered[name], f"{stem} times") * scale
            return None

        start, duration, end = find("start"), find("duration"), find("end")
        if start is not None and duration is not None:
            return cls(start, duration)
        if start is not None and end is not None:
            return cls.from_start_end(start, end)
        if duration is not None:
            _check_durations_alone(columns)
            return cls.from_durations(duration)
        raise InputError(f"The frame table has no usable timing columns (found: {', '.join(columns) or 'none'}).",
                         "Add columns named 'start_s' and 'duration_s' (seconds after injection), one row per frame.")

    @classmethod
    def read_csv(cls, path: str | Path) -> FrameTiming:
        """Read a frame table (CSV, header row; see :meth:`from_columns`)."""
        return cls.from_columns(read_pet_table(path, "frame timing"))

    def to_csv(self, path: str | Path) -> Path:
        """Write ``start_s,duration_s,end_s,mid_s`` rows; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = ["start_s,duration_s,end_s,mid_s"]
        rows += [f"{s:.6g},{d:.6g},{e:.6g},{m:.6g}" for s, d, e, m in
                 zip(self.start_s, self.duration_s, self.end_s, self.mid_s, strict=True)]
        path.write_text("\n".join(rows) + "\n")
        return path
