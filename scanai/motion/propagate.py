"""Propagate a reference-frame segmentation or points through Lagrangian motion fields.

Fields follow the :mod:`scanai.motion` convention: u_t (T, K, J, I, 3), RAS mm, on the reference grid, with
reference point x moving to x + u_t(x) in frame t. Labels need the Eulerian inverse v_t (on the frame-t grid):
S_t(y) = S_ref(y + v_t(y)); points move forward directly (Lagrangian tracking).
"""

from __future__ import annotations

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry
from scanai.core.progress import Progress
from scanai.motion.fields import _checked_field, _index_grid, _sample_frames, invert_frames, to_voxel_displacement


def _checked_sequence(displacement_mm: np.ndarray, grid_shape: tuple[int, ...] | None = None) -> np.ndarray:
    fields = _checked_field(displacement_mm, "sequence of motion fields", ndim=5)
    if grid_shape is not None and fields.shape[1:4] != tuple(grid_shape):
        raise InputError(f"The motion fields lie on a {fields.shape[1:4]} grid but the labels are {grid_shape}.",
                         "Use a segmentation of the reference frame on the same grid as the motion fields.")
    return fields


#: Inversion tolerance for carrying labels (voxels): a label boundary moves by interpolation weights, so a hundredth
#: of a voxel is plenty (20 frames of 256², network fields: not one voxel's label differs from the 1e-3 voxel default
#: of :func:`~scanai.motion.fields.invert_frames`, which takes twice the time).
LABEL_TOLERANCE_PX = 0.01


def propagate_labels(labels: np.ndarray, displacement_mm: np.ndarray, geometry: Geometry,
                     progress: Progress | None = None) -> np.ndarray:
    """Carry a reference-frame label map to every frame.

    labels:          (K, J, I) integer (or bool) label map of the reference frame.
    displacement_mm: (T, K, J, I, 3) Lagrangian fields u_t, RAS mm.
    Returns (T, K, J, I) with the labels' dtype: S_t(y) = S_ref(y + v_t(y)), v_t = invert(u_t). Every label
    value (background included) is a one-hot channel, interpolated linearly; each voxel takes the channel with
    the largest weight (ties go to the smaller label value), so only existing label values appear. A frame
    whose field is exactly zero returns the labels unchanged. All frames are inverted and sampled at once
    (:func:`~scanai.motion.fields.invert_frames`, to :data:`LABEL_TOLERANCE_PX`); ``progress`` is called between
    the steps (Cancel).
    """
    progress = Progress.ensure(progress)
    source = np.asarray(labels)
    if source.ndim != 3 or 0 in source.shape:
        raise InputError(f"The label map must be (K, J, I), got shape {source.shape}.")
    if source.dtype.kind not in "biu":
        raise InputError(f"The label map must hold whole numbers, got {source.dtype}.",
                         "Pass a label map (segmentation), not a scalar image.")
    fields = _checked_sequence(displacement_mm, source.shape)
    out = np.empty((fields.shape[0], *source.shape), dtype=source.dtype)
    moving = np.flatnonzero(fields.reshape(len(fields), -1).any(axis=1))
    out[:] = source  # frames whose field is zero keep the labels
    if moving.size:
        moved = fields[moving]
        inner, outer = _reach(source, to_voxel_displacement(moved, geometry))
        progress(0.0, f"Inverting the motion of {moving.size} frame(s)")
        inverse = invert_frames(moved[(slice(None), *outer)], geometry, tolerance_px=LABEL_TOLERANCE_PX)
        progress(0.7, f"Pulling the labels into {moving.size} frame(s)")
        pulled = pull_labels(source[outer], inverse, geometry)
        within = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True))
        frames = np.full((moving.size, *source.shape), source.flat[0], dtype=source.dtype)  # the border's value
        frames[(slice(None), *inner)] = pulled[(slice(None), *within)]
        out[moving] = frames
    progress(1.0, "Labels propagated")
    return out


def _reach(labels: np.ndarray, displacement_voxels: np.ndarray) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(inner, outer) boxes of the grid for carrying ``labels`` (K, J, I) through fields (T, K, J, I, 3) in voxels.

    Where the label map's border holds one value (the background), a voxel farther than the fields' largest
    displacement (+ 2 for the interpolation) from every other label can only pull the background: the labels are
    carried within ``inner`` (the other labels' bounding box grown by that reach) and the inverse fields are needed
    only on ``outer`` (``inner`` grown by the reach again, where the inverse's iteration samples the fields). On a
    256² cine the heart's box is a small part of the grid. Both boxes are the whole grid where the border is not one
    value or no other label exists.
    """
    border = np.ones(labels.shape, dtype=bool)
    border[(slice(1, -1),) * 3 if labels.shape[0] > 1 else (0, slice(1, -1), slice(1, -1))] = False  # a slice: in-plane
    values = labels[border]
    uniform = values.size > 0 and bool(np.all(values == values[0]))
    others = np.argwhere(labels != values[0]) if uniform else np.empty((0, 3), dtype=int)
    if others.size == 0:
        whole = tuple(slice(0, n) for n in labels.shape)
        return whole, whole
    reach = int(np.ceil(np.sqrt((displacement_voxels ** 2).sum(axis=-1)).max())) + 2
    low, high = others.min(axis=0), others.max(axis=0) + 1
    inner = tuple(slice(max(int(a) - reach, 0), min(int(b) + reach, n)) for a, b, n in zip(low, high, labels.shape,
                                                                                           strict=True))
    outer = tuple(slice(max(box.start - reach, 0), min(box.stop + reach, n)) for box, n in zip(inner, labels.shape,
                                                                                              strict=True))
    return inner, outer


def pull_labels(labels: np.ndarray, displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Labels resampled through pull-back fields: out_t(y) = labels(y + d_t(y)).

    labels: (K, J, I) integer label map; displacement_mm: (T, K, J, I, 3) RAS mm on the same grid.
    Every label value (background included) is a one-hot channel, interpolated linearly; each voxel takes the
    channel with the largest weight (ties go to the smaller label value). Returns (T, K, J, I), labels' dtype.
    With the inverse fields this is :func:`propagate_labels`; with the Lagrangian field u_L of frame L it carries
    a label map drawn on frame L onto the reference frame.
    """
    source = np.asarray(labels)
    fields = _checked_sequence(displacement_mm, source.shape)
    values = np.unique(source)
    points = _index_grid(source.shape) + to_voxel_displacement(fields, geometry)
    channels = np.stack([source == value for value in values], axis=-1).astype(np.float64)[None]
    weights = _sample_frames(channels, points)  # (T, K, J, I, C)
    return values[np.argmax(weights, axis=-1)].astype(source.dtype)


def propagate_points(points_ras: np.ndarray, displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Lagrangian tracking of reference-frame points (e.g. contour points): x -> x + u_t(x).

    points_ras: (P, 3) RAS mm in the reference frame; displacement_mm: (T, K, J, I, 3) u_t, RAS mm.
    Returns (T, P, 3) RAS mm, u_t linearly interpolated (edge values outside the grid; in-plane on 2-D grids).
    """
    points = np.asarray(points_ras, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"Points must be a (P, 3) array of RAS positions in mm, got shape {points.shape}.")
    if not np.isfinite(points).all():
        raise InputError("Some points have missing coordinates (NaN or infinity).")
    fields = _checked_sequence(displacement_mm)
    positions = geometry.ijk_of_ras(points)[:, ::-1]  # (P, 3) in (k, j, i) order
    return points + _sample_frames(fields, np.broadcast_to(positions, (fields.shape[0], *positions.shape)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A n B| / (|A| + |B|) of two masks of one shape (non-zero = inside); 1.0 when both are
    empty."""
    first, second = np.asarray(a), np.asarray(b)
    if first.shape != second.shape:
        raise InputError(f"Dice needs two masks of one shape, got {first.shape} and {second.shape}.")
    first, second = first != 0, second != 0
    total = int(np.count_nonzero(first)) + int(np.count_nonzero(second))
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(first & second) / total)
