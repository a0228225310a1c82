"""Foreign objects (metal) for the classical chest detector: bright compact blobs, bead chains, the tissue mask."""

from __future__ import annotations

import numpy as np

from scanai.chest.classical_grid import _disk, _largest
from scanai.chest.detection import otsu_threshold


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
