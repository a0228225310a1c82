"""What a chest detector returns, the interface every detector backend implements, and the pieces they share.

Image convention everywhere in :mod:`scanai.chest`: a frontal radiograph as a (rows, cols) array, row 0 at the
top (head), column 0 on the image left, which is the **patient's right** (radiological display). Bright = dense
(MONOCHROME2 sense). Masks are (rows, cols) bool arrays on the image grid; boxes are pixel index ranges.

Object names (patient sides): ``lung_right`` (image left), ``lung_left``, ``heart``, ``spine``, ``scapula_right``,
``scapula_left``, ``clavicle_right``, ``clavicle_left``, ``foreign_object`` (one entry per object, in
:attr:`Detections.foreign_objects`), and the abnormal parts ``pneumothorax`` and ``effusion``.

A backend is anything with a ``name`` and ``detect(image, progress) -> Detections`` (:class:`Detector`), so a site's
own anatomy model plugs in by wrapping its output with :func:`detections_from_masks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

import numpy as np

from scanai.core.errors import InputError
from scanai.core.progress import Progress

ANATOMY = ("lung_right", "lung_left", "heart", "spine", "scapula_right", "scapula_left", "clavicle_right",
           "clavicle_left")
ABNORMAL = ("pneumothorax", "effusion")
FOREIGN = "foreign_object"
#: Every object a detector can report, in the network's channel order.
OBJECTS = (*ANATOMY, FOREIGN, *ABNORMAL)
#: Objects not validated on real radiographs (learnt from synthetic composites and procedural chests only; the
#: model card says why): withheld from every output, test and finding unless the user turns experimental objects on
#: (``Thresholds.experimental``). On 247 unseen real radiographs the network reported pneumothorax on 194 normal
#: images and never found a clavicle; foreign objects are learnt from composited objects only (no real annotation).
EXPERIMENTAL = ("scapula_right", "scapula_left", "clavicle_right", "clavicle_left", FOREIGN, "pneumothorax",
                "effusion")


class Box(NamedTuple):
    """A pixel box: rows ``top`` .. ``bottom - 1`` and columns ``left`` .. ``right - 1`` (exclusive ends)."""

    top: int
    left: int
    bottom: int
    right: int

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> Box | None:
        """The tight box of a (rows, cols) bool mask, or None when the mask is empty."""
        rows = np.flatnonzero(np.asarray(mask).any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(np.asarray(mask).any(axis=0))
        return cls(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)

    @property
    def area(self) -> int:
        """Pixels covered by the box."""
        return max(0, self.bottom - self.top) * max(0, self.right - self.left)

    @property
    def centre(self) -> tuple[float, float]:
        """(row, col) of the box centre in pixel index units (pixel centres at integers)."""
        return (self.top + self.bottom - 1) / 2.0, (self.left + self.right - 1) / 2.0

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        return Box(min(self.top, other.top), min(self.left, other.left), max(self.bottom, other.bottom),
                   max(self.right, other.right))

    def iou(self, other: Box) -> float:
        """Intersection over union of two boxes (0 when they do not overlap)."""
        inner = Box(max(self.top, other.top), max(self.left, other.left), min(self.bottom, other.bottom),
                    min(self.right, other.right))
        overlap = inner.area if inner.bottom > inner.top and inner.right > inner.left else 0
        total = self.area + other.area - overlap
        return overlap / total if total else 0.0


@dataclass(frozen=True)
class Found:
    """One detected object: its (rows, cols) bool ``mask``, tight ``box`` and ``confidence`` in [0, 1]."""

    name: str
    mask: np.ndarray
    box: Box
    confidence: float


@dataclass(frozen=True)
class Detections:
    """Everything a detector found on one radiograph.

    shape:           (rows, cols) of the image.
    objects:         name -> :class:`Found` for anatomy and abnormal parts that were found (absent names are missing).
    foreign_objects: foreign objects after non-maximum suppression, highest confidence first.
    body:            (rows, cols) bool mask of the patient's body (the "chest area" of the patent's C1 and C3).
    backend:         the detector's name.
    notes:           what the detector corrected or doubts, one sentence each (e.g. a spine line moved onto the
                     lungs' midline by :func:`spine_prior`); empty when there is nothing to say.
    """

    shape: tuple[int, int]
    objects: dict[str, Found] = field(default_factory=dict)
    foreign_objects: tuple[Found, ...] = ()
    body: np.ndarray | None = None
    backend: str = ""
    notes: tuple[str, ...] = ()

    def mask(self, name: str) -> np.ndarray:
        """The (rows, cols) bool mask of ``name`` (all foreign objects together for ``foreign_object``); all False
        when it was not found."""
        if name == FOREIGN:
            masks = [found.mask for found in self.foreign_objects]
        else:
            masks = [self.objects[name].mask] if name in self.objects else []
        union = np.zeros(self.shape, dtype=bool)
        for mask in masks:
            union |= mask
        return union

    def lungs(self) -> np.ndarray:
        """(rows, cols) bool union of both lungs."""
        return self.mask("lung_right") | self.mask("lung_left")

    def found(self, name: str) -> bool:
        """Whether ``name`` was detected (for ``foreign_object``: at least one)."""
        return bool(self.foreign_objects) if name == FOREIGN else name in self.objects

    def without(self, names: tuple[str, ...]) -> Detections:
        """A copy without the objects called ``names`` (e.g. :data:`EXPERIMENTAL`; :data:`FOREIGN` drops every
        foreign object)."""
        return replace(self, objects={name: found for name, found in self.objects.items() if name not in names},
                       foreign_objects=() if FOREIGN in names else self.foreign_objects)


class Detector(Protocol):
    """A detection backend: ``detect`` takes a (rows, cols) radiograph (raw intensities, bright = dense; the
    backend normalises it itself) and returns :class:`Detections` on the same grid."""

    name: str

    def detect(self, image: np.ndarray, progress: Progress | None = None) -> Detections:  # pragma: no cover
        ...


def check_radiograph_array(image: np.ndarray) -> np.ndarray:
    """The image as a (rows, cols) float64 array; InputError for other dimensions, NaNs or a blank image."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InputError(f"A chest radiograph is one 2-D image, but this input has shape {array.shape}.",
                         "Choose a single frontal radiograph (one slice), not a volume or a colour picture.")
    if min(array.shape) < 64:
        raise InputError(f"The image is only {array.shape[0]} x {array.shape[1]} pixels.",
                         "Use the full-resolution radiograph (at least 256 x 256 pixels).")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError("The image has pixels that are not numbers (NaN or infinite).",
                         "Check the source file; reload or re-export the radiograph.")
    if float(array.max()) == float(array.min()):
        raise InputError("The image is blank (every pixel has the same value).",
                         "Check that the right file was loaded.")
    return array


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of an array of grey values (SimpleITK, 256 bins), in the values' units."""
    import SimpleITK as sitk

    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(256)
    otsu.Execute(sitk.GetImageFromArray(np.atleast_2d(np.asarray(values, dtype=np.float32))))
    return float(otsu.GetThreshold())


def linear_taps(n_in: int, n_out: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w) of linear resampling from n_in to n_out samples with pixel-edge alignment (torch
    ``align_corners=False``): output index i reads position p = (i + 0.5) n_in / n_out - 0.5 clamped to
    [0, n_in - 1], value = (1 - w) x[i0] + w x[i1] with i0 = floor(p), i1 = min(i0 + 1, n_in - 1), w = p - i0."""
    position = np.clip((np.asarray(indices, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    first = np.floor(position).astype(np.intp)
    return first, np.minimum(first + 1, n_in - 1), position - first


def resample_linear(grid: np.ndarray, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(..., len(rows), len(cols)) float32: a (..., h, w) ``grid`` (e.g. network logits) bilinearly resampled to
    an image of ``shape`` (rows, cols), as torch ``interpolate(size=shape, mode="bilinear", align_corners=False)``
    does, but only at the image pixel indices ``rows`` x ``cols`` (so a box or every k-th pixel costs only its
    own size)."""
    grid = np.asarray(grid, dtype=np.float32)
    r0, r1, wr = linear_taps(grid.shape[-2], shape[0], rows)
    c0, c1, wc = linear_taps(grid.shape[-1], shape[1], cols)
    wr, wc = wr.astype(np.float32), wc.astype(np.float32)
    lo, hi = int(c0.min()), int(c1.max()) + 1  # only the grid columns the output needs
    part = grid[..., lo:hi]
    down = part[..., r0, :] * (1.0 - wr)[:, None] + part[..., r1, :] * wr[:, None]
    return down[..., c0 - lo] * (1.0 - wc) + down[..., c1 - lo] * wc


def upsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols) bool: ``resample_linear(mask, shape, all rows, all cols) > 0.5`` for an (h, w) bool ``mask``
    (scipy ``zoom(order=1, grid_mode=True)`` of it, thresholded), with the interpolation evaluated only between grid
    values that differ: elsewhere a pixel takes the value its four neighbours share."""
    rows, cols = shape
    r0, r1, wr = linear_taps(mask.shape[0], rows, np.arange(rows))
    c0, c1, wc = linear_taps(mask.shape[1], cols, np.arange(cols))
    grid = np.pad(np.asarray(mask, dtype=np.uint8), ((0, 1), (0, 1)), mode="edge")
    corners = grid[:-1, :-1] + grid[1:, :-1] + grid[:-1, 1:] + grid[1:, 1:]  # per grid cell: 0 .. 4 values set
    state = np.where(corners == 4, 1, np.where(corners == 0, 0, 2)).astype(np.uint8)[r0][:, c0]
    fine = state == 1
    i, j = np.nonzero(state == 2)
    grid = grid.astype(np.float64)
    top = grid[r0[i], c0[j]] * (1.0 - wc[j]) + grid[r0[i], c1[j]] * wc[j]
    bottom = grid[r1[i], c0[j]] * (1.0 - wc[j]) + grid[r1[i], c1[j]] * wc[j]
    fine[i, j] = top * (1.0 - wr[i]) + bottom * wr[i] > 0.5
    return fine


#: body_mask works on a grid with about this many pixels on the short side (block means of the image).
BODY_GRID = 256


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor`` x ``factor`` blocks of a (rows, cols) array (edges repeated to fill the last blocks):
    (ceil(rows / factor), ceil(cols / factor)) float64. Summed as factor² strided slices, several times faster than
    a mean over reshaped block axes for small factors."""
    if factor <= 1:
        return np.asarray(array, dtype=np.float64)
    rows, cols = array.shape
    padded = np.asarray(array)
    if rows % factor or cols % factor:
        padded = np.pad(padded, ((0, (-rows) % factor), (0, (-cols) % factor)), mode="edge")
    total = np.zeros((padded.shape[0] // factor, padded.shape[1] // factor))
    for row in range(factor):
        for col in range(factor):
            total += padded[row::factor, col::factor]
    return total / (factor * factor)


def body_mask(image: np.ndarray) -> np.ndarray:
    """(rows, cols) bool mask of the body: the largest bright connected region after Otsu thresholding of the
    smoothed image, holes filled. Used as the patent's "chest area" (C1/C3 denominator). Computed on block means
    with about :data:`BODY_GRID` pixels on the short side and brought back to the image grid (linear, > 0.5:
    :func:`upsample_mask`)."""
    from scipy import ndimage

    array = check_radiograph_array(image)
    coarse = block_mean(array, max(1, min(array.shape) // BODY_GRID))
    smooth = ndimage.gaussian_filter(coarse, max(1.0, min(coarse.shape) / 256.0))
    foreground = smooth > otsu_threshold(smooth)
    # lungs are darker than the body but inside it: close them into the body before filling holes
    foreground = ndimage.binary_closing(foreground, iterations=max(1, min(coarse.shape) // 64))
    labels, count = ndimage.label(foreground)
    if count == 0:
        return np.ones(array.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    body = ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))
    if body.shape == array.shape:
        return body
    return upsample_mask(body, array.shape)


def non_maximum_suppression(boxes: list[Box], scores: list[float], iou_threshold: float = 0.3) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first."""
    order = sorted(range(len(boxes)), key=lambda k: -float(scores[k]))
    kept: list[int] = []
    for index in order:
        if all(boxes[index].iou(boxes[other]) <= iou_threshold for other in kept):
            kept.append(index)
    return kept


def fill_mask_holes(mask: np.ndarray) -> np.ndarray:
    """A (rows, cols) bool mask with its holes filled: background regions (4-connected) that do not reach the array
    edge become foreground, as scipy ``binary_fill_holes`` does, by one labelling instead of an iterated
    propagation (several times faster on large masks)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    background, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    hole = np.ones(count + 1, dtype=bool)
    hole[0] = False
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        hole[edge] = False
    return mask | hole[background]


def objects_from_probability(name: str, probability: np.ndarray, threshold: float = 0.5, min_pixels: int = 1,
                             keep: int | None = None, fill_holes: bool = False) -> list[Found]:
    """Connected regions of ``probability > threshold`` as :class:`Found` objects, largest first.

    probability: (rows, cols) in [0, 1]. Each region's confidence is its maximum probability. ``keep`` limits
    how many regions are returned (1 for a single organ); regions smaller than ``min_pixels`` are dropped;
    ``fill_holes`` fills each region's holes (work stays inside each region's box, so a large image is cheap).
    """
    from scipy import ndimage

    probability = np.asarray(probability)
    labels, count = ndimage.label(probability > threshold)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    windows = ndimage.find_objects(labels)
    found = []
    for k in [k for k in np.argsort(-sizes, kind="stable") if sizes[k] >= min_pixels][:keep]:
        window = windows[k]
        region = labels[window] == (k + 1)
        peak = float(probability[window][region].max())
        if fill_holes:
            region = fill_mask_holes(region)
        mask = np.zeros(probability.shape, dtype=bool)
        mask[window] = region
        box = Box(window[0].start, window[1].start, window[0].stop, window[1].stop)
        found.append(Found(name, mask, box, peak))
    return found


def detections_from_masks(masks: Mapping[str, np.ndarray], image: np.ndarray | None = None,
                          confidences: Mapping[str, float] | None = None, body: np.ndarray | None = None,
                          backend: str = "masks") -> Detections:
    """Detections from ready-made masks (ground truth, hand-made test masks, or another tool's output).

    masks: name -> (rows, cols) bool, names from :data:`OBJECTS`; ``foreign_object`` may hold several separate
    objects (each connected region becomes one). confidences: name -> confidence (default 1.0). body: the chest
    area; when None it is computed from ``image`` with :func:`body_mask`, or taken as the whole image.
    """
    from scipy import ndimage

    unknown = sorted(set(masks) - set(OBJECTS))
    if unknown:
        raise InputError(f"Unknown object names {unknown}.", f"Use names from {list(OBJECTS)}.")
    shapes = {np.asarray(mask).shape for mask in masks.values()}
    if len(shapes) > 1:
        raise InputError(f"The masks have different shapes {sorted(shapes)}.", "Give every mask on the image grid.")
    shape = shapes.pop() if shapes else np.asarray(image).shape[-2:]
    confidences = dict(confidences or {})
    objects: dict[str, Found] = {}
    foreign: list[Found] = []
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            continue
        confidence = float(confidences.get(name, 1.0))
        if name == FOREIGN:
            labels, count = ndimage.label(mask)
            foreign += [Found(name, labels == k, Box.of_mask(labels == k), confidence) for k in range(1, count + 1)]
        else:
            objects[name] = Found(name, mask, Box.of_mask(mask), confidence)
    if body is None:
        body = body_mask(image) if image is not None else np.ones(shape, dtype=bool)
    return Detections(tuple(shape), objects, tuple(foreign), np.asarray(body, dtype=bool), backend)


# Anatomy priors: where each organ may lie, judged from the lungs. The network's post-processing applies them
# (scanai.chest.network.detections_from_regions); every constant below was measured on the Wingspan masks (207
# training images for the calibration, the 52 validation images to check it) and the NIH radiographs.

#: The lungs' midline is measured over this top fraction of the rows both lungs share: the apical rows, above the
#: aortic arch and the heart, where only the trachea, oesophagus and spine lie between the lungs' medial edges (there
#: the medial and the lateral edges give the same midline: median difference 0.000 of the width).
APICAL_FRACTION = 0.2
#: The network's spine line lies this fraction of the lung-union width from the lungs' apical midline, toward the
#: heart: its training labels (``scanai.chest.train.spine_pseudo_label``) take each row's brightest column near the
#: middle, which the dark trachea pushes away from and the aortic arch and heart draw toward. Median over the 207
#: Wingspan training images against their reference lungs (0.0117 of the image width); the validation images give
#: 0.0150, and the same images mirrored give the same bias toward the image left, where their heart then is.
SPINE_LABEL_BIAS = 0.0145
#: A spine line whose part beside the apices lies further than this fraction of the image width from the lungs'
#: apical midline, after the bias correction, is taken as misplaced and moved onto the midline (with a note). On the
#: Wingspan images the corrected line lies within 0.011 (one standard deviation) of the midline.
SPINE_MIDLINE_TOLERANCE = 0.035
#: The heart counts as on the image left (a mirrored image, or dextrocardia) when its centre lies this fraction of
#: the image width to the image left of the lungs' midline. Wingspan: median 0.050 to the image right, 1st percentile
#: -0.019; two images (-0.054, -0.061) have the heart pushed to the patient's right, and their spine line has no bias
#: to correct either way; the validation images mirrored: median -0.05.
DEXTROCARDIA_MARGIN = 0.02
#: Lungs are grown from their region above 0.5 into the connected pixels above this probability (a hysteresis
#: threshold; on the Wingspan training images mean Dice right 0.9692 -> 0.9695, left 0.9545 -> 0.9548).
LUNG_GROW = 0.4
#: ... and within this fraction of the image height around their region above 0.5 (a bound, not a calibration: the
#: 0.4 and 0.5 outlines of a Wingspan lung lie 1-2 pixels apart).
LUNG_REACH = 0.02
#: In the costophrenic region (below a lung's lowest row, on its lateral side, down to COSTOPHRENIC_DEPTH of the
#: image height) lungs grow further, into the pixels above this probability: the network rounds off the angles, so
#: its lungs ended 0.78 % of the image height above the reference's on the training images (median).
COSTOPHRENIC_GROW = 0.15
COSTOPHRENIC_DEPTH = 0.03
#: Heart pixels lower than the lungs' lowest row by more than this fraction of the lung-field height are below the
#: diaphragm. The Wingspan reference hearts reach up to 0.20 (training) and 0.18 (validation) below that row: their
#: inferior border is drawn where it projects over the liver, below the lung bases.
HEART_DEPTH_MAX = 0.25
#: Heart pixels further lateral than a costophrenic angle (a lung's most inferior-lateral point) by more than this
#: fraction of the image width are outside the thorax (Wingspan reference hearts: at most 0.016).
HEART_LATERAL_MARGIN = 0.03
#: Below the diaphragm line (the lungs' lowest row, raised by HEART_WIDENING_BUFFER of the image height so that a
#: spread that starts at the line is not taken as the heart's own extent) a heart may reach sideways beyond its
#: extent above the line by at most this fraction of the image width: its inferior border narrows downward, and what
#: spreads sideways there is liver or stomach. No Wingspan reference heart does (0 of 259).
HEART_WIDENING_MARGIN = 0.02
HEART_WIDENING_BUFFER = 0.02
#: Clavicles: the region's centre lies between these multiples of the lung-field height below the lungs' top (they
#: cross the apices: the upper third of the thorax and just above it), on its own side of the lungs' midline.
CLAVICLE_ROWS = (-0.4, 1.0 / 3.0)
#: A clavicle's centre lies no further lateral than the lateral edge of the lung on its side plus this fraction of
#: that lung's width (it runs from the sternum over the lung to the shoulder).
CLAVICLE_LATERAL = 0.1
#: Scapulae: the region's centre lies between these multiples of the lung-field height below the lungs' top (the
#: shoulders, beside the lungs' upper half), lateral to the medial third of the lung on its side.
SCAPULA_ROWS = (-0.25, 0.5)
#: Clavicle and scapula candidates smaller than this fraction of the image are ignored (specks).
PLACED_MIN_FRACTION = 1e-4


def centreline(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, x): the rows (index) of a (rows, cols) bool mask that hold pixels and its centre in each (mean column
    + 0.5, pixel-edge units); empty arrays for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return rows, np.zeros(0)
    cols = np.flatnonzero(mask.any(axis=0))
    band = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1][rows - rows[0]]  # the box, its rows with pixels
    counts = np.count_nonzero(band, axis=1)
    return rows, band @ np.arange(cols[0], cols[-1] + 1, dtype=np.float64) / counts + 0.5


def apical_midline(right: np.ndarray, left: np.ndarray, fraction: float = APICAL_FRACTION
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, x): the top ``fraction`` (at least one) of the rows both lungs share, and in each the midpoint of the
    lungs' medial edges in pixel-edge units (the right lung's last column + 1 and the left lung's first column).

    right, left: (rows, cols) bool masks of the patient-right (image-left) and patient-left lungs. Empty arrays when
    the lungs share no row."""
    right, left = np.asarray(right, dtype=bool), np.asarray(left, dtype=bool)
    shared = np.flatnonzero(right.any(axis=1) & left.any(axis=1))
    if shared.size == 0:
        return shared, np.zeros(0)
    rows = shared[:max(1, int(round(fraction * shared.size)))]
    right_edge = right.shape[1] - np.argmax(right[rows, ::-1], axis=1)
    left_edge = np.argmax(left[rows], axis=1)
    return rows, (right_edge + left_edge) / 2.0


def lungs_midline(right: np.ndarray, left: np.ndarray) -> float | None:
    """The lungs' midline column (pixel-edge units): the median of :func:`apical_midline`; None when the lungs share
    no row."""
    _rows, x = apical_midline(right, left)
    return float(np.median(x)) if x.size else None


def spine_to_midline_px(spine: np.ndarray, right: np.ndarray, left: np.ndarray) -> float | None:
    """Signed offset (pixels, positive toward the image right) of a spine mask's centreline from the lungs' midline
    over the apical rows (:func:`apical_midline`; the whole centreline when the spine does not reach those rows);
    None without a spine or without rows both lungs share."""
    rows, x = centreline(spine)
    mid_rows, mid_x = apical_midline(right, left)
    if x.size == 0 or mid_x.size == 0:
        return None
    beside = np.isin(rows, mid_rows)
    return float((np.mean(x[beside]) if beside.any() else np.mean(x)) - np.median(mid_x))


def shift_columns(mask: np.ndarray, shift: int) -> np.ndarray:
    """A (rows, cols) bool mask moved ``shift`` columns toward the image right (negative: left); what leaves the
    image is dropped."""
    mask = np.asarray(mask, dtype=bool)
    moved = np.zeros_like(mask)
    cols = mask.shape[1]
    if abs(shift) >= cols:
        return moved
    if shift >= 0:
        moved[:, shift:] = mask[:, :cols - shift]
    else:
        moved[:, :cols + shift] = mask[:, -shift:]
    return moved


def _found_with(found: Found, mask: np.ndarray) -> Found | None:
    """``found`` with a new mask and box (same confidence); None when the mask is empty."""
    box = Box.of_mask(mask)
    return None if box is None else Found(found.name, mask, box, found.confidence)


def spine_prior(spine: Found, right: np.ndarray, left: np.ndarray, heart: np.ndarray | None
                ) -> tuple[Found, tuple[str, ...]]:
    """The spine moved by what its line is known to be off, and checked against the lungs' midline.

    1. The network's line lies :data:`SPINE_LABEL_BIAS` of the lung-union width toward the heart (the convention of
       its training labels): the mask is moved back that far, away from the heart (toward the image left unless the
       heart's centre lies :data:`DEXTROCARDIA_MARGIN` of the width to the image left of the lungs' midline; toward
       the image left, too, when the lungs share no row).
    2. When its part beside the apices then lies further than :data:`SPINE_MIDLINE_TOLERANCE` of the image width
       from the lungs' apical midline (:func:`lungs_midline`), it is moved onto the midline and a note says so.

    right, left, heart: (rows, cols) bool masks. Returns (spine, notes); the spine unchanged when there are no lungs.
    """
    right, left = np.asarray(right, dtype=bool), np.asarray(left, dtype=bool)
    cols = np.flatnonzero((right | left).any(axis=0))
    rows, x = centreline(spine.mask)
    if cols.size == 0 or x.size == 0:
        return spine, ()
    width = spine.mask.shape[1]
    midline = lungs_midline(right, left)
    toward_heart = 1.0
    if heart is not None and np.any(heart) and midline is not None:
        per_column = np.count_nonzero(heart, axis=0)
        heart_col = float(per_column @ np.arange(per_column.size)) / float(per_column.sum()) + 0.5
        toward_heart = -1.0 if heart_col < midline - DEXTROCARDIA_MARGIN * width else 1.0
    shift = -toward_heart * SPINE_LABEL_BIAS * float(cols[-1] - cols[0] + 1)
    notes: tuple[str, ...] = ()
    offset = spine_to_midline_px(spine.mask, right, left)
    if offset is not None and abs(offset + shift) > SPINE_MIDLINE_TOLERANCE * width:
        notes = (f"spine line moved onto the lungs' midline: it lay {abs(offset + shift) / width:.3f} of the image "
                 f"width to the image {'right' if offset + shift > 0 else 'left'} of it beside the lung apices "
                 f"(more than {SPINE_MIDLINE_TOLERANCE:g}), so it is taken as misplaced; check the spine offset (C6)",)
        shift = -offset
    step = int(round(shift))
    if step == 0:
        return spine, notes
    moved = _found_with(spine, shift_columns(spine.mask, step))
    return (moved if moved is not None else spine), notes


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest connected region of a (rows, cols) bool ``mask``, holes filled (all False for an empty mask)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    return fill_mask_holes(labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)


def lung_prior(core: Found, probability: Callable[[Box], np.ndarray], side: int) -> Found:
    """A lung grown from its region above 0.5 (``core``) by hysteresis: into the connected pixels above
    :data:`LUNG_GROW` within :data:`LUNG_REACH` of the image height around the core's box, and in the costophrenic
    region (the rows below the core's lowest row, down to :data:`COSTOPHRENIC_DEPTH` of the image height, on its
    lateral side) into those above :data:`COSTOPHRENIC_GROW`. Holes filled; the confidence stays the core's.

    probability: box -> (box rows, box cols) probabilities of this lung there. side: -1 for the image-left lung
    (patient right; lateral = toward column 0), +1 for the image-right one."""
    from scipy import ndimage

    rows, cols = core.mask.shape
    reach = max(2, int(round(LUNG_REACH * rows)))
    depth = max(1, int(round(COSTOPHRENIC_DEPTH * rows)))
    window = Box(max(0, core.box.top - reach), max(0, core.box.left - reach),
                 min(rows, core.box.bottom + max(reach, depth)), min(cols, core.box.right + reach))
    inside = (slice(window.top, window.bottom), slice(window.left, window.right))
    values = np.asarray(probability(window))
    seed = core.mask[inside]
    grown = seed | (values > LUNG_GROW)
    centre = (core.box.left + core.box.right) // 2 - window.left
    corner = (slice(core.box.bottom - window.top, core.box.bottom - window.top + depth),
              slice(0, centre) if side < 0 else slice(centre, None))
    grown[corner] |= values[corner] > COSTOPHRENIC_GROW
    labels, _count = ndimage.label(grown)
    first = np.unravel_index(int(np.argmax(seed)), seed.shape)  # the core is one region: any of its pixels
    mask = np.zeros(core.mask.shape, dtype=bool)
    mask[inside] = fill_mask_holes(labels == labels[first])
    return _found_with(core, mask) or core


def costophrenic_point(lung: np.ndarray, side: int) -> tuple[int, int] | None:
    """(row, col) of a lung's costophrenic angle: its pixel furthest down and lateral (maximum row / rows + side x
    col / cols; side -1 for the image-left lung, +1 for the image-right one); None for an empty mask."""
    lung = np.asarray(lung, dtype=bool)
    box = Box.of_mask(lung)
    if box is None:
        return None
    part = lung[box.top:box.bottom, box.left:box.right]
    width = part.shape[1]
    lateral = np.argmax(part, axis=1) if side < 0 else width - 1 - np.argmax(part[:, ::-1], axis=1)
    score = np.where(part.any(axis=1), np.arange(box.top, box.bottom) / lung.shape[0]
                     + side * (lateral + box.left) / lung.shape[1], -np.inf)
    row = int(np.argmax(score))
    return row + box.top, int(lateral[row]) + box.left


def heart_outside_thorax(heart: np.ndarray, right: np.ndarray, left: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: the heart pixels below the diaphragm or outside the thorax, judged from the lungs:

    - lower than the lungs' lowest row (the diaphragm line) by more than :data:`HEART_DEPTH_MAX` of the lung-field
      height;
    - below that row (raised by :data:`HEART_WIDENING_BUFFER` of the image height) and further sideways than the
      heart reaches above it, by more than :data:`HEART_WIDENING_MARGIN` of the image width;
    - further lateral than a lung's costophrenic angle by more than :data:`HEART_LATERAL_MARGIN` of the width.

    Nothing without lungs."""
    heart = np.asarray(heart, dtype=bool)
    right, left = np.asarray(right, dtype=bool), np.asarray(left, dtype=bool)
    out = np.zeros(heart.shape, dtype=bool)
    lung_rows = np.flatnonzero((right | left).any(axis=1))
    if lung_rows.size == 0 or not heart.any():
        return out
    rows, cols = heart.shape
    base = int(lung_rows[-1])  # the diaphragm line: the lungs' lowest row
    depth = base + int(np.floor(HEART_DEPTH_MAX * (lung_rows[-1] - lung_rows[0] + 1)))
    out[depth + 1:] = heart[depth + 1:]
    line = max(0, base - int(round(HEART_WIDENING_BUFFER * rows)))
    above = np.flatnonzero(heart[:line + 1].any(axis=0))
    if above.size:
        margin = int(np.floor(HEART_WIDENING_MARGIN * cols))
        below = heart[line + 1:].copy()
        below[:, max(0, above[0] - margin):above[-1] + 1 + margin] = False
        out[line + 1:] |= below
    margin = int(np.floor(HEART_LATERAL_MARGIN * cols))
    for lung, side in ((right, -1), (left, 1)):
        point = costophrenic_point(lung, side)
        if point is None:
            continue
        if side < 0:
            out[:, :max(0, point[1] - margin)] |= heart[:, :max(0, point[1] - margin)]
        else:
            out[:, point[1] + 1 + margin:] |= heart[:, point[1] + 1 + margin:]
    return out


def heart_prior(heart: Found, right: np.ndarray, left: np.ndarray) -> Found | None:
    """The heart without its pixels below the diaphragm or outside the thorax (:func:`heart_outside_thorax`), its
    largest remaining region kept (holes filled); None when nothing remains."""
    outside = heart_outside_thorax(heart.mask, right, left)
    if not outside.any():
        return heart
    inside = (slice(heart.box.top, heart.box.bottom), slice(heart.box.left, heart.box.right))
    kept = np.zeros(heart.mask.shape, dtype=bool)
    kept[inside] = _largest_region(heart.mask[inside] & ~outside[inside])
    return _found_with(heart, kept)


def placed(name: str, candidates: list[Found], right: np.ndarray, left: np.ndarray) -> Found | None:
    """The largest of the ``candidates`` (regions of clavicle or scapula ``name``) whose centre lies where that bone
    can be, judged from the lungs; None when none does or a lung is missing.

    Rows are counted in lung-field heights h below the top of the lungs: clavicles within :data:`CLAVICLE_ROWS` (the
    upper third of the thorax and just above the apices), scapulae within :data:`SCAPULA_ROWS` (the shoulders, beside
    the lungs' upper half). Columns: each bone on its own side of the lungs' midline (:func:`lungs_midline`, else the
    middle of the lungs' box); a clavicle no further lateral than :data:`CLAVICLE_LATERAL` beyond the lung on its side,
    a scapula lateral to the medial third of the lung on its side."""
    right, left = np.asarray(right, dtype=bool), np.asarray(left, dtype=bool)
    lung_box = Box.of_mask(right | left)
    right_box, left_box = Box.of_mask(right), Box.of_mask(left)
    if lung_box is None or right_box is None or left_box is None or not candidates:
        return None
    midline = lungs_midline(right, left)
    if midline is None:
        midline = (lung_box.left + lung_box.right) / 2.0
    height = float(lung_box.bottom - lung_box.top)
    image_right = name.endswith("_left")  # patient left = image right
    low, high = CLAVICLE_ROWS if name.startswith("clavicle") else SCAPULA_ROWS
    fitting = []
    for found in candidates:
        rows, cols = np.nonzero(found.mask[found.box.top:found.box.bottom, found.box.left:found.box.right])
        row, col = float(rows.mean()) + found.box.top, float(cols.mean()) + found.box.left + 0.5
        if not lung_box.top + low * height <= row <= lung_box.top + high * height:
            continue
        if (col > midline) != image_right:
            continue
        lung = left_box if image_right else right_box
        if name.startswith("scapula"):
            third = (lung.right - lung.left) / 3.0
            if (col < lung.left + third) if image_right else (col > lung.right - third):
                continue
        else:
            reach = CLAVICLE_LATERAL * (lung.right - lung.left)
            if (col > lung.right + reach) if image_right else (col < lung.left - reach):
                continue
        fitting.append((int(rows.size), found))
    return max(fitting, key=lambda item: item[0])[1] if fitting else None
