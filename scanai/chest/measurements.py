"""The measurements behind the chest quality tests and findings: one function per formula (calibration reuses them)."""

from __future__ import annotations

import math

import numpy as np

from scanai.chest.assessment import WidthLine
from scanai.chest.detection import (
    Box,
    Detections,
    Found,
    centreline,
    heart_outside_thorax,
    spine_to_midline_px,
)
from scanai.chest.thresholds import Thresholds


def chest_mask(detections: Detections) -> np.ndarray:
    """(rows, cols) bool "chest area" of C1/C3: ``detections.body``, or the whole image when there is none."""
    body = detections.body
    if body is None or not np.asarray(body).any():
        return np.ones(detections.shape, dtype=bool)
    return np.asarray(body, dtype=bool)


def scapula_mask(detections: Detections) -> np.ndarray:
    """(rows, cols) bool union of both scapulae (empty when none was found)."""
    return detections.mask("scapula_right") | detections.mask("scapula_left")


def scapula_ratios(detections: Detections) -> tuple[float, float, float]:
    """(C1, C2, C3) = (|S|/|chest|, |S ∩ L|/|L|, |S ∩ L|/|chest|); 0 for a ratio whose denominator is empty."""
    scapula = scapula_mask(detections)
    lungs = detections.lungs()
    chest = int(chest_mask(detections).sum())
    overlap = int((scapula & lungs).sum())
    lung_area = int(lungs.sum())
    return (int(scapula.sum()) / chest if chest else 0.0, overlap / lung_area if lung_area else 0.0,
            overlap / chest if chest else 0.0)


def lung_box(detections: Detections) -> Box | None:
    """The union box of both lungs (``None`` when no lung was found)."""
    return Box.of_mask(detections.lungs())


def lung_margins(detections: Detections) -> dict[str, float] | None:
    """Normalised margins of the lung union box to each image edge: {"top": top / H, "bottom": (H - bottom) / H,
    "left": left / W, "right": (W - right) / W} (image sides; left = patient right), or None without lungs."""
    box = lung_box(detections)
    if box is None:
        return None
    rows, cols = detections.shape
    return {"top": box.top / rows, "bottom": (rows - box.bottom) / rows, "left": box.left / cols,
            "right": (cols - box.right) / cols}


def foreign_object_confidence(detections: Detections) -> float:
    """C5's value: the highest foreign-object confidence after NMS, 0.0 when none was found."""
    return max((float(found.confidence) for found in detections.foreign_objects), default=0.0)


def fo_is_inside_lung(found: Found, lungs: np.ndarray, rule: str = "centre", min_fraction: float = 0.5) -> bool:
    """Whether one foreign object lies inside the lung mask: its box centre is a lung pixel ("centre"), or at least
    ``min_fraction`` of its pixels are lung pixels ("overlap")."""
    if rule == "overlap":
        area = int(np.count_nonzero(found.mask))
        return area > 0 and int(np.count_nonzero(found.mask & lungs)) / area >= min_fraction
    row, col = found.box.centre
    r, c = int(math.floor(row + 0.5)), int(math.floor(col + 0.5))
    return 0 <= r < lungs.shape[0] and 0 <= c < lungs.shape[1] and bool(lungs[r, c])


def lungs_under_object(detections: Detections, found: Found, window: Box | None = None) -> np.ndarray:
    """(rows, cols) bool lung fields with the dents an opaque object can cut into a lung segmentation closed: each
    lung is morphologically closed with a square as large as the object's box, rounded up to an odd side (so the two
    lungs never merge); the image is taken as continuing with background beyond its edges. With ``window`` only
    that box of the result is computed (exactly; False elsewhere), which is all a test of the object needs and keeps
    the filters small on full-size radiographs."""
    from scipy import ndimage

    size = (max(found.box.bottom - found.box.top, found.box.right - found.box.left) + 1) | 1
    rows, cols = detections.shape
    window = window if window is not None else Box(0, 0, rows, cols)
    # the closing at a pixel depends on the lungs within 2 * (size // 2) of it: work on the window grown by
    # ``size`` and zero-filled beyond the image, then keep the window
    top, left, bottom, right = window.top - size, window.left - size, window.bottom + size, window.right + size
    inside = (slice(max(0, top), min(rows, bottom)), slice(max(0, left), min(cols, right)))
    placed = (slice(inside[0].start - top, inside[0].stop - top), slice(inside[1].start - left, inside[1].stop - left))
    closed = np.zeros(detections.shape, dtype=bool)
    for name in ("lung_right", "lung_left"):
        lung = detections.mask(name)[inside]
        if lung.any():
            padded = np.zeros((bottom - top, right - left), dtype=np.uint8)
            padded[placed] = lung
            dilated = ndimage.maximum_filter(padded, size, mode="constant", cval=0)
            eroded = ndimage.minimum_filter(dilated, size, mode="constant", cval=0)
            closed[window.top:window.bottom, window.left:window.right] |= eroded[size:-size, size:-size] > 0
    return closed


def foreign_objects_inside_lung(detections: Detections, thresholds: Thresholds) -> bool:
    """Whether any foreign object that fails C5 (confidence > tc) lies inside the lungs (digest §7.6; a confidence
    equal to tc passes C5, as every tie does, so it does not count here either). The lungs are taken with the dents
    the object itself may cut into their segmentation closed (:func:`lungs_under_object`, over the object's box:
    both rules look only there)."""
    return any(fo_is_inside_lung(found, lungs_under_object(detections, found, found.box), thresholds.fo_inside,
                                 thresholds.fo_overlap_min)
               for found in detections.foreign_objects if float(found.confidence) > thresholds.tc)


def spine_centreline(detections: Detections) -> tuple[np.ndarray, np.ndarray]:
    """(rows, x): the rows (index) that hold spine pixels and the spine's centre in each (mean column + 0.5, pixel-
    edge units); empty arrays when no spine was found."""
    return centreline(detections.mask("spine"))


def spine_midline_offset(detections: Detections) -> float | None:
    """Signed offset of the spine centreline from the lungs' midline beside the apices, as a fraction of the image
    width (positive = toward the image right): :func:`scanai.chest.detection.spine_to_midline_px`. The check of
    the spine line against anatomy (C6 itself measures from the image centreline); None without a spine or without
    rows both lungs share."""
    offset = spine_to_midline_px(detections.mask("spine"), detections.mask("lung_right"),
                                 detections.mask("lung_left"))
    return None if offset is None else offset / detections.shape[1]


def heart_below_diaphragm(detections: Detections) -> int:
    """Number of heart pixels below the diaphragm or outside the thorax as judged from the lungs
    (:func:`scanai.chest.detection.heart_outside_thorax`); 0 without a heart or lungs."""
    return int(np.count_nonzero(heart_outside_thorax(detections.mask("heart"), detections.mask("lung_right"),
                                                     detections.mask("lung_left"))))


def lung_bottom(detections: Detections, name: str | None = None) -> int | None:
    """The lowest row (index) of lung ``name`` ("lung_right" | "lung_left"), or of both lungs when None (the bottom
    of C4's lung box, minus one); None when it was not found."""
    mask = detections.lungs() if name is None else detections.mask(name)
    rows = np.flatnonzero(mask.any(axis=1))
    return int(rows[-1]) if rows.size else None


def spine_offset(detections: Detections) -> float | None:
    """C6's signed offset sum_k (x_k - W/2) / (K W) of the spine centreline from the image centreline (positive =
    toward the image right = patient left); None when no spine was found."""
    _rows, x = spine_centreline(detections)
    if x.size == 0:
        return None
    width = detections.shape[1]
    return float(np.sum(x - width / 2.0) / (x.size * width))


def horizontal_extent(mask: np.ndarray) -> tuple[int, int] | None:
    """(leftmost column, rightmost column + 1) of a (rows, cols) mask, or None when it is empty."""
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    return (int(cols[0]), int(cols[-1]) + 1) if cols.size else None


def width_line(name: str, mask: np.ndarray) -> WidthLine | None:
    """The maximum-width line of a mask (FIG. 13): its whole horizontal extent, drawn at its centroid row."""
    extent = horizontal_extent(mask)
    if extent is None:
        return None
    per_row = np.count_nonzero(mask, axis=1)
    centroid = float(per_row @ np.arange(per_row.size, dtype=np.float64)) / float(per_row.sum())
    return WidthLine(name, centroid + 0.5, float(extent[0]), float(extent[1]))


def cardiothoracic_ratio(detections: Detections) -> tuple[float, int, int] | None:
    """(CTR, heart width px, lung width px) with widths = horizontal extents of the heart and of the union of both
    lungs (claim 16, FIG. 13); None when the heart or the lungs are missing."""
    heart = horizontal_extent(detections.mask("heart"))
    lungs = horizontal_extent(detections.lungs())
    if heart is None or lungs is None:
        return None
    heart_width, lung_width = heart[1] - heart[0], lungs[1] - lungs[0]
    return heart_width / lung_width, heart_width, lung_width


def abnormal_ratio(detections: Detections, name: str) -> tuple[float, int, int]:
    """(ratio, |A|, |L ∪ A|) for abnormal part ``name`` ("pneumothorax" | "effusion"): ratio = |A| / |L ∪ A|."""
    abnormal = detections.mask(name)
    field_mask = detections.lungs() | abnormal
    count, total = int(abnormal.sum()), int(field_mask.sum())
    return (count / total if total else 0.0), count, total


def clavicle_rotation(detections: Detections) -> tuple[float, float, float] | None:
    """Our rotation extension: (asymmetry, dR, dL) where dR / dL are the horizontal distances (px) from the medial
    end of the patient-right / patient-left clavicle to the spine midline, and asymmetry = (dR - dL) / (dR + dL)
    (positive: the spine is nearer the patient-left clavicle head). The medial end is the clavicle pixel nearest the
    image centre column; the midline is the mean spine centre over rows within 5 % of the image height of the
    medial ends (all rows when none). None when a clavicle or the spine is missing or the ends cross the midline."""
    right, left = detections.mask("clavicle_right"), detections.mask("clavicle_left")
    rows, x = spine_centreline(detections)
    if not right.any() or not left.any() or x.size == 0:
        return None
    r_rows, r_cols = np.nonzero(right)
    l_rows, l_cols = np.nonzero(left)
    right_end = float(r_cols.max()) + 1.0  # patient-right clavicle is on the image left: its medial end is its right
    left_end = float(l_cols.min())
    end_row = (r_rows[r_cols == r_cols.max()].mean() + l_rows[l_cols == l_cols.min()].mean()) / 2.0
    near = np.abs(rows - end_row) <= 0.05 * detections.shape[0]
    midline = float(x[near].mean() if near.any() else x.mean())
    d_right, d_left = midline - right_end, left_end - midline
    if d_right + d_left <= 0:
        return None
    return (d_right - d_left) / (d_right + d_left), d_right, d_left


def lung_aspect(detections: Detections) -> float | None:
    """Our inspiration extension: lung-field height / width of the union box of both lungs (None without lungs)."""
    box = lung_box(detections)
    if box is None:
        return None
    return (box.bottom - box.top) / (box.right - box.left)
