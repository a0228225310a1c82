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

from collections.abc import Mapping
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
    """

    shape: tuple[int, int]
    objects: dict[str, Found] = field(default_factory=dict)
    foreign_objects: tuple[Found, ...] = ()
    body: np.ndarray | None = None
    backend: str = ""

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
