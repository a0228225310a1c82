"""The heart and the spine of the classical chest detector, found between the two lungs."""

from __future__ import annotations

import numpy as np

from scanai.chest.classical_grid import _radial_mask
from scanai.chest.detection import Box

# The outline is in the radial form of :func:`scanai.chest.classical_grid._radial_mask`.
#: Mean heart outline in the heart's own bounding box (unit square).
_HEART_BOX = ((0.462, 0.577), (
    0.444, 0.439, 0.436, 0.447, 0.459, 0.481, 0.507, 0.537, 0.565, 0.580, 0.582, 0.562, 0.518, 0.453, 0.417, 0.385,
    0.364, 0.349, 0.349, 0.358, 0.368, 0.385, 0.413, 0.441, 0.483, 0.527, 0.569, 0.599, 0.601, 0.585, 0.541, 0.507,
    0.475, 0.444, 0.424, 0.414, 0.414, 0.417, 0.424, 0.433, 0.448, 0.460, 0.469, 0.480, 0.479, 0.476, 0.464, 0.453))
#: Heart top and bottom rows as fractions of the image height: c . (1, lungs top, lungs bottom, medial bottom of
#: the right lung, medial bottom of the left lung, bottom of the right lung, bottom of the left lung), all as
#: fractions of the height ("medial bottom": lowest row of the lung within the medial third of its width). Least
#: squares of the training masks' heart rows on this detector's own lungs (residual about 9-10 px of 256).
_HEART_TOP = (0.0087, 0.1628, 0.1336, 0.1069, 0.3921, 0.2103, -0.2075)
_HEART_BOTTOM = (0.1303, 0.1537, 0.4923, -0.0273, 0.2752, 0.4053, -0.2734)
#: The heart's left and right columns are moved outwards by these fractions of the lung-union width after the
#: fit: on the training images the reference heart reaches under the left lung's medial border (median gap).
_HEART_WIDEN = (0.0, 0.02)


def _medial_borders(right: np.ndarray, left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the first column right of the right lung, and the first column of the left lung (NaN where the
    lung is absent). Both (rows,) float."""
    rows, cols = right.shape
    right_border = np.full(rows, np.nan)
    left_border = np.full(rows, np.nan)
    has_right, has_left = right.any(axis=1), left.any(axis=1)
    right_border[has_right] = cols - np.argmax(right[has_right, ::-1], axis=1)
    left_border[has_left] = np.argmax(left[has_left], axis=1)
    return right_border, left_border


def _heart_row_features(right: np.ndarray, left: np.ndarray) -> list[float]:
    """Lung rows that predict the heart's rows, as fractions of the height: union top, union bottom, medial
    bottom of the right and of the left lung, bottom of the right and of the left lung."""
    rows = right.shape[0]
    union, box_r, box_l = Box.of_mask(right | left), Box.of_mask(right), Box.of_mask(left)
    third_r = max(1, (box_r.right - box_r.left) // 3)
    third_l = max(1, (box_l.right - box_l.left) // 3)
    medial_r = int(np.flatnonzero(right[:, box_r.right - third_r:box_r.right].any(axis=1)).max()) + 1
    medial_l = int(np.flatnonzero(left[:, box_l.left:box_l.left + third_l].any(axis=1)).max()) + 1
    values = [union.top, union.bottom, medial_r, medial_l, box_r.bottom, box_l.bottom]
    return [value / rows for value in values]


def _heart_profile(samples: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The heart outline as per-row [start, end) fractions of its box width at ``samples`` rows (NaN off the
    outline)."""
    mask = _radial_mask((samples, samples), _HEART_BOX, (0.0, 0.0, float(samples), float(samples)))
    start = np.full(samples, np.nan)
    end = np.full(samples, np.nan)
    for row in np.flatnonzero(mask.any(axis=1)):
        columns = np.flatnonzero(mask[row])
        start[row], end[row] = columns[0] / samples, (columns[-1] + 1) / samples
    return start, end


_PROFILE = _heart_profile()


def _fit_heart(right: np.ndarray, left: np.ndarray, overshoot: float = 1.0,
               undershoot: float = 1.0) -> tuple[np.ndarray, float]:
    """Heart mask on the working grid from the two lung masks, and the fraction of its rows that touch a lung.

    Top/bottom rows from the lungs' rows (``_HEART_TOP``/``_HEART_BOTTOM``); left/right columns of the mean
    outline's box by a grid search minimising, over the heart rows where a lung is present, ``overshoot`` x (px
    into the lung) + ``undershoot`` x (px of gap to the lung); then widened by ``_HEART_WIDEN``.
    """
    rows, cols = right.shape
    union = Box.of_mask(right | left)
    features = np.array([1.0, *_heart_row_features(right, left)])
    top = rows * float(features @ np.asarray(_HEART_TOP))
    bottom = rows * float(features @ np.asarray(_HEART_BOTTOM))
    bottom = max(bottom, top + 4.0)
    samples = _PROFILE[0].size
    heart_rows = np.arange(max(0, int(np.ceil(top))), min(rows, int(np.floor(bottom)) + 1))
    fraction = np.clip(((heart_rows + 0.5 - top) / (bottom - top) * samples).astype(int), 0, samples - 1)
    start, end = _PROFILE[0][fraction], _PROFILE[1][fraction]
    valid = np.isfinite(start)
    heart_rows, start, end = heart_rows[valid], start[valid], end[valid]
    right_border, left_border = _medial_borders(right, left)
    border_r, border_l = right_border[heart_rows], left_border[heart_rows]
    has_r, has_l = np.isfinite(border_r), np.isfinite(border_l)
    box_r, box_l = Box.of_mask(right), Box.of_mask(left)
    middle = (union.left + union.right) / 2.0
    lefts = np.arange(int(box_r.left + (box_r.right - box_r.left) / 3), int(middle))
    rights = np.arange(int(middle) + 1, int(box_l.right - (box_l.right - box_l.left) / 3) + 1)
    if lefts.size == 0 or rights.size == 0 or heart_rows.size == 0:
        return np.zeros_like(right), 0.0
    grid_l, grid_r = np.meshgrid(lefts.astype(float), rights.astype(float), indexing="ij")
    width = (grid_r - grid_l)[..., None]
    cost = np.zeros(grid_l.shape)
    if has_r.any():
        gap = (grid_l[..., None] + start[has_r] * width[..., 0:1]) - border_r[has_r]  # > 0: gap, < 0: into lung
        cost += np.sum(np.where(gap < 0, -overshoot * gap, undershoot * gap), axis=-1)
    if has_l.any():
        gap = border_l[has_l] - (grid_l[..., None] + end[has_l] * width[..., 0:1])
        cost += np.sum(np.where(gap < 0, -overshoot * gap, undershoot * gap), axis=-1)
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    union_width = float(union.right - union.left)
    heart_left = float(lefts[i]) - _HEART_WIDEN[0] * union_width
    heart_right = float(rights[j]) + _HEART_WIDEN[1] * union_width
    mask = np.zeros((rows, cols), dtype=bool)
    for row, a, b in zip(heart_rows, start, end, strict=True):
        first = int(round(heart_left + a * (heart_right - heart_left)))
        last = int(round(heart_left + b * (heart_right - heart_left)))
        mask[row, max(first, 0):max(min(last, cols), 0)] = True
    support = float(np.mean(has_r | has_l)) if heart_rows.size else 0.0
    return mask, support


def _find_spine(image: np.ndarray, right: np.ndarray, left: np.ndarray, width_fraction: float,
                max_slope: float = 0.1) -> tuple[np.ndarray, float]:
    """Spine mask on the working grid and the fraction of rows that agree with the fitted line.

    Rows span the lungs' height; in each, the brightest column of a vertically smoothed image within the
    mediastinal band (between the medial lung borders, at most 0.15 of the lung-union width either side of
    their midpoint). A straight line col = a + b * row is fitted, rows further than 2.5 MAD (at least 1 px) are
    dropped and it is refitted; |b| is limited to ``max_slope``. The mask is ``width_fraction`` x the lung-union
    width wide.
    """
    from scipy import ndimage

    rows, cols = image.shape
    union = Box.of_mask(right | left)
    union_width = union.right - union.left
    smooth = ndimage.gaussian_filter(image, (max(2.0, rows / 64), 1.0))
    right_border, left_border = _medial_borders(right, left)
    half = 0.15 * union_width
    row_list, col_list = [], []
    default_mid = (union.left + union.right) / 2.0
    for row in range(union.top, union.bottom):
        a, b = right_border[row], left_border[row]
        middle = (a + b) / 2.0 if np.isfinite(a) and np.isfinite(b) else default_mid
        low = int(max(middle - half, a if np.isfinite(a) else 0, 0))
        high = int(min(middle + half, b if np.isfinite(b) else cols, cols))
        if high - low < 3:
            continue
        row_list.append(row)
        col_list.append(low + int(np.argmax(smooth[row, low:high])))
    if len(row_list) < 5:
        return np.zeros((rows, cols), dtype=bool), 0.0
    y = np.asarray(row_list, dtype=np.float64)
    x = np.asarray(col_list, dtype=np.float64)
    keep = np.ones(y.size, dtype=bool)
    for _ in range(3):
        coef = np.polyfit(y[keep], x[keep], 1)
        residual = np.abs(x - np.polyval(coef, y))
        spread = max(1.0, 1.4826 * float(np.median(residual[keep])))
        keep = residual <= 2.5 * spread
        if keep.sum() < 5:
            keep = residual <= np.sort(residual)[4]
    coef = np.polyfit(y[keep], x[keep], 1)
    if abs(coef[0]) > max_slope:  # a spine leaning more than about 6 degrees is a misfit: keep it near vertical
        coef[0] = float(np.clip(coef[0], -max_slope, max_slope))
        coef[1] = float(np.median(x[keep] - coef[0] * y[keep]))
    grid_y, grid_x = np.mgrid[:rows, :cols]
    centre = np.polyval(coef, grid_y + 0.0)
    half_width = max(1.0, width_fraction * union_width / 2.0)
    mask = (np.abs(grid_x - centre) <= half_width) & (grid_y >= union.top) & (grid_y < union.bottom)
    return mask, float(keep.mean())
