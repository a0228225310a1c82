"""The decision rule of the experimental abnormal findings (pneumothorax, pleural effusion): anatomical plausibility
of each detected region, then an extent and a confidence threshold.

The network's abnormal channels are learnt from composites only (:mod:`scanai.chest.train`); on normal real
radiographs they mark small regions, mostly along the lung edges. Each connected region R of a part's mask A is
tested; it counts toward the finding only when

1. it lies inside the thorax: it overlaps a lung, or comes within the contact tolerance of one
   (:func:`contact_tolerance`, 2 % of the image's longer side). Its lung field is that lung with the regions attached
   to it (L ∪ A, the convention of :func:`~scanai.chest.measurements.abnormal_ratio`, so a detector whose lungs leave
   the region out gets the same answer). The Otsu body mask is not used: it misses dark lung fields on some real
   images, and a pneumothorax darkens them further;
2. it touches the pleura where the finding lies: at least :data:`MIN_CONTACT` of the lung field's height in edge
   pixels within the contact tolerance of R, on

   - pneumothorax: the lateral or apical boundary (per row the outermost pixel, per column the topmost one) above the
     costophrenic zone (the lowest :data:`BASE_ZONE` of the field's height): pleural air collects apically and
     laterally on an erect film;
   - effusion: the lower boundary (per column the lowest pixel), and R reaches into the costophrenic zone: fluid
     settles at the base;

3. its extent ratio |R| / |L ∪ A| exceeds ``<name>_min_ratio`` and the part's network confidence exceeds
   ``<name>_min_confidence`` (:class:`~scanai.chest.thresholds.Thresholds`).

Regions failing 1 or 2 are discarded. The finding's ratio is |kept| / |L ∪ A| over the regions passing 1-3 (L both
lungs, A every detected pixel of the part), graded by ``<name>_low`` / ``<name>_high``. The thresholds are calibrated
on real normal radiographs by :mod:`scanai.chest.calibrate_abnormal`.

Limits: a :class:`~scanai.chest.detection.Detections` carries one confidence per abnormal part (the peak over all
its regions), so every region of a part is tested with that peak. Sides follow the image convention of
:mod:`scanai.chest.detection` (``lung_right`` is on the image left, so its lateral edge is its leftmost pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.chest.detection import Box, Detections
from scanai.chest.measurements import abnormal_ratio

#: Lower fraction of a lung's height that is its costophrenic (basal) zone.
BASE_ZONE = 0.25
#: Minimum pleural contact, as a fraction of the lung's height (in edge pixels).
MIN_CONTACT = 0.02
#: Contact tolerance as a fraction of the image's longer side (10 px on a 512² image, 5 cells of the 256² network
#: grid the regions and lungs are traced from).
CONTACT_TOLERANCE = 0.02
#: The parts this rule decides.
PARTS = ("pneumothorax", "effusion")


def contact_tolerance(shape: tuple[int, int]) -> int:
    """Distance in pixels (>= 1) within which a region touches a lung edge, for an image of ``shape`` (rows, cols)."""
    return max(1, int(round(CONTACT_TOLERANCE * max(shape))))


@dataclass(frozen=True)
class LungEdges:
    """The boundary pixels of one lung that the rule uses, each a (rows, cols) bool mask on the image grid.

    pleural: lateral (outermost pixel per row) or apical (topmost pixel per column) and above the costophrenic zone.
    basal:   lowest pixel per column. top / bottom: the lung's first row and last row + 1; base_row: the first row of
    its costophrenic zone.
    """

    pleural: np.ndarray
    basal: np.ndarray
    top: int
    bottom: int
    base_row: int

    @property
    def height(self) -> int:
        """Rows spanned by the lung."""
        return self.bottom - self.top


def lung_edges(lung: np.ndarray, lateral_is_image_left: bool) -> LungEdges | None:
    """:class:`LungEdges` of a (rows, cols) bool ``lung`` mask; ``lateral_is_image_left`` for the patient-right lung.
    None for an empty mask."""
    box = Box.of_mask(lung)
    if box is None:
        return None
    part = np.asarray(lung[box.top:box.bottom, box.left:box.right], dtype=bool)
    rows, cols = part.shape
    lateral = np.zeros_like(part)
    filled = part.any(axis=1)
    outer = np.argmax(part, axis=1) if lateral_is_image_left else cols - 1 - np.argmax(part[:, ::-1], axis=1)
    lateral[np.flatnonzero(filled), outer[filled]] = True
    apical, basal = np.zeros_like(part), np.zeros_like(part)
    used = part.any(axis=0)
    apical[np.argmax(part, axis=0)[used], np.flatnonzero(used)] = True
    basal[rows - 1 - np.argmax(part[::-1], axis=0)[used], np.flatnonzero(used)] = True
    base_row = box.top + int(np.ceil((1.0 - BASE_ZONE) * rows))
    pleural_full, basal_full = np.zeros(lung.shape, dtype=bool), np.zeros(lung.shape, dtype=bool)
    window = (slice(box.top, box.bottom), slice(box.left, box.right))
    pleural_full[window] = lateral | apical
    pleural_full[base_row:] = False
    basal_full[window] = basal
    return LungEdges(pleural_full, basal_full, box.top, box.bottom, base_row)


def edge_contact(region: np.ndarray, box: Box, edge: np.ndarray, tolerance: int) -> int:
    """Number of ``edge`` pixels within ``tolerance`` px (Euclidean) of a region, given as its (bottom - top,
    right - left) bool mask ``region`` inside its tight ``box``; ``edge`` is (rows, cols) bool on the image grid."""
    from scipy import ndimage

    rows, cols = edge.shape
    top, left = max(0, box.top - tolerance), max(0, box.left - tolerance)
    bottom, right = min(rows, box.bottom + tolerance), min(cols, box.right + tolerance)
    near = np.ones((bottom - top, right - left), dtype=bool)
    near[box.top - top:box.bottom - top, box.left - left:box.right - left] = ~region
    distance = ndimage.distance_transform_edt(near)
    return int(np.count_nonzero(edge[top:bottom, left:right] & (distance <= tolerance)))


@dataclass(frozen=True)
class Region:
    """One connected region of an abnormal part and what the rule found.

    box: its tight box; pixels: its size; side: "right" | "left" (the lung it belongs to, patient sides), "" when it
    is away from both lungs; contact: edge pixels of that lung field within the tolerance (the pleural edge for
    pneumothorax, the lower edge for effusion); plausible: whether it passes the place tests (1-2 of the module
    docstring); ratio: |R| / |L ∪ A|; confidence: the part's network confidence; why: the place test it failed ("" when
    plausible).
    """

    box: Box
    pixels: int
    side: str
    contact: int
    plausible: bool
    ratio: float
    confidence: float
    why: str = ""

    def counts(self, min_ratio: float, min_confidence: float) -> bool:
        """Whether the region counts toward the finding at these thresholds (plausible, ratio and confidence above
        them)."""
        return self.plausible and self.ratio > min_ratio and self.confidence > min_confidence


def _side_of(region: np.ndarray, box: Box, detections: Detections, tolerance: int) -> str:
    """The lung a region belongs to: the one holding most of its pixels, else the one with most pixels within
    ``tolerance`` of it; "" when no lung is that near."""
    window = (slice(box.top, box.bottom), slice(box.left, box.right))
    lungs = [side for side in ("right", "left") if detections.found(f"lung_{side}")]
    overlaps = {side: int(np.count_nonzero(detections.mask(f"lung_{side}")[window] & region)) for side in lungs}
    if overlaps and max(overlaps.values()) > 0:
        return max(overlaps, key=lambda side: overlaps[side])
    near = {side: edge_contact(region, box, detections.mask(f"lung_{side}"), tolerance) for side in lungs}
    return max(near, key=lambda side: near[side]) if near and max(near.values()) > 0 else ""


def _place(name: str, region: np.ndarray, box: Box, edges: LungEdges | None, tolerance: int) -> tuple[int, str]:
    """(contact, why): the region's contact with the boundary ``name`` needs and the place test it fails ("")."""
    if edges is None:
        return 0, "away from both lungs (outside the thorax)"
    edge = edges.pleural if name == "pneumothorax" else edges.basal
    contact = edge_contact(region, box, edge, tolerance)
    if contact < MIN_CONTACT * edges.height:
        where = "lateral or apical pleura" if name == "pneumothorax" else "lower lung boundary"
        return contact, f"does not touch the {where}"
    if name == "effusion" and box.bottom - 1 < edges.base_row:
        return contact, "above the costophrenic zone"
    return contact, ""


def abnormal_regions(detections: Detections, name: str) -> list[Region]:
    """Every connected region (4-connected, as the detectors label them) of abnormal part ``name`` ("pneumothorax" |
    "effusion") with its place tests, largest first; empty when the part was not detected."""
    from scipy import ndimage

    if name not in PARTS:
        raise ValueError(f"unknown abnormal part {name!r}")
    if not detections.found(name):
        return []
    _ratio, _count, total = abnormal_ratio(detections, name)
    labels, count = ndimage.label(detections.mask(name))
    if count == 0 or total == 0:
        return []
    tolerance = contact_tolerance(detections.shape)
    windows = ndimage.find_objects(labels)
    boxes = [Box(w[0].start, w[1].start, w[0].stop, w[1].stop) for w in windows]
    parts = [labels[window] == index for index, window in enumerate(windows, start=1)]
    sides = [_side_of(part, box, detections, tolerance) for part, box in zip(parts, boxes, strict=True)]
    edges: dict[str, LungEdges | None] = {}
    for side in ("right", "left"):  # each lung field: the lung with the regions attached to it (L ∪ A)
        attached = [index for index, owner in enumerate(sides, start=1) if owner == side]
        if attached:
            field_mask = detections.mask(f"lung_{side}") | np.isin(labels, attached)
            edges[side] = lung_edges(field_mask, side == "right")
    confidence = float(detections.objects[name].confidence)
    regions = []
    for part, box, side in zip(parts, boxes, sides, strict=True):
        pixels = int(np.count_nonzero(part))
        contact, why = _place(name, part, box, edges.get(side), tolerance)
        regions.append(Region(box, pixels, side, contact, not why, pixels / total, confidence, why))
    return sorted(regions, key=lambda item: -item.pixels)


@dataclass(frozen=True)
class AbnormalDecision:
    """The decided abnormal finding: ``ratio`` = |kept| / |L ∪ A| over the ``regions`` that count, ``kept_px`` and
    ``field_px`` the two pixel counts, and every region with its tests."""

    ratio: float
    kept_px: int
    field_px: int
    regions: tuple[Region, ...]
    min_ratio: float
    min_confidence: float

    @property
    def present(self) -> bool:
        """Whether any region counts."""
        return self.kept_px > 0

    def summary(self) -> str:
        """What happened to the candidate regions, in words ("" when there were none)."""
        if not self.regions:
            return ""
        misplaced = sum(not region.plausible for region in self.regions)
        small = sum(region.plausible and not region.counts(self.min_ratio, self.min_confidence)
                    for region in self.regions)
        parts = [f"{misplaced} outside the plausible place"] if misplaced else []
        if small:
            parts.append(f"{small} at or below the extent ({100 * self.min_ratio:g} % of the lung field) or "
                         f"confidence ({self.min_confidence:g}) thresholds")
        counted = len(self.regions) - misplaced - small
        return (f"{len(self.regions)} candidate region{'s' if len(self.regions) != 1 else ''}"
                + (f", {counted} counted" if counted else "") + (": " + "; ".join(parts) + " discarded" if parts
                                                                  else ""))


def decide(detections: Detections, name: str, min_ratio: float, min_confidence: float) -> AbnormalDecision:
    """The decision rule of the module docstring for part ``name`` at these thresholds."""
    regions = tuple(abnormal_regions(detections, name))
    _ratio, _count, field_px = abnormal_ratio(detections, name)
    kept = sum(region.pixels for region in regions if region.counts(min_ratio, min_confidence))
    return AbnormalDecision(kept / field_px if field_px else 0.0, kept, field_px, regions, min_ratio, min_confidence)


def strongest(regions: tuple[Region, ...] | list[Region], place: bool = True) -> tuple[float, float]:
    """(ratio, confidence) of the largest plausible region, (0.0, 0.0) when none: a radiograph gets the finding at
    thresholds (r, c) exactly when ratio > r and confidence > c (the confidence is shared by the part's regions), so
    these two numbers per radiograph are all a calibration needs. ``place=False`` skips the place tests (every
    region is taken), to measure what they contribute."""
    plausible = [region for region in regions if region.plausible or not place]
    if not plausible:
        return 0.0, 0.0
    return max(region.ratio for region in plausible), plausible[0].confidence


def counted_only(detections: Detections, thresholds) -> Detections:
    """``detections`` with each abnormal part reduced to the regions that count toward its finding at
    ``thresholds`` (a :class:`~scanai.chest.thresholds.Thresholds`; the part is dropped when none counts), so that
    overlays, segmentations and masks show what the finding rests on, not the discarded candidates."""
    from dataclasses import replace

    from scipy import ndimage

    from scanai.chest.detection import Found

    objects = dict(detections.objects)
    for name in PARTS:
        if name not in objects:
            continue
        decision = decide(detections, name, getattr(thresholds, f"{name}_min_ratio"),
                          getattr(thresholds, f"{name}_min_confidence"))
        counted = {(region.box, region.pixels) for region in decision.regions
                   if region.counts(decision.min_ratio, decision.min_confidence)}
        labels, _count = ndimage.label(objects[name].mask)
        keep = np.zeros(detections.shape, dtype=bool)
        for index, window in enumerate(ndimage.find_objects(labels), start=1):
            part = labels[window] == index
            if (Box(window[0].start, window[1].start, window[0].stop, window[1].stop),
                    int(np.count_nonzero(part))) in counted:
                keep[window] |= part
        if keep.any():
            objects[name] = Found(name, keep, Box.of_mask(keep), objects[name].confidence)
        else:
            del objects[name]
    return replace(detections, objects=objects)
