"""The patent's "first classification model": a CNN that scores k-space patches for spikes (claims 2 and 7a).

Each 32 x 32 patch of one (ky, kx) plane becomes three input channels (:func:`patch_features`):

- ch0  patent Max-Min normalisation of the coil-combined magnitude ``M = RSS_c |k_c|``: ``clip(M / Max, 0, 1)``
       with Min = 0 and a position-dependent Max (claim 4, L412): ``Max = S * (2 + (0.1 - 2) * r)``, i.e. 2 S for a
       patch at the k-space centre falling linearly with the patch's normalised radius ``r`` to 0.1 S at the edge,
       where the standard value ``S`` is the root-sum-of-squares of the central 5 x 5 samples of ``M``;
- ch1  spike contrast: ``log(M / median_5x5(M))`` clipped to [-2, 8] and divided by 8;
- ch2  cross-coil consistency: the mean over coils of each coil's own log excess over its 24 neighbours,
       ``0.5 * log(|k_c|^2 / mean_neighbours(|k_c|^2))`` clipped to [-2, 8], divided by 8. An external spike adds
       energy at the same (ky, kx) in every coil, so the excess shows up in most coils at once; noise peaks are
       independent from coil to coil and average out.

Samples that were never acquired (zero in every coil: partial Fourier, parallel imaging) get the neutral value 0 in
every channel and are left out of the neighbourhood statistics. The patch position -- ``(ky_c / Nky - 0.5,
kx_c / Nkx - 0.5, r)`` of the patch centre -- enters the fully connected head of
:class:`~scanai.kspace.layers.PatchClassifier` (the "position encoding component added into the fully connected
layer", claim 7a). That torch module is imported only when a network is built, so importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.catalog import MODELS_DIR, check_contract, load_shipped_model
from scanai.core.errors import InputError, ModelError
from scanai.kspace.patches import PatchGrid

MODEL_NAME = "kspace_patch_classifier"
N_CHANNELS = 3
N_POSITION_FEATURES = 3
EDGE_THRESHOLD = 0.5
CENTRE_THRESHOLD = 0.8
LOG_RATIO_CLIP = (-2.0, 8.0)
MAX_AT_CENTRE = 2.0
MAX_AT_EDGE = 0.1

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "type": "PatchClassifier",
    "in_channels": N_CHANNELS,
    "widths": [16, 32, 64],
    "position_features": N_POSITION_FEATURES,
    "position_width": 16,
    "hidden": 64,
    "patch_size": 32,
}


def _as_plane(plane: np.ndarray) -> np.ndarray:
    """Check one k-space plane and return it as complex (coils, ky, kx); a (ky, kx) plane is one coil."""
    array = np.asarray(plane)
    if not np.iscomplexobj(array):
        raise InputError(f"The k-space plane holds real numbers ({array.dtype}); the classifier needs complex "
                         "k-space.", "Pass the complex raw data (coils, ky, kx).")
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3 or array.size == 0:
        raise InputError(f"A k-space plane must be (coils, ky, kx), got shape {array.shape}.",
                         "Select one slice of the (coils, slices, ky, kx) array.")
    if not np.isfinite(array).all():
        raise InputError("The k-space plane holds NaN or infinite samples.", "Repair or re-export the raw data.")
    return array


def normalised_radius(centres: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(P,) radius of (P, 2) (ky, kx) positions from the k-space centre (ky // 2, kx // 2), in units of the
    half-extent along each axis, clipped to [0, 1] (0 = DC, 1 = the middle of the border and beyond)."""
    half = np.array([shape[0] / 2.0, shape[1] / 2.0])
    centre = np.array([shape[0] // 2, shape[1] // 2])
    return np.clip(np.linalg.norm((np.asarray(centres, float) - centre) / half, axis=1), 0.0, 1.0)


def position_features(grid: PatchGrid) -> np.ndarray:
    """(P, 3) float32 position of every patch: (ky_c / Nky - 0.5, kx_c / Nkx - 0.5, normalised radius)."""
    centres = grid.centres()
    relative = centres / np.asarray(grid.shape, dtype=float) - 0.5
    return np.column_stack([relative, normalised_radius(centres, grid.shape)]).astype(np.float32)


def standard_value(magnitude: np.ndarray) -> float:
    """The patent's preset standard value S: root-sum-of-squares of the central 5 x 5 samples of ``magnitude``
    (ky, kx) (the coil-combined magnitude); same units as ``magnitude``."""
    cy, cx = magnitude.shape[0] // 2, magnitude.shape[1] // 2
    block = magnitude[max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3]
    return float(np.sqrt(np.sum(block.astype(np.float64) ** 2)))


def normalisation_max(radius: np.ndarray, standard: float) -> np.ndarray:
    """Position-dependent Max of the Max-Min normalisation: 2 S at radius 0 falling linearly to 0.1 S at radius 1."""
    radius = np.clip(np.asarray(radius, dtype=float), 0.0, 1.0)
    return standard * (MAX_AT_CENTRE + (MAX_AT_EDGE - MAX_AT_CENTRE) * radius)


def _local_median(values: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """5 x 5 median of ``values`` (ky, kx) over acquired samples only (reflecting at the border)."""
    from scipy.ndimage import median_filter

    if acquired.all():
        return median_filter(values, size=5, mode="reflect")
    padded = np.pad(np.where(acquired, values, np.nan), 2, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5)).reshape(*values.shape, 25)
    out = np.zeros(values.shape, dtype=values.dtype)  # never-acquired samples are set neutral by the caller
    with np.errstate(all="ignore"):
        out[acquired] = np.nanmedian(windows[acquired], axis=1)
    return np.nan_to_num(out, nan=0.0)


def _neighbour_mean(power: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """Mean of ``power`` (coils, ky, kx) over each sample's acquired 5 x 5 neighbours, the sample itself excluded."""
    from scipy.ndimage import uniform_filter

    weight = acquired.astype(np.float32)
    masked = power * weight
    box = uniform_filter(masked, size=(1, 5, 5), mode="reflect") * 25.0
    count = uniform_filter(weight, size=5, mode="reflect") * 25.0
    return (box - masked) / np.maximum(count - weight, 1.0)


def sample_features(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample inputs of one plane (coils, ky, kx) complex: (magnitude M, ch1 contrast, ch2 coil consistency).

    magnitude: (ky, kx) float32 RSS over coils, in the data's units; ch1, ch2: (ky, kx) float32 in [-0.25, 1],
    0 at never-acquired samples.
    """
    data = _as_plane(plane)
    power = (data.real.astype(np.float32) ** 2 + data.imag.astype(np.float32) ** 2)  # (coils, ky, kx)
    magnitude = np.sqrt(power.sum(axis=0))
    acquired = magnitude > 0
    if not acquired.any():
        raise InputError("The k-space plane holds only zeros: nothing was acquired.",
                         "Check that the right slice or file was chosen.")
    tiny = np.float32(max(float(magnitude.max()), 1e-30) * 1e-9)
    low, high = LOG_RATIO_CLIP
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = np.log((magnitude + tiny) / (_local_median(magnitude, acquired) + tiny))
        coil_level = _neighbour_mean(power, acquired)
        per_coil = 0.5 * np.log((power + tiny**2) / (coil_level + tiny**2))
    consistency = np.clip(per_coil, low, high).mean(axis=0)
    contrast = np.where(acquired, np.clip(contrast, low, high) / high, 0.0).astype(np.float32)
    consistency = np.where(acquired, consistency / high, 0.0).astype(np.float32)
    return magnitude, contrast, consistency


def patch_features(plane: np.ndarray, grid: PatchGrid) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs of every patch of one plane.

    plane: (coils, ky, kx) complex k-space (centred; (ky, kx) is read as one coil); grid: its patch grid.
    Returns (features (P, 3, S, S) float32, positions (P, 3) float32), patches in ``grid.anchors()`` order;
    channels as described in the module docstring (ch0 in [0, 1], ch1 and ch2 in [-0.25, 1]).
    """
    data = _as_plane(plane)
    if data.shape[-2:] != grid.shape:
        raise InputError(f"The k-space plane is {data.shape[-2:]} but the patch grid was made for {grid.shape}.")
    magnitude, contrast, consistency = sample_features(data)
    positions = position_features(grid)
    maxima = normalisation_max(positions[:, 2], standard_value(magnitude)).astype(np.float32)
    magnitude_patches = grid.extract(magnitude)  # (P, S, S)
    normalised = np.clip(magnitude_patches / np.maximum(maxima, 1e-30)[:, None, None], 0.0, 1.0)
    features = np.stack([normalised, grid.extract(contrast), grid.extract(consistency)], axis=1)
    return features.astype(np.float32), positions


def central_patches(grid: PatchGrid, radius: float | None = None) -> np.ndarray:
    """(P,) bool: patches whose centre lies within ``radius`` samples (default: one patch size) of the k-space
    centre -- the patent's central area (frame 630), where a higher threshold applies."""
    limit = float(grid.size if radius is None else radius)
    return grid.radius() <= limit


def patch_thresholds(grid: PatchGrid, edge: float = EDGE_THRESHOLD, centre: float = CENTRE_THRESHOLD,
                     centre_radius: float | None = None) -> np.ndarray:
    """(P,) decision threshold of every patch: ``centre`` in the central area, ``edge`` elsewhere (claims 8-9)."""
    return np.where(central_patches(grid, centre_radius), centre, edge).astype(np.float64)


def build_patch_classifier(architecture: dict[str, Any] | None = None):
    """An untrained :class:`~scanai.kspace.layers.PatchClassifier` from a model card's ``architecture`` dict (see
    DEFAULT_ARCHITECTURE)."""
    spec = {**DEFAULT_ARCHITECTURE, **(architecture or {})}
    if spec.get("type", "PatchClassifier") != "PatchClassifier":
        raise ModelError(f"Unknown patch-classifier architecture '{spec['type']}'.", "Reinstall the ScanAI extension.")
    from scanai.kspace.layers import PatchClassifier

    return PatchClassifier(in_channels=int(spec["in_channels"]), widths=tuple(spec["widths"]),
                           position_features=int(spec["position_features"]),
                           position_width=int(spec["position_width"]), hidden=int(spec["hidden"]),
                           patch_size=int(spec["patch_size"]))


def load_patch_classifier(device: str = "auto", models_dir: Path = MODELS_DIR):
    """The shipped classifier and its card ``(model, card)``, sha256-checked, cached per (folder, device)."""
    return load_shipped_model(MODEL_NAME, build_patch_classifier, device, models_dir)


def predict_logits(model, features: np.ndarray, positions: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(P,) float64 logits of ``model`` for features (P, C, S, S) and positions (P, 3), in eval mode, no grad."""
    from scanai.nn.backend import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(features[start:start + batch_size])).to(device)
            p = torch.from_numpy(np.ascontiguousarray(positions[start:start + batch_size])).to(device)
            out.append(model(x, p).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def classify_patches(plane: np.ndarray, grid: PatchGrid, model=None, device: str = "auto",
                     batch_size: int = 512) -> np.ndarray:
    """Probability in [0, 1] that each patch of ``grid`` holds a spike.

    plane: (coils, ky, kx) complex centred k-space of one slice. model: None loads the shipped
    ``kspace_patch_classifier`` (sha256-checked, cached) and checks its input contract (patch size, channels);
    or a trained :class:`~scanai.kspace.layers.PatchClassifier`. Returns (P,) float64 in ``grid.anchors()``
    order. Raises :class:`ModelError` when the model does not fit the grid, :class:`InputError` for unusable
    k-space.
    """
    if model is None:
        model, card = load_patch_classifier(device)
        check_contract(card, patch_size=grid.size, channels=N_CHANNELS, position_features=N_POSITION_FEATURES)
    elif getattr(model, "patch_size", grid.size) != grid.size:
        raise ModelError(f"The patch classifier was trained on {model.patch_size} x {model.patch_size} patches, "
                         f"but the grid has {grid.size} x {grid.size} patches.",
                         f"Use a patch size of {model.patch_size}, or the classical detector.")
    features, positions = patch_features(plane, grid)
    logits = predict_logits(model, features, positions, batch_size)
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))
