"""The patent's motion correction model (US 12387302, digest §4.3): N ranked phase volumes -> M corrected volumes.

A 2-D **residual U-Net** run slice by slice. Input tensor ``[B, N + T, H, W]`` float32: channel k is the k-th
ranked phase volume (ascending phase, ¶62) in HU clipped to [-1024, 3071] and mapped to [0, 1]
(:func:`normalise_hu`); the T time channels (¶71) are constant maps of sin and cos of 2π·phase of each input
(``time_channels="sincos"``, T = 2N), of phase/100 (``"phase"``, T = N) or absent (``"none"``). Output
``[B, M, H, W]`` in the same [0, 1] scale = the **temporal-interpolation baseline** (:func:`baseline_indices`: for
N = 4, M = 1 the mean of the two inner phases, the centred output window of ¶70) **plus a learnt residual**. The
last convolution starts at zero, so an untrained network returns the baseline.

Encoder levels of two 3x3 convolutions (InstanceNorm, LeakyReLU) with a residual shortcut, 2x2 max-pool down,
2x2 transposed convolution up, skip connections (the shared :class:`~scanai.nn.unet.UNet`; the torch modules are in
:mod:`scanai.artifact_correction.layers`). H and W are edge-padded to a multiple of 2^(levels-1) and cropped
back, so the output lies on the input grid exactly.

The shipped weights (``scanai/models/motion_artifact_network.{pt,json}``) are trained by
``python -m scanai.artifact_correction.train`` on :mod:`scanai.artifact_correction.simulator` cases (see the model
card).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.catalog import MODELS_DIR, ModelCard, load_shipped_model
from scanai.core.errors import InputError, ModelError
from scanai.core.progress import Progress

MODEL_NAME = "motion_artifact_network"
HU_MIN, HU_MAX = -1024.0, 3071.0
TIME_CHANNELS = ("none", "phase", "sincos")
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "type": "ResidualUNet2D",
    "n_inputs": 4,
    "n_outputs": 1,
    "time_channels": "sincos",
    "widths": [16, 32, 64, 128],
    "baseline": "inner_mean",
}
#: Smallest in-plane size (pixels) the network accepts: the bottleneck must keep at least 2 x 2 pixels.
MIN_SIZE = 16
#: Pixels (slices x rows x columns) run through the network at once by :meth:`ArtifactCorrector.correct`.
BATCH_PIXELS = 1 << 19


# ---------------------------------------------------------------------------------------------- normalisation
def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """HU (any shape) clipped to [HU_MIN, HU_MAX] and mapped to [0, 1]; float32."""
    array = np.asarray(hu, dtype=np.float64)
    return ((np.clip(array, HU_MIN, HU_MAX) - HU_MIN) / (HU_MAX - HU_MIN)).astype(np.float32)


def denormalise_hu(values: np.ndarray) -> np.ndarray:
    """[0, 1] network values (any shape) back to HU, float32 (values outside [0, 1] are clipped first)."""
    array = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return (array * (HU_MAX - HU_MIN) + HU_MIN).astype(np.float32)


def time_channel_count(n_inputs: int, time_channels: str) -> int:
    """T, the number of time channels for ``n_inputs`` phase volumes."""
    if time_channels not in TIME_CHANNELS:
        raise ModelError(f"Unknown time-channel kind '{time_channels}' (known: {', '.join(TIME_CHANNELS)}).",
                         "Reinstall the ScanAI extension.")
    return {"none": 0, "phase": n_inputs, "sincos": 2 * n_inputs}[time_channels]


def time_features(phase_pct: Sequence[float], time_channels: str = "sincos") -> np.ndarray:
    """(T,) float32 values of the constant time channels for phases ``phase_pct`` (N,) in % of the cycle."""
    phases = np.asarray(phase_pct, dtype=np.float64).reshape(-1)
    count = time_channel_count(len(phases), time_channels)
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    if time_channels == "phase":
        return (np.mod(phases, 100.0) / 100.0).astype(np.float32)
    angle = 2.0 * np.pi * phases / 100.0
    return np.stack([np.sin(angle), np.cos(angle)], axis=1).reshape(-1).astype(np.float32)


def network_input(phases_hu: np.ndarray, phase_pct: Sequence[float], time_channels: str = "sincos") -> np.ndarray:
    """(N + T, H, W) float32 network input for one slice.

    phases_hu: (N, H, W) ranked phase volumes' slice in HU; phase_pct: (N,) their phases in % of the cycle.
    Channels 0..N-1 are :func:`normalise_hu` of the phases, then the T constant time channels.
    """
    phases = np.asarray(phases_hu)
    if phases.ndim != 3:
        raise InputError(f"One slice of the phase volumes must have shape (N, H, W), got {phases.shape}.")
    features = time_features(phase_pct, time_channels)
    if len(np.asarray(phase_pct).reshape(-1)) != phases.shape[0]:
        raise InputError(f"{phases.shape[0]} phase volumes but {len(np.asarray(phase_pct).reshape(-1))} phases.",
                         "Give one phase (in % of the cardiac cycle) for every phase volume.")
    constant = np.broadcast_to(features[:, None, None], (len(features), *phases.shape[1:]))
    return np.concatenate([normalise_hu(phases), constant.astype(np.float32)], axis=0)


def baseline_indices(n_inputs: int, n_outputs: int) -> list[tuple[int, ...]]:
    """For each output m, the input indices averaged into its temporal-interpolation baseline (¶68-¶70 windows).

    N = 4, M = 1 -> [(1, 2)] (the centred window between the two inner phases); N = 3, M = 1 -> [(1,)];
    N = 2, M = 1 -> [(0, 1)]; N = 4, M = 2 -> [(1,), (2,)] (the two inner windows). Needs 1 <= M < N.
    """
    if not 1 <= n_outputs < n_inputs:
        raise ModelError(f"A motion correction model maps N phase volumes to M < N outputs; got N = {n_inputs}, "
                         f"M = {n_outputs}.", "Choose fewer outputs than inputs.")
    gap = n_inputs - n_outputs
    if gap % 2 == 0:
        return [(gap // 2 + m,) for m in range(n_outputs)]
    return [((gap - 1) // 2 + m, (gap + 1) // 2 + m) for m in range(n_outputs)]


def needs_resampling(pixel_mm: Sequence[float], model_pixel_mm: float) -> bool:
    """Whether slices of in-plane pixels ``pixel_mm`` (row, column) mm differ by more than 10 % from the model's."""
    return max(abs(float(p) / model_pixel_mm - 1.0) for p in pixel_mm) > 0.1


def to_pixel_size(images: np.ndarray, pixel_mm: Sequence[float], new_pixel_mm: float) -> np.ndarray:
    """Images (..., J, I) with in-plane pixels ``pixel_mm`` (row, column) mm resampled to square pixels of
    ``new_pixel_mm`` (anti-aliased: Gaussian smoothing where they get coarser, then linear), edge values outside."""
    from scipy import ndimage

    images = np.asarray(images, dtype=np.float32)
    factors = [float(p) / new_pixel_mm for p in pixel_mm]
    smooth = (0.0,) * (images.ndim - 2) + tuple(max(0.0, 0.5 / f - 0.5) for f in factors)
    return ndimage.zoom(ndimage.gaussian_filter(images, smooth), (1,) * (images.ndim - 2) + tuple(factors), order=1,
                        grid_mode=True, mode="nearest")


def build_artifact_network(config: dict[str, Any] | None = None):
    """An untrained :class:`~scanai.artifact_correction.layers.ResidualUNet2D` from a model card's ``architecture``
    (see DEFAULT_ARCHITECTURE)."""
    spec = {**DEFAULT_ARCHITECTURE, **(config or {})}
    if spec["type"] != "ResidualUNet2D" or spec.get("baseline", "inner_mean") != "inner_mean":
        raise ModelError(f"Unknown motion-artifact network architecture '{spec['type']}'.",
                         "Reinstall the ScanAI extension.")
    n_inputs, n_outputs = int(spec["n_inputs"]), int(spec["n_outputs"])
    time_count = time_channel_count(n_inputs, str(spec["time_channels"]))
    from scanai.artifact_correction.layers import ResidualUNet2D

    return ResidualUNet2D(n_inputs + time_count, tuple(int(w) for w in spec["widths"]),
                          baseline_indices(n_inputs, n_outputs))


def size_multiple(config: dict[str, Any] | None = None) -> int:
    """H and W of the network input must be multiples of this (2^(levels - 1))."""
    spec = {**DEFAULT_ARCHITECTURE, **(config or {})}
    return 2 ** (len(spec["widths"]) - 1)


def run_network(model, batch: np.ndarray, multiple: int):
    """Run ``model`` (eval mode, no gradients) on ``batch`` (B, N + T, H, W) float32 normalised input.

    H and W are edge-padded to multiples of ``multiple`` and the output cropped back. Returns (B, M, H, W) float32
    in [0, 1] units (not clipped).
    """
    from scanai.nn.backend import torch

    height, width = batch.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    padded = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge") if pad_h or pad_w else batch
    parameter = next(model.parameters())
    tensor = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32)).to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        out = model(tensor)[..., :height, :width]
    return out.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------- the shipped model
@dataclass
class ArtifactCorrector:
    """The trained motion correction model with its card: N ranked phase volumes -> M corrected volumes."""

    model: Any
    card: ModelCard

    @property
    def architecture(self) -> dict[str, Any]:
        return {**DEFAULT_ARCHITECTURE, **self.card.architecture}

    @property
    def n_inputs(self) -> int:
        return int(self.architecture["n_inputs"])

    @property
    def n_outputs(self) -> int:
        return int(self.architecture["n_outputs"])

    @property
    def time_channels(self) -> str:
        return str(self.architecture["time_channels"])

    @property
    def min_size(self) -> int:
        return int(self.card.input_contract.get("min_size", MIN_SIZE))

    def check_input(self, phases_hu: np.ndarray, phase_pct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Validate (N, K, J, I) phase volumes and (N,) phases; returns them as float32 / float64 arrays.

        ModelError when N differs from the model's ``n_inputs`` (¶79) or the in-plane grid is smaller than the
        model's minimum; InputError for a wrong shape, a phase count that does not match, or non-finite values.
        """
        phases = np.asarray(phases_hu)
        if phases.ndim != 4:
            raise InputError(f"The phase volumes must be stacked as (N, K, J, I); got shape {phases.shape}.",
                             "Stack the selected phase volumes (each a 3-D volume) along a first axis.")
        count = phases.shape[0]
        if count != self.n_inputs:
            fewer = "fewer" if count < self.n_inputs else "more"
            raise ModelError(
                f"The motion correction model was trained for {self.n_inputs} phase volumes, got {count} "
                f"({fewer} than it needs); it cannot use another count (¶79).",
                f"Select exactly {self.n_inputs} phase volumes (ranked by phase), or use a classical method "
                "(best phase, registration fusion).")
        pct = np.asarray(phase_pct, dtype=np.float64).reshape(-1)
        if len(pct) != count:
            raise InputError(f"{count} phase volumes were given with {len(pct)} phases.",
                             "Give one phase (in % of the cardiac cycle) for every phase volume.")
        if not np.all(np.isfinite(pct)):
            raise InputError("A phase of the phase volumes is not a finite number.",
                             "Give every phase volume its phase in % of the cardiac cycle.")
        rows, columns = phases.shape[2:]
        if min(rows, columns) < self.min_size:
            raise ModelError(
                f"The phase volumes are {rows} x {columns} pixels in-plane, smaller than the "
                f"{self.min_size} x {self.min_size} the motion correction model needs.",
                "Use larger phase volumes (the whole field of view), or a classical method.")
        if not np.all(np.isfinite(phases)):
            raise InputError("The phase volumes contain NaN or infinite values.",
                             "Fill or crop the missing voxels before correcting the motion.")
        return phases.astype(np.float32, copy=False), pct

    def correct(self, phases_hu: np.ndarray, phase_pct: Sequence[float], progress: Progress | None = None,
                batch_slices: int | None = None) -> np.ndarray:
        """Motion-corrected volume(s) at the output window(s) of the model's rule (centred, ¶70).

        phases_hu: (N, K, J, I) phase volumes in HU on one grid, ranked by ascending phase (ties broken in time);
        phase_pct: (N,) their phases, % of the cardiac cycle (relative position of each window's mid-point).
        Slices k are run in batches (``batch_slices``, default so that a batch holds about BATCH_PIXELS pixels);
        each batch reports progress and checks Cancel. A slice's result does not depend on the batching.
        Returns (M, K, J, I) float32 HU on the input grid, within [-1024, 3071]. The input is not modified.
        """
        progress = Progress.ensure(progress)
        phases, pct = self.check_input(phases_hu, phase_pct)
        slices, rows, columns = phases.shape[1:]
        per_batch = batch_slices or max(1, BATCH_PIXELS // (rows * columns))
        multiple = size_multiple(self.architecture)
        out = np.empty((self.n_outputs, slices, rows, columns), dtype=np.float32)
        for start in range(0, slices, per_batch):
            stop = min(slices, start + per_batch)
            progress(start / slices, f"Correcting motion artifacts in slices {start + 1}-{stop} of {slices}")
            batch = np.stack([network_input(phases[:, k], pct, self.time_channels) for k in range(start, stop)])
            out[:, start:stop] = denormalise_hu(run_network(self.model, batch, multiple)).transpose(1, 0, 2, 3)
        progress(1.0, "Motion artifacts corrected")
        return out

    @property
    def pixel_mm(self) -> float:
        """In-plane pixel size (mm) of the training slices."""
        return float(self.card.input_contract.get("pixel_mm", 1.0))

    def correct_on_grid(self, phases_hu: np.ndarray, phase_pct: Sequence[float], pixel_mm: tuple[float, float],
                        progress: Progress | None = None) -> np.ndarray:
        """:meth:`correct` for slices with in-plane pixels of ``pixel_mm`` (row, column) mm.

        Within 10 % of the model's pixel size the slices are corrected as they are. Otherwise they are resampled to
        it (anti-aliased), corrected there, and the correction (output - mean of the inner phases) is resampled
        back and added to the inner phases' mean on the original grid, so the result keeps the input's
        resolution (and its finest-scale noise, which the model never sees). Returns (M, K, J, I) float32 HU on the
        input grid.
        """
        from scipy import ndimage

        if not needs_resampling(pixel_mm, self.pixel_mm):
            return self.correct(phases_hu, phase_pct, progress)
        phases = np.asarray(phases_hu, dtype=np.float32)
        small = to_pixel_size(phases, pixel_mm, self.pixel_mm)
        groups = [list(group) for group in baseline_indices(self.n_inputs, self.n_outputs)]
        correction = self.correct(small, phase_pct, progress) - np.stack([small[g].mean(axis=0) for g in groups])
        back = (1, 1, phases.shape[2] / small.shape[2], phases.shape[3] / small.shape[3])
        correction = ndimage.zoom(correction, back, order=1, grid_mode=True, mode="nearest")
        return (np.stack([phases[g].mean(axis=0) for g in groups]) + correction).astype(np.float32)


    @property
    def training_ranges(self) -> dict[str, list[float]]:
        """{feature: [min, max]} of :func:`scanai.artifact_correction.guard.input_features` over the training
        cases (model card ``input_contract.training_ranges``; empty for a card that does not record them)."""
        return dict(self.card.input_contract.get("training_ranges", {}))

    def correct_guarded(self, phases_hu: np.ndarray, phase_pct: Sequence[float], pixel_mm: tuple[float, float],
                        progress: Progress | None = None, noise_hu: np.ndarray | None = None):
        """The guarded correction (:func:`scanai.artifact_correction.guard.guarded_correction`): the network
        (:meth:`correct_on_grid`) on the slices and their flips, let through only where the (N, K, J, I) phase
        volumes disagree and bounded by their values. Returns a :class:`~scanai.artifact_correction.guard.Guarded`
        with (M, K, J, I) float32 HU on the input grid and the correction's uncertainty. ``noise_hu``: the phases'
        :func:`~scanai.artifact_correction.guard.noise_map_hu` when the caller has it already."""
        from scanai.artifact_correction.guard import VARIANTS, guarded_correction

        progress = Progress.ensure(progress)
        phases, _pct = self.check_input(phases_hu, phase_pct)
        calls = [0]

        def correct(phases: np.ndarray) -> np.ndarray:
            part = progress.sub(calls[0] / len(VARIANTS), (calls[0] + 1) / len(VARIANTS))
            calls[0] += 1
            return self.correct_on_grid(phases, phase_pct, pixel_mm, part)

        guarded = guarded_correction(correct, phases, self.n_outputs, noise_hu)
        progress(1.0, "Motion artifacts corrected")
        return guarded


def load_artifact_corrector(device: str = "auto", models_dir: Path = MODELS_DIR) -> ArtifactCorrector:
    """The shipped model (sha256-checked, cached per folder and device); ModelError with advice when missing."""
    model, card = load_shipped_model(MODEL_NAME, build_artifact_network, device, models_dir)
    return ArtifactCorrector(model, card)
