"""Image-quality measures for motion-artifact correction: RMSE, SSIM in a cardiac HU window (the ¶87 acceptance
similarity, digest §4/§7.4) and the width (FWHM) of a coronary vessel's cross-section profile.
"""

from __future__ import annotations

import numpy as np

from scanai.core.errors import InputError

#: HU window whose width is the SSIM data range (digest: "similarity = SSIM, data range = HU window").
CARDIAC_WINDOW_HU = (-200.0, 800.0)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"The two images differ in shape: {a.shape} and {b.shape}.",
                         "Compare images on the same grid.")
    if a.size == 0:
        raise InputError("The images are empty.")
    return a, b


def rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square difference of two images (any equal shapes, HU) over ``mask`` (bool, same shape) or all."""
    a, b = _pair(a, b)
    difference = a - b
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != a.shape:
            raise InputError(f"The mask shape {mask.shape} differs from the image shape {a.shape}.")
        if not mask.any():
            raise InputError("The mask is empty.", "Give a mask with at least one voxel.")
        difference = difference[mask]
    return float(np.sqrt(np.mean(difference**2)))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None,
         window_hu: tuple[float, float] | None = CARDIAC_WINDOW_HU) -> float:
    """Mean structural similarity of two images (H, W) or volumes (K, H, W), HU.

    Both are clipped to ``window_hu`` (None = no clipping); ``data_range`` defaults to the window's width (or the
    joint value range without a window). Volumes with fewer than 7 slices are scored slice by slice and
    averaged (SSIM's 7x7 window does not fit across them). Uses :func:`skimage.metrics.structural_similarity`.
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("SSIM needs scikit-image, which is not installed.",
                         "Install it with `pip install scikit-image`.") from error
    a, b = _pair(a, b)
    if window_hu is not None:
        low, high = float(window_hu[0]), float(window_hu[1])
        a, b = np.clip(a, low, high), np.clip(b, low, high)
    if data_range is None:
        data_range = (window_hu[1] - window_hu[0]) if window_hu is not None else float(
            max(a.max(), b.max()) - min(a.min(), b.min())) or 1.0
    if a.ndim == 3 and a.shape[0] < 7:
        return float(np.mean([structural_similarity(x, y, data_range=data_range) for x, y in zip(a, b, strict=True)]))
    if a.ndim not in (2, 3) or min(a.shape) < 7:
        raise InputError(f"SSIM needs a 2-D image or a 3-D volume at least 7 pixels wide, got shape {a.shape}.")
    return float(structural_similarity(a, b, data_range=data_range))


def vessel_fwhm_mm(image: np.ndarray, point: tuple[float, float], pixel_mm: float, radius_mm: float = 6.0,
                   refine: bool = True) -> float:
    """Full width at half maximum (mm) of a bright vessel's cross-section in a 2-D image (H, W), HU.

    Radial profiles are sampled (bilinear) every 0.1 pixel along 36 directions from the vessel centre ``point``
    (row, col) pixels, which ``refine`` first moves to the intensity centroid of the brightest pixel within
    1.5 pixels. In each direction the background is the mean of the last 1.5 mm of the profile and the half
    level lies half way between it and the centre value; the FWHM is twice the median crossing radius. Returns
    NaN when the vessel is not brighter than its surroundings.
    """
    from scipy.ndimage import map_coordinates

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"The vessel width is measured on a 2-D image, got shape {image.shape}.")
    if pixel_mm <= 0 or radius_mm <= 3 * pixel_mm:
        raise InputError(f"Need a positive pixel size and a radius over 3 pixels, got {pixel_mm}, {radius_mm} mm.")
    row, col = float(point[0]), float(point[1])
    if refine:
        row, col = _refined_centre(image, row, col)
    radius_px = radius_mm / pixel_mm
    r = np.arange(0.0, radius_px + 1e-9, 0.1)
    angles = np.linspace(0.0, 2 * np.pi, 36, endpoint=False)
    rows = row + r[None, :] * np.sin(angles)[:, None]
    cols = col + r[None, :] * np.cos(angles)[:, None]
    profiles = map_coordinates(image, [rows, cols], order=1, mode="nearest")  # (36, R)
    peak = profiles[:, 0].mean()
    outer = r >= radius_px - 1.5 / pixel_mm
    widths = []
    for profile in profiles:
        background = profile[outer].mean()
        if peak <= background:
            continue
        level = background + 0.5 * (peak - background)
        below = np.nonzero(profile < level)[0]
        if below.size == 0 or below[0] == 0:
            continue
        i = below[0]
        r0, r1, v0, v1 = r[i - 1], r[i], profile[i - 1], profile[i]
        widths.append(r0 + (v0 - level) / (v0 - v1) * (r1 - r0))
    if len(widths) < len(angles) // 2:
        return float("nan")
    return float(2.0 * np.median(widths) * pixel_mm)


def _refined_centre(image: np.ndarray, row: float, col: float) -> tuple[float, float]:
    """Intensity centroid (3x3, above the local minimum) around the brightest pixel within 1.5 px of (row, col)."""
    h, w = image.shape
    r0, c0 = int(round(row)), int(round(col))
    best, best_value = (r0, c0), -np.inf
    for dr in range(-1, 2):
        for dc in range(-1, 2):
            rr, cc = r0 + dr, c0 + dc
            if 0 <= rr < h and 0 <= cc < w and image[rr, cc] > best_value:
                best, best_value = (rr, cc), image[rr, cc]
    rr, cc = best
    if not (1 <= rr < h - 1 and 1 <= cc < w - 1):
        return row, col
    patch = image[rr - 1:rr + 2, cc - 1:cc + 2]
    weights = patch - patch.min()
    if weights.sum() <= 0:
        return float(rr), float(cc)
    offsets = np.arange(-1, 2)
    return (float(rr + (weights.sum(axis=1) * offsets).sum() / weights.sum()),
            float(cc + (weights.sum(axis=0) * offsets).sum() / weights.sum()))
