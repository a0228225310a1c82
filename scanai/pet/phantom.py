"""A small dynamic FDG PET phantom with known kinetics, for tests, demos and training data.

Regions with irreversible two-tissue kinetics (k4 = 0) are driven by the Feng FDG input function and
frame-averaged over a clinical-style protocol, so each voxel's true net influx rate is known:
``Ki = (1 - vB) K1 k3 / (k2 + k3)`` — the factor ``(1 - vB)`` because the voxel holds a fraction vB of blood,
whose Cp term only shifts the Patlak intercept. Optional Poisson counting noise, seeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.pet.input_function import InputFunction
from scanai.pet.kinetics import patlak_ki, two_tissue_tacs
from scanai.pet.timing import FrameTiming

#: Region name -> (K1, k2, k3, k4 in 1/min, vB). Typical FDG values (grey/white matter after Huang/Phelps).
DEFAULT_REGIONS: dict[str, tuple[float, float, float, float, float]] = {
    "soft tissue": (0.030, 0.150, 0.010, 0.0, 0.03),
    "white matter": (0.054, 0.109, 0.045, 0.0, 0.03),
    "grey matter": (0.102, 0.130, 0.062, 0.0, 0.05),
    "tumour": (0.250, 0.350, 0.150, 0.0, 0.05),
}

#: 6x10 s, 8x30 s, 5x60 s, 5x120 s, 8x300 s: 32 contiguous frames, 0-60 min.
DEFAULT_FRAME_DURATIONS_S: tuple[float, ...] = (10.0,) * 6 + (30.0,) * 8 + (60.0,) * 5 + (120.0,) * 5 + (300.0,) * 8


def default_timing() -> FrameTiming:
    """The phantom's default 32-frame, 60-min protocol."""
    return FrameTiming.from_durations(DEFAULT_FRAME_DURATIONS_S)


@dataclass(frozen=True, eq=False)
class PetPhantom:
    """A generated dynamic PET study.

    sequence:       (T, k, j, i) activity in the input function's unit, time index = frame mid-times in s.
    timing:         the T frames.
    input_function: the plasma curve used.
    ki_true:        (k, j, i) true voxel Ki in 1/min (0 in air).
    labels:         (k, j, i) region number: 0 air, n = n-th entry of ``regions``.
    regions:        region name -> (K1, k2, k3, k4, vB).
    """

    sequence: VolumeSequence
    timing: FrameTiming
    input_function: InputFunction
    ki_true: Volume
    labels: Volume
    regions: dict[str, tuple[float, float, float, float, float]] = field(default_factory=dict)


def _label_map(shape: tuple[int, int, int], n_regions: int) -> np.ndarray:
    """Labels (k, j, i): 1 body ellipse, 2 inner disc, 3 ring around it, 4 small lesion in the middle slices."""
    depth, rows, cols = shape
    j, i = np.mgrid[0:rows, 0:cols]
    cj, ci = (rows - 1) / 2, (cols - 1) / 2
    radius = np.hypot((j - cj) / (0.45 * rows), (i - ci) / (0.42 * cols))
    plane = np.zeros((rows, cols), dtype=np.int16)
    plane[radius <= 1.0] = 1
    if n_regions >= 3:
        plane[radius <= 0.75] = 3
    if n_regions >= 2:
        plane[radius <= 0.45] = 2
    labels = np.repeat(plane[np.newaxis], depth, axis=0)
    if n_regions >= 4:
        lesion = np.hypot(j - (cj + 0.18 * rows), i - (ci + 0.18 * cols)) <= max(1.5, 0.09 * min(rows, cols))
        middle = slice(depth // 4, max(depth - depth // 4, depth // 4 + 1))
        labels[middle][:, lesion] = 4
    return labels


def pet_phantom(shape: tuple[int, int, int] = (4, 32, 32), timing: FrameTiming | None = None,
                input_function: InputFunction | None = None,
                regions: Mapping[str, tuple[float, float, float, float, float]] | None = None,
                geometry: Geometry | None = None, counts_per_activity_s: float | None = None,
                seed: int = 0) -> PetPhantom:
    """Build a dynamic PET phantom (T, k, j, i) with known Ki per voxel.

    shape:          (k, j, i) voxels.
    timing:         frames (default :func:`default_timing`, 0-60 min).
    input_function: plasma curve (default Feng FDG, µCi/mL).
    regions:        up to 4 regions (body, inner disc, ring, lesion) -> (K1, k2, k3, k4, vB); k4 must be 0 so
                    that the true Ki is defined.
    counts_per_activity_s: None for noise-free frames; otherwise each voxel's frame value ``C`` becomes
                    ``Poisson(C · duration · counts_per_activity_s) / (duration · counts_per_activity_s)``.
    """
    regions = dict(DEFAULT_REGIONS if regions is None else regions)
    if not 1 <= len(regions) <= 4:
        raise InputError(f"The PET phantom takes 1 to 4 regions, got {len(regions)}.")
    if any(len(p) != 5 or p[3] != 0 for p in regions.values()):
        raise InputError("Phantom regions need (K1, k2, k3, k4, vB) with k4 = 0 (irreversible) so Ki is known.")
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 8:
        raise InputError(f"The phantom shape must be (slices, rows, columns) with rows and columns >= 8, got {shape}.")
    timing = timing if timing is not None else default_timing()
    input_function = input_function if input_function is not None else InputFunction.feng(
        float(timing.end_s[-1]) + 1.0, 1.0)
    params = np.asarray(list(regions.values()), dtype=float)
    tacs = two_tissue_tacs(input_function, timing, *params.T)  # (R, T)
    labels = _label_map(tuple(int(s) for s in shape), len(regions))
    table = np.concatenate([np.zeros((1, len(timing))), tacs])  # row 0: air
    frames = np.moveaxis(table[labels], -1, 0)  # (T, k, j, i)
    if counts_per_activity_s is not None:
        if not counts_per_activity_s > 0:
            raise InputError("The phantom noise level (counts per activity unit and second) must be positive.")
        scale = (timing.duration_s * counts_per_activity_s)[:, None, None, None]
        frames = np.random.default_rng(seed).poisson(np.clip(frames, 0, None) * scale) / scale
    ki_regions = np.concatenate([[0.0], patlak_ki(params[:, 0], params[:, 1], params[:, 2]) * (1 - params[:, 4])])
    geometry = geometry if geometry is not None else Geometry((2.0, 2.0, 3.0))
    sequence = VolumeSequence(frames.astype(np.float32), geometry, tuple(timing.mid_s), "time", "s")
    return PetPhantom(sequence, timing, input_function, Volume(ki_regions[labels], geometry),
                      Volume(labels, geometry), regions)
