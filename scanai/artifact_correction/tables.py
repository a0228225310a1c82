"""Tables of a scan's timing: an ECG trace or R-peak table (:func:`read_ecg_table`) and a table of phase windows
(:func:`read_timing_table`, :func:`windows_from_table`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from scanai.artifact_correction.timing import _ECG_ACTION, PhaseWindow, RPeaks
from scanai.core.errors import InputError
from scanai.io.text_table import read_text_table

_TIME_COLUMNS = {"time_s": 1.0, "time": 1.0, "t_s": 1.0, "t": 1.0, "time_ms": 1e-3}


_ECG_COLUMNS = ("ecg_mv", "ecg", "ecg_uv", "lead", "signal", "mv")


_PEAK_COLUMNS = {"r_peak_time_s": 1.0, "r_peak_s": 1.0, "r_peaks_s": 1.0, "r_peak": 1.0, "r_peak_time_ms": 1e-3}




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
