"""The ChestQC detection network: one U-Net that segments every object of :data:`~scanai.chest.detection.OBJECTS`.

The patent allows one model for all objects (¶0083) and names V-Net-style segmentation networks for the lung and
heart (¶0085). Here a 2-D U-Net (five levels, 16..128 channels, batch norm, skip connections) maps the normalised
radiograph at 256 x 256 to one sigmoid probability per object. Regions come from the probabilities: the largest
connected region for each organ, every region above :data:`FOREIGN_CANDIDATE` for foreign objects (scored by their
peak probability and reduced by non-maximum suppression, ¶0109), and the abnormal parts as they are.

The weights are trained by ``python -m scanai.chest.train`` (see :mod:`scanai.chest.train` and the model card
``scanai/models/chest_detector.json``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scanai.chest.detection import (
    ABNORMAL,
    ANATOMY,
    FOREIGN,
    OBJECTS,
    Detections,
    Found,
    body_mask,
    check_radiograph_array,
    non_maximum_suppression,
    objects_from_probability,
)
from scanai.core.progress import Progress

MODEL_NAME = "chest_detector"
INPUT_SIZE = 256
WIDTHS = (16, 32, 64, 96, 128)
#: Foreign-object candidates are regions above this probability; their peak is the confidence tested by C5.
FOREIGN_CANDIDATE = 0.3
#: Abnormal-part regions smaller than this fraction of the image are ignored.
MIN_ABNORMAL_FRACTION = 0.002


def network_input(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """(size, size) float32 network input: the image resampled (anti-aliased) to size x size, then the patent's
    normalisation (Eq. 1 with the 5th/95th percentiles, Eq. 2 z-score), clipped to +-5.

    image: (rows, cols) raw intensities, bright = dense. The aspect ratio is not kept (the training images were
    resampled the same way).
    """
    from scipy import ndimage

    array = check_radiograph_array(image)
    factors = (size / array.shape[0], size / array.shape[1])
    if min(factors) < 1.0:
        array = ndimage.gaussian_filter(array, [max(0.0, 0.5 / f - 0.5) for f in factors])
    resized = ndimage.zoom(array, factors, order=1, grid_mode=True, mode="nearest")
    low, high = np.percentile(resized, [5.0, 95.0])
    scaled = (resized - low) / max(float(high - low), 1e-6)
    standard = (scaled - scaled.mean()) / max(float(scaled.std()), 1e-6)
    return np.clip(standard, -5.0, 5.0).astype(np.float32)


def build_chest_network(config: dict[str, Any] | None = None):
    """A fresh (untrained) :class:`~scanai.nn.unet.UNet`: (B, 1, H, W) normalised radiograph -> (B, len(OBJECTS),
    H, W) logits, H and W multiples of 16; ``config`` may give ``widths`` (one double conv-BN-ReLU block per level,
    2x2 transposed convolutions up, a 1x1 head)."""
    from scanai.nn.blocks import double_conv
    from scanai.nn.unet import UNet, unet_parts

    return UNet(*unet_parts(1, tuple((config or {}).get("widths", WIDTHS)), len(OBJECTS), double_conv))


def predict_probabilities(model, image: np.ndarray) -> np.ndarray:
    """(len(OBJECTS), rows, cols) float32 probabilities on the image grid for one (rows, cols) radiograph."""
    from scanai.nn.backend import torch

    array = check_radiograph_array(image)
    device = next(model.parameters()).device
    with torch.no_grad():
        tensor = torch.from_numpy(network_input(array))[None, None].to(device)
        logits = model(tensor)
        logits = torch.nn.functional.interpolate(logits, size=array.shape, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)[0].float().cpu().numpy()


def detections_from_probabilities(probabilities: np.ndarray, image: np.ndarray, backend: str = "network"
                                  ) -> Detections:
    """Regions, boxes and confidences from (len(OBJECTS), rows, cols) probabilities (see the module docstring)."""

    shape = probabilities.shape[1:]
    objects = {}
    for name in ANATOMY:
        found = objects_from_probability(name, probabilities[OBJECTS.index(name)], 0.5, keep=1, fill_holes=True)
        if found:
            objects[name] = found[0]
    min_pixels = int(MIN_ABNORMAL_FRACTION * shape[0] * shape[1])
    for name in ABNORMAL:
        regions = objects_from_probability(name, probabilities[OBJECTS.index(name)], 0.5, min_pixels=min_pixels)
        if regions:
            union = np.logical_or.reduce([region.mask for region in regions])
            box = regions[0].box
            for region in regions[1:]:
                box = box.union(region.box)
            objects[name] = Found(name, union, box, max(region.confidence for region in regions))
    candidates = objects_from_probability(FOREIGN, probabilities[OBJECTS.index(FOREIGN)], FOREIGN_CANDIDATE,
                                          min_pixels=max(4, int(1e-5 * shape[0] * shape[1])))
    kept = non_maximum_suppression([c.box for c in candidates], [c.confidence for c in candidates])
    foreign = tuple(sorted((candidates[k] for k in kept), key=lambda c: -c.confidence))
    return Detections(tuple(shape), objects, foreign, body_mask(image), backend)


class NetworkDetector:
    """The shipped detection network as a :class:`~scanai.chest.detection.Detector`."""

    name = "network"

    def __init__(self, model) -> None:
        self.model = model

    def detect(self, image: np.ndarray, progress: Progress | None = None) -> Detections:
        """Detections on the grid of the (rows, cols) radiograph ``image`` (raw intensities, bright = dense)."""
        progress = Progress.ensure(progress)
        progress(0.0, "Running the detection network")
        probabilities = predict_probabilities(self.model, image)
        progress(0.7, "Extracting objects")
        detections = detections_from_probabilities(probabilities, check_radiograph_array(image), self.name)
        progress(1.0, "Detection done")
        return detections


def load_chest_detector(device: str = "auto") -> NetworkDetector:
    """The trained network shipped in ``scanai/models`` (ModelError with advice when it is missing)."""
    from scanai.core.catalog import load_shipped_model

    model, _card = load_shipped_model(MODEL_NAME, build_chest_network, device)
    return NetworkDetector(model)
