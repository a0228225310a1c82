"""The local background of the residual energy: sample-excluding median filters, periodic like k-space."""

from __future__ import annotations

import functools
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np


@functools.cache
def _workers() -> ThreadPoolExecutor:
    """Two threads for the NumPy work that releases the GIL (partitions): the detector's medians run on both
    cores of a small machine."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="scanai-kspace")


def _ring(shape: tuple[int, int], hole: tuple[int, int]) -> np.ndarray:
    """Footprint of ``shape`` with a centred ``hole`` left out."""
    footprint = np.ones(shape, dtype=bool)
    top, left = (shape[0] - hole[0]) // 2, (shape[1] - hole[1]) // 2
    footprint[top:top + hole[0], left:left + hole[1]] = False
    return footprint


# Background footprints: a 5 x 5 square, a 1 x 15 readout line and a 9 x 1 phase-encoding line, the sample left out.
_FOOTPRINTS = (_ring((5, 5), (1, 1)), _ring((1, 15), (1, 1)), _ring((9, 1), (1, 1)))


def _fill_unacquired(values: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """``values`` with every not-acquired sample set to the value of the nearest acquired one."""
    if acquired.all():
        return values
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(~acquired, return_indices=True)
    return values[iy, ix]


def _excluding(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """float32 copy of ``values`` with NaN where not ``usable``: the median filters leave those samples out
    (never-acquired samples, zero-filled by partial Fourier or partial echo, and samples already flagged)."""
    return np.where(usable, values, np.float32(np.nan)).astype(np.float32, copy=False)


#: Half extents (rows, columns) of the union of the background footprints.
_REACH = (max(f.shape[0] for f in _FOOTPRINTS) // 2, max(f.shape[1] for f in _FOOTPRINTS) // 2)


def _median_filter(values: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.median_filter(values, footprint=footprint, mode="wrap")`` (the same values: the element of
    rank ``footprint.sum() // 2``), about twice as fast for these small footprints. Periodic, like the prediction
    (:func:`predict`): a spike's leakage across the border lands in the background of the samples it reaches."""
    return _median_of_padded(np.pad(values, [(n // 2, n // 2) for n in footprint.shape], mode="wrap"), footprint)


def _median_of_padded(padded: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Median filter of an array already padded by ``footprint.shape // 2`` on every side (the padding is cut
    off): a partition over a sliding window view. NaN samples are left out of every window that holds them (the
    element of rank ``count // 2`` of the others); NaN where a window holds nothing else."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(padded, footprint.shape)[..., footprint]
    rank = int(footprint.sum()) // 2
    median = np.partition(windows, rank, axis=-1)[..., rank]
    missing = np.isnan(padded)
    if missing.any():  # windows holding left-out samples (NaN): the median of the others, NaN when none is left
        reached = np.any(sliding_window_view(missing, footprint.shape)[..., footprint], axis=-1)
        ordered = np.sort(windows[reached], axis=-1)  # NaN last
        count = np.sum(~np.isnan(ordered), axis=-1)
        median[reached] = np.take_along_axis(ordered, np.minimum(count // 2, ordered.shape[-1] - 1)[:, None],
                                             axis=-1)[:, 0]
    return median


def _ring_medians_of_padded(padded: np.ndarray) -> np.ndarray:
    """Largest of the three sample-excluding median filters of an array padded by :data:`_REACH` on every side."""
    background = None
    for footprint in _FOOTPRINTS:
        dy, dx = _REACH[0] - footprint.shape[0] // 2, _REACH[1] - footprint.shape[1] // 2
        median = _median_of_padded(padded[dy:padded.shape[0] - dy, dx:padded.shape[1] - dx], footprint)
        background = median if background is None else np.fmax(background, median, out=background)
    return background


def _ring_medians(filled: np.ndarray) -> np.ndarray:
    """(ky, kx) largest of the three sample-excluding median filters of ``filled`` (periodic across the border);
    the upper and lower halves are filtered in two threads."""
    padded = np.pad(filled, [(r, r) for r in _REACH], mode="wrap")
    half = filled.shape[0] // 2
    if half < 16:
        return _ring_medians_of_padded(padded)
    halves = (padded[:half + 2 * _REACH[0]], padded[half:])
    return np.concatenate(list(_workers().map(_ring_medians_of_padded, halves)))


def _ring_medians_near(previous: np.ndarray, filled: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """:func:`_ring_medians` of ``filled`` given its value ``previous`` for an array that differs from ``filled``
    only where ``changed``: recomputed only where a footprint reaches a changed sample (identical result)."""
    from scipy import ndimage

    background = previous.copy()
    box = (2 * _REACH[0] + 1, 2 * _REACH[1] + 1)
    reach = ndimage.maximum_filter(changed.astype(np.uint8), size=box, mode="wrap") > 0
    labels, _count = ndimage.label(reach)
    padded = np.pad(filled, [(r, r) for r in _REACH], mode="wrap")
    for rows, cols in ndimage.find_objects(labels):
        crop = padded[rows.start:rows.stop + 2 * _REACH[0], cols.start:cols.stop + 2 * _REACH[1]]
        background[rows, cols] = _ring_medians_of_padded(crop)
    return background


def _with_edge_lines(background: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """The outermost rows and columns are predicted from fewer neighbours: each is also compared with a median
    along its own line (the larger level is kept). Returns a new array."""
    background = background.copy()
    line = _FOOTPRINTS[1][0]
    for index in (0, -1):
        np.fmax(background[index, :], _median_filter(filled[index, :], line), out=background[index, :])
        np.fmax(background[:, index], _median_filter(filled[:, index], line), out=background[:, index])
    return background


#: Footprints that leave a sample's 5 x 5 block out (a 7 x 7 ring, a 1 x 19 readout line and a 13 x 1 phase-encoding
#: line, each with a hole of 5 about the sample): the level around a cluster of spikes without its own leakage.
_HOLLOW_FOOTPRINTS = (_ring((7, 7), (5, 5)), _ring((1, 19), (1, 5)), _ring((13, 1), (5, 1)))


def hollow_level_at(values: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(n,) largest of the medians of ``values`` ((ky, kx), NaN left out) over the :data:`_HOLLOW_FOOTPRINTS` about
    the samples (ys, xs), periodic; NaN where a footprint holds no value. Computed at these samples only."""
    ky, kx = values.shape
    level = np.full(len(ys), np.nan)
    for footprint in _HOLLOW_FOOTPRINTS:
        dy, dx = np.nonzero(footprint)
        gathered = values[(ys[:, None] + dy - footprint.shape[0] // 2) % ky,
                          (xs[:, None] + dx - footprint.shape[1] // 2) % kx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window of NaN only: NaN
            level = np.fmax(level, np.nanmedian(gathered, axis=1))
    return level


def local_background(energy: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """(ky, kx) robust local level of ``energy``: the largest of three sample-excluding median filters over the
    ``acquired`` samples only (the others are left out, not filled); where no footprint reaches an acquired sample,
    the level of the nearest sample that has one."""
    filled = _excluding(energy, acquired)
    return _complete(_with_edge_lines(_ring_medians(filled), filled))


def _complete(background: np.ndarray) -> np.ndarray:
    """``background`` with its NaN (no usable sample within reach) set to the nearest finite value (in place)."""
    missing = np.isnan(background)
    if missing.any():
        background[...] = _fill_unacquired(background, ~missing) if (~missing).any() else 1.0
    return background
