"""The ChestQC detection network: one U-Net that segments every object of :data:`~scanai.chest.detection.OBJECTS`.

The patent allows one model for all objects (¶0083) and names V-Net-style segmentation networks for the lung and
heart (¶0085). Here a 2-D U-Net (five levels, 16..128 channels, batch norm, skip connections) maps the normalised
radiograph at 256 x 256 to one sigmoid probability per object. Regions come from the probabilities: the largest
connected region for each organ, every region above :data:`FOREIGN_CANDIDATE` for foreign objects (scored by their
peak probability and reduced by non-maximum suppression, ¶0109), and the abnormal parts as they are. The organs are
then placed by anatomy, judged from the lungs (:func:`detections_from_regions`): lungs grown into their
costophrenic angles, the heart bounded by the diaphragm, the spine line freed of its training labels' bias and
checked against the lungs' midline, clavicles and scapulae kept only where they can be.

Large radiographs cost little more than small ones: the input is resampled by two sparse matrices
(:func:`resize_antialiased`), and the probabilities are never built at full size: regions are found on a work grid of
at most :data:`WORK_GRID` pixels and traced at full size only inside their boxes (:func:`objects_from_logits`). The
masks, boxes and confidences are those of the full-size probability maps.

The weights are trained by ``python -m scanai.chest.train`` (see :mod:`scanai.chest.train` and the model card
``scanai/models/chest_detector.json``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from scanai.chest.detection import (
    ABNORMAL,
    ANATOMY,
    FOREIGN,
    OBJECTS,
    PLACED_MIN_FRACTION,
    Box,
    Detections,
    Found,
    body_mask,
    check_radiograph_array,
    fill_mask_holes,
    heart_prior,
    linear_taps,
    lung_prior,
    non_maximum_suppression,
    objects_from_probability,
    placed,
    resample_linear,
    spine_prior,
)
from scanai.core.progress import Progress

MODEL_NAME = "chest_detector"
INPUT_SIZE = 256
WIDTHS = (16, 32, 64, 96, 128)
#: Foreign-object candidates are regions above this probability; their peak is the confidence tested by C5.
FOREIGN_CANDIDATE = 0.3
#: Abnormal-part regions smaller than this fraction of the image are ignored.
MIN_ABNORMAL_FRACTION = 0.002
#: Regions are looked for on every k-th image pixel, k the smallest step that leaves at most this many pixels on the
#: long side (twice the network grid; every pixel of the 512² training images), then traced at full size.
WORK_GRID = 512


def network_input(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """(size, size) float32 network input: the image resampled (anti-aliased) to size x size, then the patent's
    normalisation (Eq. 1 with the 5th/95th percentiles, Eq. 2 z-score), clipped to +-5.

    image: (rows, cols) raw intensities, bright = dense. The aspect ratio is not kept (the training images were
    resampled the same way).
    """
    resized = resize_antialiased(check_radiograph_array(image), size)
    low, high = np.percentile(resized, [5.0, 95.0])
    scaled = (resized - low) / max(float(high - low), 1e-6)
    standard = (scaled - scaled.mean()) / max(float(scaled.std()), 1e-6)
    return np.clip(standard, -5.0, 5.0).astype(np.float32)


def resize_antialiased(array: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float64: a (rows, cols) image smoothed on each shrunk axis with a Gaussian of sigma = 0.5 *
    (input pixels per output pixel) - 0.5 ('reflect' edges), then linearly resampled with pixel-edge alignment
    (scipy ``gaussian_filter`` then ``zoom(order=1, grid_mode=True, mode="nearest")``).

    Both steps are linear and separable, so each axis is one sparse (size, n) matrix (:func:`_resize_matrix`) and
    only the output pixels are computed: a 2048² image costs about what a 512² one does.
    """
    along_rows, along_cols = _resize_matrix(array.shape[0], size), _resize_matrix(array.shape[1], size)
    return np.asarray((along_cols @ (along_rows @ array).T).T)


@functools.lru_cache(maxsize=8)
def _resize_matrix(n_in: int, size: int):
    """(size, n_in) scipy sparse matrix of one axis of :func:`resize_antialiased` (linear interpolation after the
    Gaussian; the Gaussian's matrix is symmetric, so filtering the interpolation rows gives the product)."""
    from scipy import ndimage, sparse

    first, second, weight = linear_taps(n_in, size, np.arange(size))
    dense = np.zeros((size, n_in))
    np.add.at(dense, (np.arange(size), first), 1.0 - weight)
    np.add.at(dense, (np.arange(size), second), weight)
    sigma = 0.5 * n_in / size - 0.5
    if sigma > 1e-15:  # scipy skips such axes too
        dense = ndimage.gaussian_filter1d(dense, sigma, axis=1, mode="reflect")
    return sparse.csr_matrix(dense)


def build_chest_network(config: dict[str, Any] | None = None):
    """A fresh (untrained) :class:`~scanai.nn.unet.UNet`: (B, 1, H, W) normalised radiograph -> (B, len(OBJECTS),
    H, W) logits, H and W multiples of 16; ``config`` may give ``widths`` (one double conv-BN-ReLU block per level,
    2x2 transposed convolutions up, a 1x1 head)."""
    from scanai.nn.blocks import double_conv
    from scanai.nn.unet import UNet, unet_parts

    return UNet(*unet_parts(1, tuple((config or {}).get("widths", WIDTHS)), len(OBJECTS), double_conv))


def predict_logits(model, image: np.ndarray) -> np.ndarray:
    """(len(OBJECTS), INPUT_SIZE, INPUT_SIZE) float32 logits on the network grid for one (rows, cols) radiograph
    (bring them to the image grid with :func:`resample_linear`; probability = sigmoid(logit)).

    On the CPU the 256² network runs on one thread: a second one saves ~30 ms on an idle machine, but when another
    process holds a core every layer waits for it (0.2-1 s per image measured on 2 cores)."""
    from scanai.nn.backend import torch

    device = next(model.parameters()).device
    tensor = torch.from_numpy(network_input(image))[None, None].to(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # restored below
    try:
        with torch.no_grad():
            return model(tensor)[0].float().cpu().numpy()
    finally:
        torch.set_num_threads(threads)


def predict_probabilities(model, image: np.ndarray) -> np.ndarray:
    """(len(OBJECTS), rows, cols) float32 probabilities on the image grid for one (rows, cols) radiograph (slow on
    large images: detection itself never builds them, see :func:`objects_from_logits`)."""
    array = check_radiograph_array(image)
    rows, cols = array.shape
    logits = resample_linear(predict_logits(model, array), array.shape, np.arange(rows), np.arange(cols))
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def work_stride(shape: tuple[int, int]) -> int:
    """Pixel step of the work grid on which :func:`objects_from_logits` looks for regions (see :data:`WORK_GRID`)."""
    return max(1, -(-max(shape) // WORK_GRID))


def _logit(probability: float) -> float:
    """The logit log(p / (1 - p)): thresholding logits at it is thresholding sigmoid probabilities at p."""
    return float(np.log(probability / (1.0 - probability)))


def _trace(logits: np.ndarray, shape: tuple[int, int], seeds: tuple[np.ndarray, np.ndarray],
           box: Box, threshold: float, margin: int) -> list[tuple[np.ndarray, Box, float]]:
    """The image-grid regions of ``resample_linear(logits) > threshold`` (logit units) that hold a seed pixel:
    (region (bottom - top, right - left) bool in its tight box, the box, peak logit) each. Work stays in ``box``
    grown by ``margin``; the margin doubles until no region touches the edge of the window (unless that edge is
    the image edge), so the regions are the ones a full-image labelling would find."""
    from scipy import ndimage

    rows, cols = shape
    while True:
        top, left = max(0, box.top - margin), max(0, box.left - margin)
        bottom, right = min(rows, box.bottom + margin), min(cols, box.right + margin)
        values = resample_linear(logits, shape, np.arange(top, bottom), np.arange(left, right))
        labels, _count = ndimage.label(values > threshold)
        ids = np.unique(labels[seeds[0] - top, seeds[1] - left])
        ids = ids[ids > 0]
        every = ndimage.find_objects(labels)
        windows = [every[k - 1] for k in ids]
        touches = any((w[0].start == 0 < top) or (w[1].start == 0 < left) or (w[0].stop == bottom - top
                      and bottom < rows) or (w[1].stop == right - left and right < cols) for w in windows)
        if not touches:
            break
        margin *= 2
    regions = []
    for k, window in zip(ids, windows, strict=True):
        region = labels[window] == k
        peak = float(values[window][region].max())
        regions.append((region, Box(top + window[0].start, left + window[1].start, top + window[0].stop,
                                    left + window[1].stop), peak))
    return regions


def objects_from_logits(name: str, logits: np.ndarray, shape: tuple[int, int], threshold: float = 0.5,
                        min_pixels: int = 1, keep: int | None = None, fill_holes: bool = False) -> list[Found]:
    """What :func:`~scanai.chest.detection.objects_from_probability` finds in sigmoid(:func:`resample_linear` of
    the (h, w) network-grid ``logits`` to ``shape``), without building the full-size probability map.

    Regions are looked for on a work grid (every :func:`work_stride`-th image pixel, all of them up to
    :data:`WORK_GRID`); each candidate large enough to matter is then traced on the image grid inside its box
    (:func:`_trace`), so masks, sizes, boxes and peak confidences are the image-grid ones. Only image-grid regions
    that hold no work-grid pixel can be missed: specks narrower than the stride, none on images up to
    :data:`WORK_GRID`. threshold: probability; ``min_pixels``, ``keep``, ``fill_holes`` as there.
    """
    from scipy import ndimage

    level = _logit(threshold)
    stride = work_stride(shape)
    work_rows, work_cols = np.arange(stride // 2, shape[0], stride), np.arange(stride // 2, shape[1], stride)
    values = resample_linear(logits, shape, work_rows, work_cols)
    labels, count = ndimage.label(values > level)
    if count == 0:
        return []
    estimates = np.bincount(labels.ravel(), minlength=count + 1)[1:] * stride * stride  # image pixels, roughly
    order = np.argsort(-estimates, kind="stable")
    wanted = estimates[order] >= min_pixels / 4.0  # generous: the image-grid count decides below
    if keep is not None:  # only the regions that might turn out the largest at full size
        wanted &= estimates[order] >= 0.5 * estimates[order[0]]
    windows = ndimage.find_objects(labels)
    traced: dict[tuple[Box, int], tuple[np.ndarray, Box, float]] = {}
    for k in order[wanted]:
        window = windows[k]
        region = labels[window] == k + 1
        if stride == 1:  # the work grid is the image grid: its regions are the final ones
            box = Box(window[0].start, window[1].start, window[0].stop, window[1].stop)
            traced[(box, int(np.count_nonzero(region)))] = (region, box, float(values[window][region].max()))
            continue
        seed_r, seed_c = np.nonzero(region)
        seeds = (work_rows[seed_r + window[0].start], work_cols[seed_c + window[1].start])
        box = Box(int(seeds[0].min()), int(seeds[1].min()), int(seeds[0].max()) + 1, int(seeds[1].max()) + 1)
        for part, part_box, peak in _trace(logits, shape, seeds, box, level, 2 * stride):
            traced[(part_box, int(np.count_nonzero(part)))] = (part, part_box, peak)  # a region once
    ranked = sorted(traced.items(), key=lambda item: -item[0][1])  # largest first, as a full-image labelling
    found = []
    for (box, _size), (region, _box, peak) in [item for item in ranked if item[0][1] >= min_pixels][:keep]:
        if fill_holes:
            region = fill_mask_holes(region)
        mask = np.zeros(shape, dtype=bool)
        mask[box.top:box.bottom, box.left:box.right] = region
        found.append(Found(name, mask, box, float(1.0 / (1.0 + np.exp(-peak)))))
    return found


#: Finds the regions of one object: (name, threshold, min_pixels, keep, fill_holes) -> regions, largest first.
RegionFinder = Callable[[str, float, int, int | None, bool], list[Found]]
#: The probabilities of one object in a box of the image: (name, box) -> (box rows, box cols) float.
ValueFinder = Callable[[str, Box], np.ndarray]


def detections_from_regions(regions: RegionFinder, shape: tuple[int, int], body: np.ndarray,
                            backend: str = "network", priors: bool = True, values: ValueFinder | None = None
                            ) -> Detections:
    """:class:`Detections` on a (rows, cols) ``shape`` by the rules of the module docstring: the largest region
    of each organ (holes filled), every large enough abnormal region together, and the foreign-object candidates
    after non-maximum suppression. ``regions`` finds one object's regions; ``body`` is the (rows, cols) chest
    area.

    With ``priors`` (the default) the organs are then placed by anatomy, judged from the lungs (constants and their
    measurements in :mod:`scanai.chest.detection`): each lung grown by hysteresis when ``values`` gives the
    probabilities in a box (:func:`lung_prior`, which also completes the costophrenic angles), the heart cut at the
    diaphragm and the thorax (:func:`heart_prior`), the spine line corrected for its label bias and checked against
    the lungs' midline (:func:`spine_prior`, whose notes join :attr:`Detections.notes`), and each clavicle and
    scapula chosen among its candidate regions by place, or not found (:func:`placed`)."""
    if not priors:
        objects = {}
        for name in ANATOMY:
            found = regions(name, 0.5, 1, 1, True)
            if found:
                objects[name] = found[0]
        return _other_objects(regions, shape, body, backend, objects)
    found = {name: regions(name, 0.5, 1, 1, True) for name in ("lung_right", "lung_left", "heart", "spine")}
    organs = {name: parts[0] for name, parts in found.items() if parts}
    for name, side in (("lung_right", -1), ("lung_left", 1)):
        if name in organs and values is not None:
            organs[name] = lung_prior(organs[name], functools.partial(values, name), side)
    empty = np.zeros(tuple(shape), dtype=bool)
    right = organs["lung_right"].mask if "lung_right" in organs else empty
    left = organs["lung_left"].mask if "lung_left" in organs else empty
    if "heart" in organs:
        heart = heart_prior(organs["heart"], right, left)
        if heart is None:
            del organs["heart"]
        else:
            organs["heart"] = heart
    notes: tuple[str, ...] = ()
    if "spine" in organs:
        heart_mask = organs["heart"].mask if "heart" in organs else None
        organs["spine"], notes = spine_prior(organs["spine"], right, left, heart_mask)
    min_pixels = max(1, int(PLACED_MIN_FRACTION * shape[0] * shape[1]))
    for name in ("scapula_right", "scapula_left", "clavicle_right", "clavicle_left"):
        bone = placed(name, regions(name, 0.5, min_pixels, None, True), right, left)
        if bone is not None:
            organs[name] = bone
    objects = {name: organs[name] for name in ANATOMY if name in organs}
    return replace(_other_objects(regions, shape, body, backend, objects), notes=notes)


def _other_objects(regions: RegionFinder, shape: tuple[int, int], body: np.ndarray, backend: str,
                   objects: dict[str, Found]) -> Detections:
    """:class:`Detections` with the anatomy ``objects`` and the abnormal parts and foreign objects found by
    ``regions`` (see :func:`detections_from_regions`)."""
    objects = dict(objects)
    min_pixels = int(MIN_ABNORMAL_FRACTION * shape[0] * shape[1])
    for name in ABNORMAL:
        parts = regions(name, 0.5, min_pixels, None, False)
        if parts:
            union = np.logical_or.reduce([part.mask for part in parts])
            box = parts[0].box
            for part in parts[1:]:
                box = box.union(part.box)
            objects[name] = Found(name, union, box, max(part.confidence for part in parts))
    candidates = regions(FOREIGN, FOREIGN_CANDIDATE, max(4, int(1e-5 * shape[0] * shape[1])), None, False)
    kept = non_maximum_suppression([c.box for c in candidates], [c.confidence for c in candidates])
    foreign = tuple(sorted((candidates[k] for k in kept), key=lambda c: -c.confidence))
    return Detections(tuple(shape), objects, foreign, body, backend)


def detections_from_probabilities(probabilities: np.ndarray, image: np.ndarray, backend: str = "network",
                                  priors: bool = True) -> Detections:
    """Regions, boxes and confidences from (len(OBJECTS), rows, cols) probabilities on the image grid (see the
    module docstring and :func:`detections_from_regions` for ``priors``); the network itself goes through
    :func:`detections_from_logits`."""

    def regions(name: str, threshold: float, min_pixels: int, keep: int | None, fill_holes: bool) -> list[Found]:
        return objects_from_probability(name, probabilities[OBJECTS.index(name)], threshold, min_pixels, keep,
                                        fill_holes)

    def values(name: str, box: Box) -> np.ndarray:
        return probabilities[OBJECTS.index(name), box.top:box.bottom, box.left:box.right]

    return detections_from_regions(regions, probabilities.shape[1:], body_mask(image), backend, priors, values)


def detections_from_logits(logits: np.ndarray, image: np.ndarray, backend: str = "network", priors: bool = True
                           ) -> Detections:
    """As :func:`detections_from_probabilities` for the (len(OBJECTS), h, w) network-grid ``logits`` of the
    (rows, cols) ``image``, without full-size probability maps (:func:`objects_from_logits`)."""
    shape = tuple(np.shape(image)[-2:])

    def regions(name: str, threshold: float, min_pixels: int, keep: int | None, fill_holes: bool) -> list[Found]:
        return objects_from_logits(name, logits[OBJECTS.index(name)], shape, threshold, min_pixels, keep,
                                   fill_holes)

    def values(name: str, box: Box) -> np.ndarray:
        logit = resample_linear(logits[OBJECTS.index(name)], shape, np.arange(box.top, box.bottom),
                                np.arange(box.left, box.right))
        return 0.5 * (1.0 + np.tanh(0.5 * logit))  # the sigmoid, without overflow

    return detections_from_regions(regions, shape, body_mask(image), backend, priors, values)


class NetworkDetector:
    """The shipped detection network as a :class:`~scanai.chest.detection.Detector`; ``priors`` as in
    :func:`detections_from_regions` (off only to measure what they change). The priors' notes (a spine line moved
    onto the lungs' midline) travel in ``Detections.notes`` and reach the result's warnings."""

    name = "network"

    def __init__(self, model, priors: bool = True) -> None:
        self.model = model
        self.priors = priors

    def detect(self, image: np.ndarray, progress: Progress | None = None) -> Detections:
        """Detections on the grid of the (rows, cols) radiograph ``image`` (raw intensities, bright = dense)."""
        progress = Progress.ensure(progress)
        progress(0.0, "Running the detection network")
        array = check_radiograph_array(image)
        logits = predict_logits(self.model, array)
        progress(0.7, "Extracting objects")
        detections = detections_from_logits(logits, array, self.name, self.priors)
        progress(1.0, "Detection done")
        return detections


def load_chest_detector(device: str = "auto") -> NetworkDetector:
    """The trained network shipped in ``scanai/models`` (ModelError with advice when it is missing)."""
    from scanai.core.catalog import load_shipped_model

    model, _card = load_shipped_model(MODEL_NAME, build_chest_network, device)
    return NetworkDetector(model)
