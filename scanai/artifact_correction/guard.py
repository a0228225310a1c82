"""The network's correction, guarded so that it is never worse than its input (issue 27).

**Identity-preserving combination.** Where the N ranked phase volumes agree (they differ by noise only), nothing
moved, so the output is their mean (the best a still scene allows: its noise is 1/sqrt(N) of one phase's). Where
they disagree, the output is the network's, bounded to the values the phases hold nearby:

    out = mean_N + gate * (clip(network, low, high) - mean_N)

``gate`` (0-1) rises from 0 to 1 as the phases' variance across phases (smoothed in-plane) goes from
``GATE_START`` to ``GATE_FULL`` times the local noise variance across phases (:func:`noise_map_hu`, estimated
from the phase volumes themselves). ``low``/``high`` are the smallest /
largest value of any phase within ``BOUND_RADIUS_PX`` pixels, widened by twice the noise: the network may move
and sharpen what the phases show, not invent values. N identical inputs give gate 0 and return the input exactly.

The network is run on the box around the open gate only (:func:`moving_box`); outside it the gate is shut and the
output is the phases' mean anyway.

**Test-time variants.** The network was trained on flips of whole slices, so flipping the input must not change
its correction. It is run on the slice and on the slice turned by 180 degrees (:data:`VARIANTS`); their mean is the
correction and their spread, relative to the correction where the gate is open, is its **uncertainty**.

**Training ranges.** :func:`input_features` describes a phase sequence by pixel size, field of view, noise and the
fraction of voxels in HU bands (air, lung, fat, soft tissue, contrast, bone/calcium) within 50 mm of where the
heart moves; the ranges seen over the training cases are stored in the model card
(``input_contract.training_ranges``, recorded by :func:`feature_ranges`), and :func:`out_of_distribution` says in
words which feature of an input lies outside. The pipeline falls back to registration fusion on either an
uncertain correction or an out-of-range input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Gate = 0 below this ratio of smoothed across-phase variance to noise variance, 1 above GATE_FULL.
GATE_START, GATE_FULL = 2.0, 4.0
#: In-plane Gaussian smoothing (pixels) of the across-phase variance before gating.
GATE_SIGMA_PX = 2.0
#: Noise standard deviation (HU) assumed at least, so that noise-free inputs still gate on real motion only.
NOISE_FLOOR_HU = 2.0
#: The noise map is a median over NOISE_WINDOW_BLOCKS x NOISE_WINDOW_BLOCKS blocks of (at least) NOISE_BLOCK_PX
#: pixels.
NOISE_BLOCK_PX, NOISE_WINDOW_BLOCKS = 4, 7
#: The network's output is kept within the phases' range over this many pixels around each pixel.
BOUND_RADIUS_PX = 3
#: Relative uncertainty above which the network's correction is not trusted (see :func:`correction_uncertainty`).
MAX_UNCERTAINTY = 0.5
#: The flips of a slice (rows, columns) the network is run on: as it is and turned by 180 degrees (two runs over
#: the moving box keep the guarded network about 10 times faster than registration fusion).
VARIANTS: tuple[tuple[bool, bool], ...] = ((False, False), (True, True))
#: Pixels kept around the open gate when the network is run on that box only (:func:`moving_box`). The network
#: was trained on heart-centred windows of 128 mm; on a whole thorax its output inside the gate differs by up to
#: ~100 HU and is worse (4 held-out cases, whole-slice RMSE 4.1 / 9.3 / 19.4 / 4.5 HU with a 32-pixel margin,
#: 4.2 / 9.7 / 19.7 / 5.8 on the whole field of view, 4.1 / 9.4 / 19.5 / 5.1 with 48).
BOX_MARGIN_PX = 32
#: HU bands of :func:`input_features` (name, low, high), each [low, high).
HU_BANDS: tuple[tuple[str, float, float], ...] = (
    ("air", -np.inf, -900.0), ("lung", -900.0, -300.0), ("fat", -200.0, -40.0), ("soft_tissue", -40.0, 150.0),
    ("contrast", 150.0, 600.0), ("bone_calcium", 600.0, np.inf))
#: Radius (mm) of the disc around the moving heart whose HU bands :func:`input_features` measures.
HEART_RADIUS_MM = 50.0
#: Slack around the training ranges: relative for sizes and noise, absolute (fraction of voxels) for HU bands.
RELATIVE_SLACK, BAND_SLACK = 0.1, 0.02


@dataclass(frozen=True)
class Guarded:
    """The guarded correction of :func:`guarded_correction`.

    output:       (M, K, J, I) float32 HU.
    gate:         (K, J, I) float32 in [0, 1], where the network's correction was let through.
    noise_hu:     the median of the noise map (HU, standard deviation across phases) the gate was scaled by.
    uncertainty:  spread of the correction over the test-time variants relative to the correction (or the
                  noise, when larger); 0 = all agree; NaN when nothing needed correcting.
    """

    output: np.ndarray
    gate: np.ndarray
    noise_hu: float
    uncertainty: float


# ---------------------------------------------------------------------------------------- the combination
def _local_median(values: np.ndarray) -> np.ndarray:
    """(K, J, I) in-plane local median of ``values`` ignoring NaN: medians over square blocks (:data:`NOISE_BLOCK_PX`
    pixels, or larger so that a slice holds at most 32 x 32 blocks), then over :data:`NOISE_WINDOW_BLOCKS` blocks
    around each, spread back to the pixels (nearest, then smoothed). NaN where a whole window is NaN."""
    import warnings

    from scipy import ndimage

    slices, rows, columns = values.shape
    block = max(NOISE_BLOCK_PX, min(rows, columns) // 32)
    padded = np.pad(values, ((0, 0), (0, -rows % block), (0, -columns % block)), constant_values=np.nan)
    grid = padded.reshape(slices, padded.shape[1] // block, block, padded.shape[2] // block, block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks and windows stay NaN
        medians = np.nanmedian(grid.transpose(0, 1, 3, 2, 4).reshape(*grid.shape[:2], grid.shape[3], -1), axis=-1)
        half = NOISE_WINDOW_BLOCKS // 2
        edged = np.pad(medians, ((0, 0), (half, half), (half, half)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(edged, (NOISE_WINDOW_BLOCKS, NOISE_WINDOW_BLOCKS),
                                                           axis=(1, 2))
        medians = np.nanmedian(windows.reshape(*medians.shape, -1), axis=-1)
    spread = np.repeat(np.repeat(medians, block, axis=1), block, axis=2)[:, :rows, :columns]
    known = np.isfinite(spread)
    smooth = ndimage.gaussian_filter(np.where(known, spread, 0.0), (0, block / 2, block / 2), mode="nearest")
    weight = ndimage.gaussian_filter(known.astype(np.float64), (0, block / 2, block / 2), mode="nearest")
    return np.where(known, smooth / np.maximum(weight, 1e-12), np.nan)


def noise_map_hu(phases_hu: np.ndarray) -> np.ndarray:
    """(K, J, I) noise standard deviation (HU) across N phase volumes (N, K, J, I), at least
    :data:`NOISE_FLOOR_HU`: the local median (:func:`_local_median`) of the per-voxel sample variance across phases,
    corrected for the chi-square median. Still voxels are the majority of every window, so moving edges do not
    raise it, and it follows non-uniform (photon) and correlated (filtered back-projection) noise as it is. Voxels
    identical in every phase (outside the reconstruction circle) are left out; identical phases give the floor."""
    from scipy.stats import chi2

    phases = np.asarray(phases_hu, dtype=np.float64)
    dof = phases.shape[0] - 1
    variance = phases.var(axis=0, ddof=1)
    if not variance.any():
        return np.full(variance.shape, NOISE_FLOOR_HU)
    local = _local_median(np.where(variance > 0, variance, np.nan)) / (chi2.median(dof) / dof)
    return np.maximum(np.sqrt(np.nan_to_num(local, nan=0.0)), NOISE_FLOOR_HU)


def disagreement_gate(phases_hu: np.ndarray, noise_hu: np.ndarray | float) -> np.ndarray:
    """(K, J, I) float32 gate in [0, 1] from (N, K, J, I) phase volumes: 0 where the phases agree within the noise
    ``noise_hu`` ((K, J, I) map or a number), 1 where their across-phase variance (Gaussian-smoothed in-plane,
    :data:`GATE_SIGMA_PX`) exceeds :data:`GATE_FULL` times the noise variance. Exactly 0 where the phases are
    identical."""
    from scipy import ndimage

    phases = np.asarray(phases_hu, dtype=np.float64)
    variance = phases.var(axis=0, ddof=1)
    smooth = ndimage.gaussian_filter(variance, (0, GATE_SIGMA_PX, GATE_SIGMA_PX), mode="nearest")
    ratio = smooth / np.asarray(noise_hu, dtype=np.float64) ** 2
    return np.clip((ratio - GATE_START) / (GATE_FULL - GATE_START), 0.0, 1.0).astype(np.float32)


def phase_bounds(phases_hu: np.ndarray, noise_hu: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (K, J, I): the smallest / largest value of any phase volume within
    :data:`BOUND_RADIUS_PX` pixels in-plane, minus / plus twice the noise ``noise_hu`` ((K, J, I) or a number)."""
    from scipy import ndimage

    phases = np.asarray(phases_hu, dtype=np.float64)
    size = (1, 2 * BOUND_RADIUS_PX + 1, 2 * BOUND_RADIUS_PX + 1)
    low = ndimage.grey_erosion(phases.min(axis=0), size=size, mode="nearest") - 2.0 * noise_hu
    high = ndimage.grey_dilation(phases.max(axis=0), size=size, mode="nearest") + 2.0 * noise_hu
    return low, high


def combine(phases_hu: np.ndarray, network_hu: np.ndarray, gate: np.ndarray, noise_hu: np.ndarray | float
            ) -> np.ndarray:
    """``mean_N + gate * (clip(network, low, high) - mean_N)`` (see the module docstring).

    phases_hu: (N, K, J, I) HU; network_hu: (M, K, J, I) HU; gate: (K, J, I). Returns (M, K, J, I) float32 HU.
    """
    phases = np.asarray(phases_hu, dtype=np.float64)
    mean = phases.mean(axis=0)
    low, high = phase_bounds(phases, noise_hu)
    bounded = np.clip(np.asarray(network_hu, dtype=np.float64), low, high)
    return (mean + gate * (bounded - mean)).astype(np.float32)


# ---------------------------------------------------------------------------------------- test-time variants
def _flip(array: np.ndarray, rows: bool, columns: bool) -> np.ndarray:
    """``array`` (..., J, I) flipped along rows and/or columns (its own inverse)."""
    if rows:
        array = array[..., ::-1, :]
    if columns:
        array = array[..., ::-1]
    return np.ascontiguousarray(array)


def variant_outputs(correct: Callable[[np.ndarray], np.ndarray], phases_hu: np.ndarray) -> np.ndarray:
    """(V, M, K, J, I) outputs of ``correct`` ((N, K, J, I) -> (M, K, J, I) HU) on each flip of :data:`VARIANTS`,
    flipped back onto the input grid."""
    return np.stack([_flip(correct(_flip(phases_hu, *flips)), *flips) for flips in VARIANTS])


def correction_uncertainty(variants_hu: np.ndarray, phases_hu: np.ndarray, gate: np.ndarray,
                           noise_hu: np.ndarray | float) -> float:
    """RMS spread of the variants' outputs (V, M, K, J, I) divided by the larger of the RMS of their mean
    correction (mean output - mean of the phases) and the median noise (``noise_hu``, (K, J, I) or a number),
    all where the gate is at least 0.5 (variants that differ by less than the noise are consistent, however small
    the correction). NaN when the gate is below 0.5 everywhere (there was little to correct)."""
    region = gate >= 0.5
    if not region.any():
        return float("nan")
    noise_hu = float(np.median(np.broadcast_to(noise_hu, gate.shape)[region]))
    mean = variants_hu.mean(axis=0)
    spread = float(np.sqrt(np.mean(variants_hu.var(axis=0)[:, region])))
    correction = float(np.sqrt(np.mean((mean - np.asarray(phases_hu).mean(axis=0))[:, region] ** 2)))
    return spread / max(correction, noise_hu)


def guarded_correction(correct: Callable[[np.ndarray], np.ndarray], phases_hu: np.ndarray, n_outputs: int = 1,
                       noise_hu: np.ndarray | None = None) -> Guarded:
    """The guarded correction of (N, K, J, I) ranked phase volumes in HU by ``correct`` (the network on the same
    grid, (N, K, J, I) -> (n_outputs, K, J, I) HU): variants, their mean, the gate and the bounds (module
    docstring). Phase volumes that agree everywhere (identical ones included) come back as their mean without
    running the network. ``noise_hu``: the phases' :func:`noise_map_hu` when the caller has it already."""
    phases = np.asarray(phases_hu, dtype=np.float32)
    noise = noise_map_hu(phases) if noise_hu is None else noise_hu
    gate = disagreement_gate(phases, noise)
    typical = float(np.median(noise))
    means = np.repeat(phases.astype(np.float64).mean(axis=0)[None], n_outputs, axis=0)
    if not gate.any():
        return Guarded(means.astype(np.float32), gate, typical, float("nan"))
    box = (Ellipsis, *moving_box(gate))
    noise_in_box = np.broadcast_to(noise, gate.shape)[box]
    variants = variant_outputs(correct, phases[box])
    uncertainty = correction_uncertainty(variants, phases[box], gate[box], noise_in_box)
    network = means  # outside the box the gate is shut: the output is the phases' mean
    network[box] = variants.mean(axis=0)
    return Guarded(combine(phases, network, gate, noise), gate, typical, uncertainty)


def moving_box(gate: np.ndarray, margin_px: int = BOX_MARGIN_PX) -> tuple[slice, slice]:
    """(rows, columns) slices of the in-plane box around every pixel where the (K, J, I) ``gate`` is open, widened
    by ``margin_px`` on each side (within the image): what the network is run on -- where the phases disagree and
    its surroundings, closer to the heart-centred windows it was trained on than a whole thorax, and faster."""
    rows, columns = np.nonzero(gate.any(axis=0))
    return tuple(slice(max(0, int(found.min()) - margin_px), min(size, int(found.max()) + 1 + margin_px))
                 for found, size in zip((rows, columns), gate.shape[1:], strict=True))


# ---------------------------------------------------------------------------------------- training ranges
def heart_neighbourhood(phases_hu: np.ndarray, pixel_mm: Sequence[float], noise_hu: np.ndarray | None = None
                        ) -> np.ndarray:
    """(J, I) bool: the in-plane disc of :data:`HEART_RADIUS_MM` around the centroid of the (N, K, J, I) phases'
    disagreement (:func:`disagreement_gate` summed over slices: where the heart moves), or around the image centre
    when nothing moves. Pixels ``pixel_mm`` (row, column) mm; ``noise_hu``: the phases' :func:`noise_map_hu` when
    the caller has it already."""
    phases = np.asarray(phases_hu, dtype=np.float64)
    noise = noise_map_hu(phases) if noise_hu is None else noise_hu
    weight = disagreement_gate(phases, noise).sum(axis=0)
    rows, columns = np.indices(weight.shape, dtype=np.float64)
    total = float(weight.sum())
    centre = ((float((rows * weight).sum()) / total, float((columns * weight).sum()) / total) if total > 0
              else ((weight.shape[0] - 1) / 2.0, (weight.shape[1] - 1) / 2.0))
    distance = np.hypot((rows - centre[0]) * pixel_mm[0], (columns - centre[1]) * pixel_mm[1])
    return distance <= HEART_RADIUS_MM


def input_features(phases_hu: np.ndarray, pixel_mm: Sequence[float], noise_hu: np.ndarray | None = None
                   ) -> dict[str, float]:
    """Features of (N, K, J, I) phase volumes with in-plane pixels ``pixel_mm`` (row, column) mm: the pixel size
    and field of view (mm, the larger of rows / columns), the noise of one phase volume (HU, the median over
    phases of :func:`~scanai.artifact_correction.baselines.noise_sigma_hu`) and the fraction of voxels of the
    phases' mean in each :data:`HU_BANDS` band within the :func:`heart_neighbourhood` (so that a crop or a zoomed
    reconstruction of the same chest has the same fractions as the whole field of view). ``noise_hu``: the phases'
    :func:`noise_map_hu` when the caller has it already."""
    from scanai.artifact_correction.baselines import noise_sigma_hu

    phases = np.asarray(phases_hu, dtype=np.float64)
    rows, columns = phases.shape[-2:]
    features = {"pixel_mm": float(max(pixel_mm)), "field_of_view_mm": float(max(rows * pixel_mm[0],
                                                                                 columns * pixel_mm[1])),
                "noise_hu": float(np.median([noise_sigma_hu(volume) for volume in phases]))}
    near_heart = phases.mean(axis=0)[:, heart_neighbourhood(phases, pixel_mm, noise_hu)]
    for name, low, high in HU_BANDS:
        features[f"fraction_{name}"] = float(np.mean((near_heart >= low) & (near_heart < high)))
    return features


def feature_ranges(features: Sequence[dict[str, float]]) -> dict[str, list[float]]:
    """{feature: [min, max]} over the training cases' :func:`input_features` (rounded to 4 decimals)."""
    return {key: [round(float(min(f[key] for f in features)), 4), round(float(max(f[key] for f in features)), 4)]
            for key in features[0]}


def out_of_distribution(features: dict[str, float], ranges: dict[str, list[float]]) -> list[str]:
    """Each feature of ``features`` outside its training range (with :data:`RELATIVE_SLACK` / :data:`BAND_SLACK`),
    in words ("fat-range voxels 12.0 % (training 0.0-0.4 %)"); empty when the input looks like the training data."""
    problems = []
    labels = {"pixel_mm": ("pixel size", "mm", 1.0), "field_of_view_mm": ("field of view", "mm", 1.0),
              "noise_hu": ("noise", "HU", 1.0)}
    for key, (low, high) in ranges.items():
        if key not in features:
            continue
        value = features[key]
        if key.startswith("fraction_"):
            inside = low - BAND_SLACK <= value <= high + BAND_SLACK
            name = key.removeprefix("fraction_").replace("_", "/")
            shown = f"{name}-range voxels {100 * value:.1f} % (training {100 * low:.1f}-{100 * high:.1f} %)"
        else:
            inside = low * (1 - RELATIVE_SLACK) <= value <= high * (1 + RELATIVE_SLACK)
            label, unit, _ = labels.get(key, (key, "", 1.0))
            shown = f"{label} {value:.3g} {unit} (training {low:.3g}-{high:.3g} {unit})"
        if not inside:
            problems.append(shown)
    return problems
