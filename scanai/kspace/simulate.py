"""Seeded spike ("spark") simulator with exact ground truth.

A spike is an impulse added to one k-space sample: the same (slice, ky, kx) in every coil, with coil-dependent
complex gains (external RF interference reaches all receivers). Its size is given relative to the slice's
largest coil-combined magnitude, ``amplitude = a * max(RSS |k|)``, so the root-sum-of-squares over coils of the
added values is exactly ``a * max(RSS |k|)``. Spikes come as isolated points, points near the k-space centre,
small clusters, and runs smeared along the readout (an ADC glitch during one echo, the patent's FIG. 7 pattern).
The DC sample is never hit unless asked; samples that were not acquired (all-zero across coils) are never hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.kspace.correct import lattice_lines
from scanai.kspace.data import as_kspace_array

KINDS = ("isolated", "near_centre", "cluster", "smear")


@dataclass(frozen=True)
class SpikeSet:
    """Ground truth of injected spikes, one row per corrupted sample.

    slice, ky, kx: (n,) integer positions. amplitude: (n,) size relative to the slice's max RSS |k|.
    gains: (n, coils) complex values added to each coil (before scaling by the slice maximum it is unit-norm).
    kind: (n,) one of :data:`KINDS`. event: (n,) index of the spike event (a cluster or a run is one event).
    """

    slice: np.ndarray
    ky: np.ndarray
    kx: np.ndarray
    amplitude: np.ndarray
    gains: np.ndarray
    kind: np.ndarray
    event: np.ndarray

    def __len__(self) -> int:
        return len(self.ky)

    def mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """(slices, ky, kx) bool: True at every corrupted sample."""
        mask = np.zeros(shape, dtype=bool)
        mask[self.slice, self.ky, self.kx] = True
        return mask


def accelerate(kspace: np.ndarray, stride: int = 2, calibration: int = 16) -> np.ndarray:
    """A copy of (coils, slices, ky, kx) k-space as a parallel-imaging acquisition would hold it: every ``stride``-th
    phase-encoding line (DC's among them) and a fully sampled block of ``calibration`` lines about DC acquired, the
    other lines zero (never acquired)."""
    lines = kspace.shape[2]
    kept = lattice_lines(lines, stride)
    kept[lines // 2 - calibration // 2:lines // 2 + calibration // 2] = True
    out = np.array(kspace, copy=True)
    out[:, :, ~kept] = 0
    return out


def _candidates(acquired: np.ndarray, centre: tuple[int, int], kind: str, allow_dc: bool,
                near_centre_radius: float) -> np.ndarray:
    """(m, 2) (ky, kx) positions allowed for a spike of ``kind`` on one slice."""
    ky, kx = np.nonzero(acquired)
    distance = np.hypot(ky - centre[0], kx - centre[1])
    keep = distance <= near_centre_radius if kind == "near_centre" else distance > near_centre_radius
    if not allow_dc:
        keep &= distance > 0
    return np.stack([ky[keep], kx[keep]], axis=1)


def inject_spikes(kspace: np.ndarray, n_events: int = 20, amplitude_range: tuple[float, float] = (0.005, 1.0),
                  kinds: dict[str, float] | None = None, seed: int = 0, allow_dc: bool = False,
                  near_centre_radius: float = 8.0, min_separation: int = 3) -> tuple[np.ndarray, SpikeSet]:
    """Add ``n_events`` spike events to a copy of ``kspace`` (coils, slices, ky, kx); returns (corrupted, truth).

    amplitude_range: (low, high) relative to each slice's max RSS |k|, drawn log-uniformly.
    kinds: relative frequency of each kind in :data:`KINDS` (default 60 % isolated, 10 % near the centre within
           ``near_centre_radius`` samples of DC, 15 % clusters of 2-4 points, 15 % readout runs of 2-5 samples).
    min_separation: minimum Chebyshev distance in samples between events, so events stay distinguishable.
    The input is not modified.
    """
    data = as_kspace_array(kspace, "The k-space to corrupt")
    if n_events < 0 or not 0 < amplitude_range[0] <= amplitude_range[1]:
        raise InputError("Spike count must be >= 0 and the amplitude range positive and increasing.")
    weights = kinds or {"isolated": 0.6, "near_centre": 0.1, "cluster": 0.15, "smear": 0.15}
    unknown = set(weights) - set(KINDS)
    if unknown:
        raise InputError(f"Unknown spike kinds {sorted(unknown)}; use {KINDS}.")
    rng = np.random.default_rng(seed)
    coils, slices, n_ky, n_kx = data.shape
    centre = (n_ky // 2, n_kx // 2)
    acquired = np.abs(data).sum(axis=0) > 0  # (slices, ky, kx)
    slice_max = np.sqrt((np.abs(data) ** 2).sum(axis=0)).reshape(slices, -1).max(axis=1)
    corrupted = data.copy()
    taken = np.zeros((slices, n_ky, n_kx), dtype=bool)
    rows: list[tuple] = []
    names = list(weights)
    probabilities = np.asarray([weights[n] for n in names], dtype=float)
    probabilities /= probabilities.sum()
    for event in range(n_events):
        kind = names[rng.choice(len(names), p=probabilities)]
        s = int(rng.integers(slices))
        free = acquired[s] & ~_dilate(taken[s], min_separation)
        candidates = _candidates(free, centre, kind, allow_dc, near_centre_radius)
        if len(candidates) == 0:
            continue
        ky0, kx0 = candidates[rng.integers(len(candidates))]
        points = _event_points(kind, ky0, kx0, rng, (n_ky, n_kx))
        points = [(y, x) for y, x in points if acquired[s, y, x] and (allow_dc or (y, x) != centre)]
        for y, x in points:
            amplitude = float(np.exp(rng.uniform(np.log(amplitude_range[0]), np.log(amplitude_range[1]))))
            gains = rng.normal(size=coils) + 1j * rng.normal(size=coils)
            gains = gains / np.linalg.norm(gains)
            corrupted[:, s, y, x] += (amplitude * slice_max[s] * gains).astype(np.complex64)
            taken[s, y, x] = True
            rows.append((s, y, x, amplitude, gains, kind, event))
    if not rows:
        empty = np.zeros(0, dtype=int)
        return corrupted, SpikeSet(empty, empty, empty, np.zeros(0), np.zeros((0, coils), complex),
                                   np.zeros(0, dtype="<U11"), empty)
    columns = list(zip(*rows, strict=True))
    return corrupted, SpikeSet(np.asarray(columns[0]), np.asarray(columns[1]), np.asarray(columns[2]),
                               np.asarray(columns[3]), np.stack(columns[4]), np.asarray(columns[5]),
                               np.asarray(columns[6]))


def _event_points(kind: str, ky: int, kx: int, rng: np.random.Generator, shape: tuple[int, int]
                  ) -> list[tuple[int, int]]:
    """The samples of one event: one point, a 2-4 point cluster in a 3x3 block, or a 2-5 sample readout run."""
    if kind == "cluster":
        offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        chosen = rng.choice(len(offsets), size=int(rng.integers(2, 5)), replace=False)
        points = [(ky + offsets[i][0], kx + offsets[i][1]) for i in chosen]
    elif kind == "smear":
        points = [(ky, kx + d) for d in range(int(rng.integers(2, 6)))]
    else:
        points = [(ky, kx)]
    return sorted({(y, x) for y, x in points if 0 <= y < shape[0] and 0 <= x < shape[1]})


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` samples in ky and kx (Chebyshev distance)."""
    from scipy.ndimage import maximum_filter

    return maximum_filter(mask, size=2 * radius + 1) if mask.any() else mask
