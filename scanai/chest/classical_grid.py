"""Grid helpers of the classical chest detector: radial outlines, the working grid and back, regions, overlap."""

from __future__ import annotations

import numpy as np

from scanai.chest.detection import Box

# Radial outlines ((centre u, centre v), radii) in a frame's unit square (u across, v down): entry k is the
# outline's distance from the centre in the angular bin k of 48 around angle atan2(dv, du) = -pi + (k + 0.5) * 2pi/48,
# i.e. entry 0 points to the image left, 12 up (head), 24 to the image right and 36 down (feet).


def _radial_mask(shape: tuple[int, int], outline: tuple[tuple[float, float], tuple[float, ...]],
                 box: tuple[float, float, float, float]) -> np.ndarray:
    """Rasterise a radial outline whose unit square is mapped onto ``box`` = (top, left, bottom, right) in pixels
    (pixel centres at index + 0.5). Returns a (rows, cols) bool mask."""
    (cu, cv), radii = outline
    radii = np.asarray(radii, dtype=np.float64)
    count = radii.size
    top, left, bottom, right = box
    rows = (np.arange(shape[0]) + 0.5 - top) / max(bottom - top, 1e-9)
    cols = (np.arange(shape[1]) + 0.5 - left) / max(right - left, 1e-9)
    dv = rows[:, None] - cv
    du = cols[None, :] - cu
    position = (np.arctan2(dv, du) + np.pi) / (2 * np.pi) * count - 0.5
    index = np.floor(position).astype(int)
    weight = position - index
    limit = radii[index % count] * (1 - weight) + radii[(index + 1) % count] * weight
    return np.hypot(dv, du) <= limit


def _resample(array: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """``array`` (rows, cols) resampled to ``shape`` (pixel-area aligned grids, edge values repeated)."""
    from scipy import ndimage

    factors = (shape[0] / array.shape[0], shape[1] / array.shape[1])
    if factors == (1.0, 1.0):
        return np.array(array, dtype=np.float64)
    return ndimage.zoom(np.asarray(array, dtype=np.float64), factors, order=order, mode="nearest", grid_mode=True)


def _work_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Working grid with ``size`` pixels on the long side and the input's aspect ratio (the short side at least
    64 pixels, so a very elongated image is not squeezed below what the body mask accepts)."""
    scale = max(size / max(shape), 64.0 / min(shape))
    return max(64, int(round(shape[0] * scale))), max(64, int(round(shape[1] * scale)))


def _mask_to_input(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A working-grid bool mask resampled (linear, threshold 0.5) to the input ``shape``; only the mask's box
    is interpolated."""
    from scipy import ndimage

    if mask.shape == tuple(shape):
        return mask.copy()
    out = np.zeros(shape, dtype=bool)
    box = Box.of_mask(mask)
    if box is None:
        return out
    scale_r, scale_c = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
    top, bottom = max(int((box.top - 1) * scale_r), 0), min(int(np.ceil((box.bottom + 1) * scale_r)), shape[0])
    left, right = max(int((box.left - 1) * scale_c), 0), min(int(np.ceil((box.right + 1) * scale_c)), shape[1])
    rows = (np.arange(top, bottom) + 0.5) / scale_r - 0.5
    cols = (np.arange(left, right) + 0.5) / scale_c - 0.5
    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    values = ndimage.map_coordinates(mask.astype(np.float32), [grid_r, grid_c], order=1, mode="nearest")
    out[top:bottom, left:right] = values > 0.5
    return out


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius + radius


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest connected region of ``mask`` (all False when empty)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.copy()
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return labels == int(np.argmax(sizes)) + 1


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 0.0
