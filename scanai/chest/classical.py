"""The classical chest detector: thresholds, morphology, edges and a few mean shapes, no network.

:class:`ClassicalDetector` is the baseline beside the network (same :class:`~scanai.chest.detection.Detector`
interface). It works on a copy of the radiograph resampled to ``work_size`` pixels on the long side and returns
masks on the input grid. Image convention as in :mod:`scanai.chest.detection`: (rows, cols), row 0 = head,
column 0 = image left = patient right, bright = dense.

What it finds, and how:

* **body** (the patent's "chest area"): :func:`~scanai.chest.detection.body_mask` of the working image, united
  with the lungs and heart found below, holes filled.
* **lungs**: the dark regions inside the body. Grey values are rescaled by the body's 1st/99th percentiles. A
  two-class model (lung / not lung, Gaussians whose means follow the image locally, one-sided so that very dark
  pixels always favour lung and very bright ones never do) is fitted by four EM rounds started from Otsu's
  threshold inside the body, with a soft spatial prior (the mean lung outline of the Wingspan training images,
  in image-fraction coordinates, blurred) that keeps the neck, axillae and abdomen out. The result is split at
  the mediastinal line (per-row brightest column of the central band); on each side the largest region is kept,
  closed and filled. Then each outline is moved along rays from the lung centroid to where the grey value has
  just climbed to the bright rim (ribs, diaphragm, mediastinum), by dynamic programming around the rays so the
  outline stays smooth. Patient right lung = image left.
* **heart**: the mean heart outline of the training images scaled into a box. The box's top and bottom rows are
  linear in the lungs' top, bottom and medial-bottom rows; its left and right columns make the outline's sides
  meet the medial lung borders row by row (least absolute gap, over- and undershoot weighted alike), then the
  right side is moved out by 2 % of the lung width (the reference hearts reach under the left lung's border).
  Its horizontal extent at the widest row is the heart width of the cardiothoracic ratio.
* **spine**: the bright vertical ridge in the mediastinal band between the lungs: per row, the brightest column
  of a vertically smoothed image within the band; a robust straight-line fit (outliers beyond 2.5 MAD dropped,
  lean limited to 0.1 column per row); a mask of fixed width (``spine_width`` of the lung-union width) over the
  lung height.
* **foreign objects** (metal): pixels brighter than a very high percentile of the body (``fo_percentile``) and
  well above their local background (top-hat) that form compact blobs (area, elongation and fill limits), or
  chains of at least three small beads (a necklace, reported as one object). A blob whose surroundings are air
  (a side marker next to the patient) does not count. The pseudo-confidence is a sigmoid of the blob's contrast
  to a ring around it, in units of the body's 1-99 % range; candidates pass
  :func:`~scanai.chest.detection.non_maximum_suppression`. A marker lying on the body is found like any other
  metal object.

Not provided: scapulae, clavicles and the abnormal parts (pneumothorax, effusion): grey levels alone do not find
them reliably. Use the network backend (or oracle masks in tests) for them.

The constants below (mean outlines as radii at 48 angles, the heart-row fits and the heart widening) were
measured once on the 207 Wingspan *training* images (the heart fits on this detector's own lungs); they are
statistics of the training masks, not learned weights. Scores on the 52 validation images: see
:mod:`scanai.chest.evaluate` and the README.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.chest.detection import (
    FOREIGN,
    Box,
    Detections,
    Found,
    body_mask,
    check_radiograph_array,
    non_maximum_suppression,
    otsu_threshold,
)
from scanai.core.progress import Progress

# ------------------------------------------------------------------------------------------ shape constants
# Radial outlines ((centre u, centre v), radii) in a frame's unit square (u across, v down): entry k is the
# outline's distance from the centre in the angular bin k of 48 around angle atan2(dv, du) = -pi + (k + 0.5) * 2pi/48,
# i.e. entry 0 points to the image left, 12 up (head), 24 to the image right and 36 down (feet).

#: Mean right lung (image left) in image-fraction coordinates (u = col / W, v = row / H).
_RIGHT_LUNG_IMAGE = ((0.296, 0.400), (
    0.136, 0.137, 0.138, 0.138, 0.142, 0.145, 0.156, 0.165, 0.178, 0.187, 0.204, 0.225, 0.242, 0.265, 0.274, 0.287,
    0.281, 0.264, 0.223, 0.203, 0.175, 0.155, 0.141, 0.131, 0.123, 0.125, 0.129, 0.128, 0.133, 0.138, 0.155, 0.169,
    0.189, 0.214, 0.225, 0.230, 0.237, 0.243, 0.273, 0.286, 0.283, 0.264, 0.224, 0.199, 0.171, 0.154, 0.147, 0.144))
#: Mean left lung (image right) in image-fraction coordinates.
_LEFT_LUNG_IMAGE = ((0.744, 0.380), (
    0.116, 0.118, 0.122, 0.139, 0.173, 0.226, 0.255, 0.264, 0.263, 0.260, 0.243, 0.221, 0.204, 0.190, 0.165, 0.148,
    0.138, 0.130, 0.124, 0.119, 0.117, 0.111, 0.114, 0.111, 0.120, 0.123, 0.127, 0.144, 0.157, 0.188, 0.217, 0.263,
    0.300, 0.301, 0.257, 0.219, 0.186, 0.164, 0.147, 0.138, 0.128, 0.125, 0.120, 0.122, 0.113, 0.114, 0.110, 0.108))
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


# ------------------------------------------------------------------------------------------ grid helpers


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


# ------------------------------------------------------------------------------------------ lungs


def _local_mean(image: np.ndarray, members: np.ndarray, fallback: np.ndarray, sigma: float,
                weight: float = 0.1) -> np.ndarray:
    """Gaussian-weighted mean of ``image`` over ``members`` around every pixel (normalised convolution with
    ``sigma`` px, computed on a 4x coarser grid), pulled towards ``fallback`` where few members are near."""
    from scipy import ndimage

    factor = 4
    rows, cols = image.shape
    pad_r, pad_c = (-rows) % factor, (-cols) % factor

    def coarse(values: np.ndarray) -> np.ndarray:
        padded = np.pad(values, ((0, pad_r), (0, pad_c)))
        blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
        return ndimage.gaussian_filter(blocks.mean(axis=(1, 3)), sigma / factor)

    density = coarse(members.astype(np.float64))
    total = coarse(np.where(members, image, 0.0))
    local = _resample(total / np.maximum(density, 1e-6), (rows + pad_r, cols + pad_c))[:rows, :cols]
    near = _resample(density, (rows + pad_r, cols + pad_c))[:rows, :cols]
    return (near * local + weight * fallback) / (near + weight)


def _em_lungs(image: np.ndarray, prior: np.ndarray, roi: np.ndarray, start: np.ndarray, rounds: int = 4,
              smooth_px: float = 2.0, local_px: float = 0.0) -> np.ndarray:
    """Two-class (lung / not lung) segmentation of the working image with a spatial prior.

    image: (rows, cols) rescaled grey values (about 0..1); prior: (rows, cols) lung probability in (0, 1);
    roi: where the classes are estimated and lungs may lie; start: initial lung mask. Each class is a Gaussian
    whose mean is linear in the row, or, with ``local_px`` > 0, the Gaussian-weighted mean of the class's pixels
    within about ``local_px`` (falling back to the linear fit where the class is absent). The likelihoods are
    one-sided (below its mean a pixel is as likely lung as at the mean; above the non-lung mean as likely
    non-lung). The log-odds (prior included) are smoothed by ``smooth_px`` before each new assignment.
    """
    from scipy import ndimage

    rows, cols = image.shape
    row = np.repeat(np.arange(rows, dtype=np.float64) / rows, cols)
    design = np.stack([np.ones(rows * cols), row], axis=1)
    values = image.ravel()
    lung = start & roi
    log_prior = np.log(prior) - np.log1p(-prior)
    for _ in range(rounds):
        other = roi & ~lung
        if lung.sum() < 20 or other.sum() < 20:
            break
        inside, outside = lung.ravel(), other.ravel()
        lung_coef = np.linalg.lstsq(design[inside], values[inside], rcond=None)[0]
        other_coef = np.linalg.lstsq(design[outside], values[outside], rcond=None)[0]
        lung_mean = (design @ lung_coef).reshape(rows, cols)
        other_mean = (design @ other_coef).reshape(rows, cols)
        if local_px > 0:  # let each class mean follow the image locally (normalised convolution)
            lung_mean = _local_mean(image, lung, lung_mean, local_px)
            other_mean = _local_mean(image, other, other_mean, local_px)
        lung_sd = max(float(np.std(image[lung] - lung_mean[lung])), 1e-3)
        other_sd = max(float(np.std(image[other] - other_mean[other])), 1e-3)
        log_lung = -0.5 * ((np.maximum(image, lung_mean) - lung_mean) / lung_sd) ** 2 - np.log(lung_sd)
        log_other = -0.5 * ((np.minimum(image, other_mean) - other_mean) / other_sd) ** 2 - np.log(other_sd)
        score = ndimage.gaussian_filter(log_lung - log_other + log_prior, smooth_px)
        lung = (score > 0) & roi
    return lung


def _mediastinal_line(image: np.ndarray, low: float = 0.35, high: float = 0.65) -> np.ndarray:
    """Per row, the column of the brightest smoothed pixel within the central band [low, high] of the width,
    median-filtered along the rows: (rows,) int."""
    from scipy import ndimage

    rows, cols = image.shape
    smooth = ndimage.gaussian_filter(image, max(1.0, cols / 85))
    start, stop = int(low * cols), max(int(high * cols), int(low * cols) + 1)
    line = start + np.argmax(smooth[:, start:stop], axis=1)
    return ndimage.median_filter(line, size=max(3, rows // 12) | 1, mode="nearest")


def _split_lungs(image: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right lung = image left, left lung = image right): the largest region of ``lung`` on each side of the
    mediastinal line, closed and filled."""
    from scipy import ndimage

    rows, cols = lung.shape
    line = _mediastinal_line(image)[:, None]
    column = np.arange(cols)[None, :]
    sides = []
    for side in (column < line - 1, column > line + 1):
        part = _largest(lung & side)
        part = ndimage.binary_fill_holes(ndimage.binary_closing(part, iterations=2))
        sides.append(part & side)
    return sides[0], sides[1]


def _snap_outline(smooth: np.ndarray, mask: np.ndarray, rays: int = 128, inner: float = 6.0, outer: float = 15.0,
                  step: float = 0.5, max_jump: float = 1.5, deviation_cost: float = 0.15,
                  reach: float = 0.0) -> np.ndarray:
    """Move the outline of ``mask`` onto the strongest dark-to-bright rise of ``smooth`` (rows, cols).

    Rays from the mask's centroid (``rays`` of them) are searched from ``inner`` px inside to ``outer`` px outside
    the current outline (working-grid px, steps of ``step``). The edge strength is the outward derivative, or with
    ``reach`` > 0 the rise of the grey value over the last ``reach`` px (largest where the ray has just reached
    the bright rim); robustly scaled. The new radius per ray maximises it minus ``deviation_cost`` per ``outer``
    px moved, with at most ``max_jump`` px change between neighbouring rays (dynamic programming around 1.5
    turns, the middle turn kept). Returns the (rows, cols) bool star-shaped mask of the new outline.
    """
    from scipy import ndimage

    rows, cols = smooth.shape
    cy, cx = ndimage.center_of_mass(mask)
    angles = np.linspace(-np.pi, np.pi, rays, endpoint=False)
    sin, cos = np.sin(angles)[:, None], np.cos(angles)[:, None]
    radii = np.arange(0.0, float(np.hypot(rows, cols)), step)
    inside = ndimage.map_coordinates(mask.astype(np.float32), [cy + sin * radii, cx + cos * radii], order=1,
                                     mode="constant") > 0.5
    outside = ~inside
    outside[:, -1] = True
    current = radii[np.maximum(np.argmax(outside, axis=1) - 1, 0)]
    offsets = np.arange(-inner, outer + step / 2, step)
    candidate = np.maximum(current[:, None] + offsets[None, :], 1.0)
    ys, xs = cy + sin * candidate, cx + cos * candidate
    if reach > 0:  # rise over ``reach`` px: largest where the ray has just climbed to the bright rim
        here = ndimage.map_coordinates(smooth, [ys, xs], order=1, mode="nearest")
        back_r = np.maximum(candidate - reach, 0.0)
        before = ndimage.map_coordinates(smooth, [cy + sin * back_r, cx + cos * back_r], order=1, mode="nearest")
        outward = here - before
    else:
        grad_y = ndimage.sobel(smooth, axis=0) / 8.0
        grad_x = ndimage.sobel(smooth, axis=1) / 8.0
        outward = (ndimage.map_coordinates(grad_y, [ys, xs], order=1, mode="nearest") * sin
                   + ndimage.map_coordinates(grad_x, [ys, xs], order=1, mode="nearest") * cos)
    scale = float(np.percentile(np.abs(outward), 90)) + 1e-9
    cost = -np.clip(outward / scale, -1.0, 3.0) + deviation_cost * np.abs(offsets)[None, :] / outer
    cost[(ys < 0) | (ys > rows - 1) | (xs < 0) | (xs > cols - 1)] += 5.0
    states = offsets.size
    jump = max(1, int(round(max_jump / step)))
    order = np.concatenate([np.arange(rays), np.arange(rays // 2)])  # 1.5 turns; keep the middle turn
    total = cost[order[0]].copy()
    back = np.zeros((order.size, states), dtype=int)
    index = np.arange(states)
    for t in range(1, order.size):
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(total, jump, constant_values=np.inf),
                                                           2 * jump + 1)
        choice = np.argmin(windows, axis=1)
        back[t] = index + choice - jump
        total = windows[index, choice] + cost[order[t]]
    path = np.zeros(order.size, dtype=int)
    path[-1] = int(np.argmin(total))
    for t in range(order.size - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    chosen = np.zeros(rays, dtype=int)
    chosen[order[rays // 2:]] = path[rays // 2:]
    new_radius = candidate[np.arange(rays), chosen]
    grid_y, grid_x = np.mgrid[:rows, :cols]
    position = (np.arctan2(grid_y - cy, grid_x - cx) + np.pi) / (2 * np.pi) * rays
    lower = np.floor(position).astype(int)
    weight = position - lower
    limit = new_radius[lower % rays] * (1 - weight) + new_radius[(lower + 1) % rays] * weight
    return np.hypot(grid_y - cy, grid_x - cx) <= limit


def _lung_prior(shape: tuple[int, int], blur: float) -> np.ndarray:
    """Soft lung prior on the working grid: the mean outlines blurred by ``blur`` x width, in [0.01, 0.99]."""
    from scipy import ndimage

    rows, cols = shape
    box = (0.0, 0.0, float(rows), float(cols))
    outlines = _radial_mask(shape, _RIGHT_LUNG_IMAGE, box) | _radial_mask(shape, _LEFT_LUNG_IMAGE, box)
    soft = ndimage.gaussian_filter(outlines.astype(np.float64), blur * max(shape))
    return np.clip(soft, 0.01, 0.99)


# ------------------------------------------------------------------------------------------ heart


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


# ------------------------------------------------------------------------------------------ spine


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


# ------------------------------------------------------------------------------------------ foreign objects


def _sigmoid(value: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(value, -50.0, 50.0))))


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: the largest region brighter than Otsu's threshold of the lightly smoothed image, holes
    filled, without the morphological closing of :func:`~scanai.chest.detection.body_mask` (so a side marker
    in the air next to the shoulder stays outside)."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), 1.0)
    return ndimage.binary_fill_holes(_largest(smooth > otsu_threshold(smooth)))


def _foreign_candidates(rescaled: np.ndarray, body: np.ndarray, tissue: np.ndarray, percentile: float,
                        min_area: float, max_area: float, max_elongation: float,
                        bead_fraction: float = 4e-4) -> list[tuple[np.ndarray, float]]:
    """Bright compact blobs (and bead chains) inside the body: [(working-grid mask, contrast)], contrast = blob
    mean minus the median of a ring 2-5 px around it, in units of the body's 1-99 % range.

    rescaled: (rows, cols) grey values rescaled by the body's 1st/99th percentiles (not clipped). Candidates are
    above ``percentile`` of the body and 0.1 above a grey opening (top-hat); a blob counts when its area is
    between ``min_area`` and ``max_area`` (fractions of the body area), its moment ellipse is at most
    ``max_elongation`` times longer than wide and fills at least half of it, and at most 20 % of its ring lies
    outside ``tissue`` (so objects in the air, such as side markers, are left out). Blobs smaller than
    ``bead_fraction`` of the body (beads) that lie in a chain of at least three, each within 1.6 % of the long
    side of the next, become one object (a necklace) in place of the single beads.
    """
    from scipy import ndimage

    rows, cols = rescaled.shape
    inner = ndimage.binary_erosion(body, iterations=2)
    if inner.sum() < 100:
        return []
    side = 2 * max(3, int(round(0.03 * max(rows, cols)))) + 1
    background = ndimage.grey_opening(rescaled, size=(side, side))
    level = float(np.percentile(rescaled[inner], percentile))
    candidate = (rescaled > level) & (rescaled - background > 0.1) & inner
    labels, count = ndimage.label(candidate)
    body_area = float(body.sum())
    smallest = max(3.0, min_area * body_area)
    bead_area = max(smallest, bead_fraction * body_area)
    largest = max_area * body_area
    blobs: list[tuple[np.ndarray, float]] = []
    beads: list[tuple[np.ndarray, float]] = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        pad = 6
        window = (slice(max(region[0].start - pad, 0), min(region[0].stop + pad, rows)),
                  slice(max(region[1].start - pad, 0), min(region[1].stop + pad, cols)))
        blob = labels[window] == index
        area = float(blob.sum())
        if area > largest or area < 2:
            continue
        ring = ndimage.binary_dilation(blob, iterations=5) & ~ndimage.binary_dilation(blob, iterations=2)
        ring &= ~(labels[window] > 0)
        if ring.sum() < 4 or np.mean(~tissue[window][ring]) > 0.2:
            continue
        values = rescaled[window]
        contrast = float(np.mean(values[blob]) - np.median(values[ring]))
        full = np.zeros((rows, cols), dtype=bool)
        full[window] = blob
        if area < bead_area:
            beads.append((full, contrast))
        if area < smallest:
            continue
        ys, xs = np.nonzero(blob)
        spread = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])) + np.eye(2) / 12.0)
        elongation = float(np.sqrt(spread[1] / spread[0]))
        fill = area / (4.0 * np.pi * float(np.sqrt(spread[0] * spread[1])))
        if elongation > max_elongation or fill < 0.5:
            continue
        blobs.append((full, contrast))
    if len(beads) >= 3:  # necklaces: at least three small beads close together become one object
        bead_union = np.zeros((rows, cols), dtype=bool)
        for mask, _ in beads:
            bead_union |= mask
        reach = max(2, int(round(0.016 * max(rows, cols))))
        chains, chain_count = ndimage.label(ndimage.binary_dilation(bead_union, _disk(reach)))
        for chain in range(1, chain_count + 1):
            members = [(mask, contrast) for mask, contrast in beads if chains[mask].max() == chain]
            if len(members) >= 3:
                union = np.zeros((rows, cols), dtype=bool)
                for mask, _ in members:
                    union |= mask
                blobs = [(mask, contrast) for mask, contrast in blobs if not (mask & union).any()]
                blobs.append((union, float(np.mean([contrast for _, contrast in members]))))
    return blobs


# ------------------------------------------------------------------------------------------ detector


@dataclass
class ClassicalDetector:
    """Classical chest detector (no network). See the module docstring for the method.

    work_size:       long side of the working grid (px); masks are returned on the input grid. The pixel
                     settings below (snap_*) are in working-grid pixels.
    prior_blur:      blur of the mean lung outline, as a fraction of the working long side.
    em_local:        reach of the local class means in the lung EM, as a fraction of the working long side.
    spine_width:     spine mask width as a fraction of the lung-union width.
    snap_inner, snap_outer: the lung outline search runs from this far inside to this far outside (px).
    snap_cost:       penalty per ``snap_outer`` px moved, against the (scaled) edge strength.
    snap_reach:      the edge strength is the grey-value rise over this many px along the ray.
    snap_jump:       largest change of the outline radius between neighbouring rays (px).
    snap_rays:       number of rays around each lung.
    fo_percentile:   foreign-object candidates are brighter than this percentile of the body.
    fo_min_area, fo_max_area: blob area limits as fractions of the body area.
    fo_max_elongation: longest / shortest axis limit of a single blob's moment ellipse.
    fo_contrast_mid, fo_contrast_scale: confidence = sigmoid((contrast - mid) / scale), contrast in units of
                     the body's 1-99 % intensity range.
    fo_min_confidence: candidates below this confidence are not reported.
    """

    name: str = "classical"
    work_size: int = 256
    prior_blur: float = 0.045
    em_local: float = 0.1
    spine_width: float = 0.1
    snap_inner: float = 6.0
    snap_outer: float = 30.0
    snap_cost: float = 0.05
    snap_reach: float = 4.0
    snap_jump: float = 3.0
    snap_rays: int = 192
    fo_percentile: float = 99.7
    fo_min_area: float = 2e-5
    fo_max_area: float = 0.01
    fo_max_elongation: float = 3.0
    fo_contrast_mid: float = 0.5
    fo_contrast_scale: float = 0.1
    fo_min_confidence: float = 0.1

    def detect(self, image: np.ndarray, progress: Progress | None = None) -> Detections:
        """Detect body, lungs, heart, spine and foreign objects on a (rows, cols) radiograph (raw intensities,
        any range, bright = dense; the input is not modified).

        Returns :class:`Detections` on the input grid; objects that were not found are absent (no heart or spine
        unless both lungs were found). Confidences: lungs, the Dice overlap with the mean lung outline (0.2 when
        only one lung was found); heart, 0.5 + 0.5 x the fraction of its rows bordered by a lung; spine, the
        fraction of rows agreeing with the fitted line; foreign objects, the contrast sigmoid. InputError for a
        non-2-D, tiny, non-finite or blank image.
        """
        from scipy import ndimage

        progress = Progress.ensure(progress)
        array = check_radiograph_array(image)
        shape = array.shape
        progress(0.0, "classical detector: preparing")
        work_shape = _work_shape(shape, self.work_size)
        scale = work_shape[0] / shape[0]
        source = ndimage.gaussian_filter(array, 0.4 / scale) if scale < 0.75 else array
        raw = _resample(source, work_shape)
        body = body_mask(raw)
        if body.sum() < 0.05 * body.size:
            body = np.ones(work_shape, dtype=bool)
        low, high = np.percentile(raw[body], [1.0, 99.0])
        if high <= low:
            low, high = float(raw.min()), float(raw.max())
        rescaled = (raw - low) / (high - low)
        grey = np.clip(ndimage.gaussian_filter(rescaled, 1.0), 0.0, 1.0)

        progress(0.15, "classical detector: lungs")
        right, left = self._lungs(grey, body)
        candidates: list[tuple[str, np.ndarray, float]] = []
        heart = np.zeros(work_shape, dtype=bool)
        progress(0.55, "classical detector: heart and spine")
        if right.sum() > 0.002 * right.size and left.sum() > 0.002 * left.size:
            box = (0.0, 0.0, float(work_shape[0]), float(work_shape[1]))
            for name, mask, outline in (("lung_right", right, _RIGHT_LUNG_IMAGE),
                                        ("lung_left", left, _LEFT_LUNG_IMAGE)):
                candidates.append((name, mask, _dice(mask, _radial_mask(work_shape, outline, box))))
            heart, heart_support = _fit_heart(right, left)
            spine, spine_support = _find_spine(grey, right, left, self.spine_width)
            candidates += [("heart", heart, 0.5 + 0.5 * heart_support), ("spine", spine, spine_support)]
        else:  # one lung at most: no heart or spine without both medial borders
            candidates += [(name, mask, 0.2) for name, mask in (("lung_right", right), ("lung_left", left))
                           if mask.sum() > 0.002 * mask.size]
        objects: dict[str, Found] = {}
        for name, mask, confidence in candidates:
            found = self._found(name, mask, shape, confidence) if mask.any() else None
            if found is not None:
                objects[name] = found
        whole_body = ndimage.binary_fill_holes(body | right | left | heart)
        tissue = ndimage.binary_fill_holes(tissue_mask(raw) | right | left | heart)

        progress(0.8, "classical detector: foreign objects")
        foreign = self._foreign_objects(rescaled, whole_body, tissue, shape)
        progress(1.0, "classical detector: done")
        return Detections(tuple(shape), objects, tuple(foreign), _mask_to_input(whole_body, shape), self.name)

    @staticmethod
    def _found(name: str, work_mask: np.ndarray, shape: tuple[int, int], confidence: float) -> Found | None:
        """The object on the input grid, or None when nothing of it is left there."""
        mask = _mask_to_input(work_mask, shape)
        if not mask.any():  # a sliver lost in resampling: keep the nearest pixels
            mask = _resample(work_mask.astype(np.float64), shape, order=0) > 0.5
        if not mask.any():
            return None
        return Found(name, mask, Box.of_mask(mask), float(np.clip(confidence, 0.0, 1.0)))

    def _lungs(self, grey: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(right, left) lung masks on the working grid (possibly empty)."""
        from scipy import ndimage

        prior = _lung_prior(grey.shape, self.prior_blur)
        roi = ndimage.binary_fill_holes(body | (prior > 0.3)) & (prior > 0.02)
        inside = grey[roi]
        threshold = otsu_threshold(inside[None, :]) if inside.size > 100 else 0.5
        lung = _em_lungs(grey, prior, roi, (grey < threshold) & (prior > 0.5) & roi,
                         local_px=self.em_local * max(grey.shape))
        right, left = _split_lungs(grey, lung)
        smooth = ndimage.gaussian_filter(grey, 1.5)
        snapped = []
        for mask in (right, left):
            if mask.sum() >= 30:
                mask = _largest(_snap_outline(smooth, mask, rays=self.snap_rays, inner=self.snap_inner,
                                              outer=self.snap_outer, max_jump=self.snap_jump,
                                              deviation_cost=self.snap_cost, reach=self.snap_reach))
            snapped.append(mask)
        line = _mediastinal_line(grey)[:, None]
        column = np.arange(grey.shape[1])[None, :]
        return snapped[0] & (column < line), snapped[1] & (column > line)

    def _foreign_objects(self, rescaled: np.ndarray, body: np.ndarray, tissue: np.ndarray,
                         shape: tuple[int, int]) -> list[Found]:
        """Foreign objects (metal) on the working grid -> Found objects on the input grid, highest confidence
        first, after non-maximum suppression."""
        found = []
        for mask, contrast in _foreign_candidates(rescaled, body, tissue, self.fo_percentile, self.fo_min_area,
                                                  self.fo_max_area, self.fo_max_elongation):
            confidence = _sigmoid((contrast - self.fo_contrast_mid) / self.fo_contrast_scale)
            candidate = self._found(FOREIGN, mask, shape, confidence) if confidence >= self.fo_min_confidence else None
            if candidate is not None:
                found.append(candidate)
        kept = non_maximum_suppression([f.box for f in found], [f.confidence for f in found], 0.3)
        return [found[k] for k in kept]
