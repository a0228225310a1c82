"""The lungs of the classical chest detector: mean outlines, EM segmentation, the mediastinal split, snapping."""

from __future__ import annotations

import numpy as np

from scanai.chest.classical_grid import _largest, _radial_mask, _resample

# Outlines in the radial form of :func:`scanai.chest.classical_grid._radial_mask`.
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
