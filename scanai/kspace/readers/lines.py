"""Assembling Cartesian k-space from single readouts ("lines"), shared by the twix and ISMRMRD readers.

A raw-data file is a list of readouts, each (coils, samples) with counters saying where it belongs (phase-encoding
line, slice or partition, contrast, repetition). :func:`assemble_lines` places them on a centred grid and
averages readouts that land on the same line (averages, repeated lines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import FileFormatError
from scanai.core.progress import Progress

#: No Cartesian scan leaves more lines than this unacquired between two acquired ones (acceleration 16 leaves 15); a
#: larger gap is a damaged readout header (a flipped high bit puts a readout thousands of lines away).
MAX_COUNTER_GAP = 64
#: Every Cartesian scan acquires a line this close to the k-space centre (partial Fourier keeps the centre;
#: acceleration up to 16 leaves at most 15 lines out), in every slice (2-D) or around the centre partition (3-D).
CENTRE_WINDOW = 8
_DAMAGED_ACTION = "Copy the raw data again from the scanner; a damaged readout header cannot be repaired here."


@dataclass(frozen=True)
class LineTable:
    """Where each selected readout goes; every array is int64 with one entry per readout.

    ky:         row of the output grid, 0 <= ky < n_ky.
    slice:      slice (or kz partition) index of the output grid, 0 <= slice < n_slices.
    contrast:   contrast (echo) index, 0 <= contrast < n_contrasts.
    repetition: repetition index, 0 <= repetition < n_repetitions.
    """

    ky: np.ndarray
    slice: np.ndarray
    contrast: np.ndarray
    repetition: np.ndarray


@dataclass(frozen=True)
class Grid:
    """Output grid: sizes of the (slices, ky, kx) axes and where a readout's first sample lands on kx."""

    n_slices: int
    n_ky: int
    n_kx: int
    kx_offset: int


def compact(values: np.ndarray) -> tuple[np.ndarray, int]:
    """(indices, count): each value's rank among the distinct values (0, 1, ...), so gaps leave no empty frame."""
    distinct, inverse = np.unique(np.asarray(values), return_inverse=True)
    return inverse.astype(np.int64).ravel(), int(distinct.size)


def check_counter_gaps(indices: np.ndarray, centre: int | None, what: str, source: str) -> None:
    """FileFormatError when the acquired ``indices`` of a k-space axis (phase-encoding lines or partitions) jump by
    more than :data:`MAX_COUNTER_GAP` with nothing acquired in between, or when the axis ``centre`` (k = 0; None when
    unknown) lies that far outside them. what: the axis, e.g. "phase-encoding line"."""
    distinct = np.unique(np.asarray(indices, dtype=np.int64))
    gaps = np.diff(distinct)
    if gaps.size and int(gaps.max()) > MAX_COUNTER_GAP:
        k = int(np.argmax(gaps))
        raise FileFormatError(f"{source} is damaged: its {what} counters jump from {distinct[k]} to {distinct[k + 1]} "
                              "with nothing acquired in between, which no Cartesian scan does.", _DAMAGED_ACTION)
    if centre is not None and not distinct[0] - MAX_COUNTER_GAP <= centre <= distinct[-1] + MAX_COUNTER_GAP:
        raise FileFormatError(f"{source} is damaged: it puts the k-space centre at {what} {centre}, far outside the "
                              f"acquired {what}s {distinct[0]} to {distinct[-1]}.", _DAMAGED_ACTION)


def check_balanced(groups: np.ndarray, what: str, source: str) -> None:
    """FileFormatError when one value of ``groups`` (a slice, contrast or repetition index per readout, 0-based)
    holds fewer than half the readouts of the fullest one: a damaged counter (or an interrupted scan) made it."""
    counts = np.bincount(np.asarray(groups, dtype=np.int64))
    if counts.size > 1 and 2 * int(counts.min()) < int(counts.max()):
        sparse = int(np.argmin(counts))
        raise FileFormatError(f"{source} is damaged: {what} {sparse + 1} holds {int(counts.min())} readout(s) where "
                              f"another holds {int(counts.max())} (a damaged readout counter, or an interrupted scan).",
                              _DAMAGED_ACTION)


def check_counters(ky: tuple[np.ndarray, int | None], kz: tuple[np.ndarray, int | None] | None, table: LineTable,
                   source: str) -> None:
    """The checks of :func:`check_counter_gaps` (``ky``, and ``kz`` for a 3-D scan: the counters as in the file and
    the centre, or None) and :func:`check_balanced` (2-D slices, contrasts and repetitions of ``table``)."""
    check_counter_gaps(*ky, "phase-encoding line", source)
    if kz is not None:
        check_counter_gaps(*kz, "partition", source)
    else:
        check_balanced(table.slice, "slice", source)
    check_balanced(table.contrast, "contrast (echo)", source)
    check_balanced(table.repetition, "repetition", source)


def centred_axis(indices: np.ndarray, centre: int | None, size_hint: int | None = None) -> tuple[int, int]:
    """(size, shift) of a k-space axis so that ``centre`` lands at ``size // 2`` and every index fits.

    indices:   acquired positions along the axis (e.g. phase-encoding counters, or 0..samples-1 on a readout).
    centre:    the position of k = 0 among them; None when unknown (the indices are then taken as grid positions).
    size_hint: the nominal grid size (e.g. the header's encoded matrix); used when everything fits in it.
    Returns the grid size and the shift to add to an index to get its grid position. When the hint does not fit,
    the smallest grid symmetric around the centre is used (asymmetric echo or partial Fourier: zero padding).
    """
    low, high = int(np.min(indices)), int(np.max(indices))
    if centre is None:
        size = size_hint if size_hint is not None and size_hint > high and low >= 0 else high + 1
        return int(size), 0
    if size_hint is not None and size_hint >= 2:
        shift = size_hint // 2 - centre
        if low + shift >= 0 and high + shift < size_hint:
            return int(size_hint), int(shift)
    half = max(centre - low, high - centre + 1, 1)
    return 2 * half, half - centre


def assemble_lines(read_line: Callable[[int], np.ndarray], table: LineTable, n_coils: int, grid: Grid,
                   progress: Progress, message: str = "Reading k-space line") -> tuple[np.ndarray, np.ndarray]:
    """Place every readout on the grid; readouts that land on the same line are averaged.

    read_line: ``read_line(i)`` -> complex (coils, samples) of readout ``i`` (already flipped if reversed).
    Returns ``(frames, count)``: frames complex64 (repetitions, contrasts, coils, slices, ky, kx), zero where no
    readout landed; count int64 (repetitions, contrasts, slices, ky), readouts averaged into each line.
    """
    n_rep = int(table.repetition.max()) + 1
    n_con = int(table.contrast.max()) + 1
    total = np.zeros((n_rep, n_con, n_coils, grid.n_slices, grid.n_ky, grid.n_kx), dtype=np.complex128)
    count = np.zeros((n_rep, n_con, grid.n_slices, grid.n_ky), dtype=np.int64)
    n_lines = len(table.ky)
    for i in range(n_lines):
        if i % 32 == 0:
            progress(i / n_lines, f"{message} {i + 1}/{n_lines}")
        samples = read_line(i)
        rep, con, sl, ky = table.repetition[i], table.contrast[i], table.slice[i], table.ky[i]
        total[rep, con, :, sl, ky, grid.kx_offset:grid.kx_offset + samples.shape[-1]] += samples
        count[rep, con, sl, ky] += 1
    progress(1.0, "Reading k-space: done")
    frames = total / np.maximum(count, 1)[:, :, np.newaxis, :, :, np.newaxis]
    return frames.astype(np.complex64), count


def check_centre_acquired(count: np.ndarray, slices_are_kz: bool, source: str) -> None:
    """FileFormatError when a frame (repetition, contrast) or a 2-D slice has no readout within
    :data:`CENTRE_WINDOW` lines of the k-space centre: its central lines were lost (damaged readout headers that
    made the reader skip readouts, or a stray counter); or when the centre partition of a 3-D scan holds fewer than
    half the lines of the fullest one (a stray partition counter). count: (repetitions, contrasts, slices, ky)
    readouts per line, as :func:`assemble_lines` returns it."""
    n_slices, n_ky = count.shape[2:]
    per_partition = (count[0, 0] > 0).sum(axis=1)
    if slices_are_kz and 2 * int(per_partition[n_slices // 2]) < int(per_partition.max()):
        raise FileFormatError(f"{source} is damaged: its centre partition holds {int(per_partition[n_slices // 2])} "
                              f"line(s) where partition {int(np.argmax(per_partition)) + 1} holds "
                              f"{int(per_partition.max())}, which no 3-D scan does (a damaged partition counter).",
                              _DAMAGED_ACTION)
    near = count[..., max(0, n_ky // 2 - CENTRE_WINDOW):n_ky // 2 + CENTRE_WINDOW + 1] > 0
    if slices_are_kz:
        near = near[:, :, max(0, n_slices // 2 - CENTRE_WINDOW):n_slices // 2 + CENTRE_WINDOW + 1].any(axis=(2, 3))
    else:
        near = near.any(axis=3)
    if near.all():
        return
    place = [int(v) + 1 for v in np.argwhere(~near)[0]]
    where = f"repetition {place[0]}, contrast {place[1]}" + ("" if slices_are_kz else f", slice {place[2]}")
    raise FileFormatError(f"{source} is damaged or incomplete: {where} has no readout within {CENTRE_WINDOW} lines of "
                          "the k-space centre, which every scan acquires (readouts were lost to damaged headers).",
                          _DAMAGED_ACTION)


def split_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(data, frames or None): the first repetition and contrast, and all of them when there is more than one."""
    data = frames[0, 0]
    return data, (frames if frames.shape[0] * frames.shape[1] > 1 else None)


def assembly_facts(count: np.ndarray, kx_offset: int, n_kx: int, n_samples: int, n_repetitions: int,
                   n_contrasts: int, dropped: dict) -> dict:
    """Metadata every line-based reader reports about how the lines were placed.

    count: (repetitions, contrasts, slices, ky) how many lines landed at each position (0 = not acquired,
    > 1 = averaged); kx_offset / n_kx / n_samples: where the acquired samples sit in the padded readout.
    """
    return {
        "sampled_fraction": float((count[0, 0] > 0).mean()),
        "averaged_lines": int((count[0, 0] > 1).sum()),
        "readout_padding": [int(kx_offset), int(n_kx - n_samples - kx_offset)],
        "repetitions": n_repetitions,
        "contrasts": n_contrasts,
        "dropped_counters": dropped,
    }
