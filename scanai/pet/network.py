"""The patent's short-scan network: late frames + plasma input function -> Ki (and Patlak V) image.

US 2021/0272340 maps a short sequence of late frames (e.g. 30-40 and 40-50 min p.i.) and the plasma TAC to a
parametric image with a CNN (embodiment B, FIG. 9; digest §4.8). Our realisation:

**Schedule-independent, scale-invariant inputs ("resample or embed time").** The frames inside the window
(any number >= 1, any durations, gaps allowed) are turned into Patlak coordinates per frame,
``y_k = X_k / C̄p_k`` and ``x_k = mean_frame(∫_0^t Cp) / C̄p_k`` (min), and reduced to :data:`N_CHANNELS` fixed
per-voxel channels (:func:`patlak_features`, frame-duration weights):

- ch0  voxelwise Patlak slope over the given frames / KI_SCALE (0 with a single frame);
- ch1  ``ȳ / x̄`` / KI_SCALE: the mean Patlak ratio over the window divided by the mean abscissa, i.e.
       ``Ki + V / x̄`` (an SUV-like, low-noise estimate biased by the intercept);
- ch2  voxelwise Patlak intercept V (0 with a single frame);
- ch3  x̄ / 60 min (constant channel: where in time the window lies, for this input function);
- ch4  weighted spread of x divided by x̄ (constant channel: how well the slope is determined; 0 for 1 frame);
- ch5  1 when a slope exists (>= 2 frames), else 0 (constant channel).

A common scale of frames and input function cancels exactly in every channel (SUV or Bq/mL, any dose), and
the number and timing of the frames only enter through these channels, so one network serves every schedule
inside the trained window range.

**Network** (:class:`~scanai.pet.layers.KiNet`, the shared :class:`~scanai.nn.unet.UNet`): a small 2-D U-Net (an
FCN, ¶77): 32 kernels in the first convolution (¶131), BatchNorm + ReLU (¶101, ¶129), max-pooling (¶132), two
levels down, bilinear up-sampling with skip connections, and a 1×1 convolution as the per-voxel "fully connected"
stage (¶133). Two outputs through softplus: ``Ki = KI_SCALE · softplus(o0) >= 0`` (1/min) and ``V = softplus(o1)``.
Slices are processed one batch of 2-D slices at a time, so volumes of any depth work; the input is zero-padded to
a multiple of 4.

torch is imported only inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.catalog import MODELS_DIR, ModelCard, check_contract, load_shipped_model
from scanai.core.errors import InputError, ModelError
from scanai.core.image import Volume, VolumeSequence, mask_on_grid
from scanai.core.progress import Progress
from scanai.pet.input_function import InputFunction
from scanai.pet.patlak import PatlakMaps, patlak_maps
from scanai.pet.timing import FrameTiming

MODEL_NAME = "pet_ki_network"
FEATURE_SET = "patlak-window-v1"
N_CHANNELS = 6
N_OUTPUTS = 2
#: Ki scale (1/min) of the input channels 0-1 and of the Ki output.
KI_SCALE = 0.05
X_SCALE_MIN = 60.0
CHANNEL_CLIP = 50.0
DEFAULT_WINDOW_MIN = (30.0, 50.0)
#: A frame counts as inside the window when it starts and ends within the window ± this tolerance (min).
WINDOW_TOLERANCE_MIN = 0.5
DEFAULT_SLICE_BATCH = 8

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "type": "KiNet",
    "in_channels": N_CHANNELS,
    "out_channels": N_OUTPUTS,
    "widths": [32, 64, 64],
    "head_width": 16,
    "ki_scale": KI_SCALE,
}


# ---------------------------------------------------------------------------------------------- features
def window_axes(timing: FrameTiming, input_function: InputFunction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patlak abscissa ``x`` (F,) in min, frame-mean Cp (F,) and normalised duration weights (F,) of the frames.

    Raises :class:`InputError` when Cp is not positive during a frame or the curve stops too early.
    """
    input_function.check_covers(timing)
    cp_mean = input_function.mean_over_frames(timing)
    if np.any(~np.isfinite(cp_mean)) or np.any(cp_mean <= 0):
        raise InputError("The plasma input function is zero or negative during the late frames, so the Patlak "
                         "coordinates are undefined.", "Check the input function's values, units and time axis.")
    x_min = input_function.mean_integral_over_frames(timing) / cp_mean
    weights = timing.duration_s / timing.duration_s.sum()
    return x_min, cp_mean, weights


def patlak_features(frames: np.ndarray, x_min: np.ndarray, cp_mean: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The network's input channels (C=6, ...) float32 from frames (F, ...) in the input function's unit.

    x_min (F,): Patlak abscissa (min); cp_mean (F,): frame-mean Cp; weights (F,): positive frame weights.
    See the module docstring for the channel meanings. Exactly invariant to a common scale of frames and Cp.
    """
    frames = np.asarray(frames, dtype=np.float64)
    n = frames.shape[0]
    shape = frames.shape[1:]
    w = np.asarray(weights, float) / float(np.sum(weights))
    y = frames / np.asarray(cp_mean, float).reshape((n,) + (1,) * len(shape))
    x = np.asarray(x_min, float)
    x_mean = float(w @ x)
    y_mean = np.tensordot(w, y, axes=1)
    out = np.zeros((N_CHANNELS,) + shape, dtype=np.float32)
    if n >= 2:
        dx = x - x_mean
        sxx = float(w @ (dx * dx))
        if sxx <= 0:
            raise InputError("The frames in the window have the same Patlak abscissa, so no slope can be formed.",
                             "Use frames at different times inside the window.")
        slope = np.tensordot(w * dx, y, axes=1) / sxx
        out[0] = slope / KI_SCALE
        out[2] = y_mean - slope * x_mean
        out[4] = np.sqrt(sxx) / x_mean
        out[5] = 1.0
    out[1] = y_mean / x_mean / KI_SCALE
    out[3] = x_mean / X_SCALE_MIN
    return np.clip(out, -CHANNEL_CLIP, CHANNEL_CLIP)


# ---------------------------------------------------------------------------------------------- model
def build_ki_network(architecture: dict[str, Any] | None = None):
    """An untrained :class:`~scanai.pet.layers.KiNet` from a model card's ``architecture`` dict (see
    DEFAULT_ARCHITECTURE)."""
    spec = {**DEFAULT_ARCHITECTURE, **(architecture or {})}
    if spec.get("type", "KiNet") != "KiNet":
        raise ModelError(f"Unknown PET network architecture '{spec['type']}'.", "Reinstall the ScanAI extension.")
    from scanai.pet.layers import KiNet

    return KiNet(in_channels=int(spec["in_channels"]), out_channels=int(spec["out_channels"]),
                 widths=tuple(int(w) for w in spec["widths"]), head_width=int(spec["head_width"]),
                 ki_scale=float(spec["ki_scale"]))


def load_network(device: str = "auto", models_dir: Path = MODELS_DIR):
    """The shipped network and its card ``(model, card)``, sha256-checked, cached per (folder, device); the model
    is in eval mode with channels-last weights (inputs are converted by :func:`run_network`)."""
    from scanai.nn.backend import torch

    return load_shipped_model(MODEL_NAME, build_ki_network, device, models_dir,  # about 1.5x faster on CPU
                              prepare=lambda model: model.to(memory_format=torch.channels_last))


def run_network(model, features: np.ndarray, batch: int = DEFAULT_SLICE_BATCH,
                progress: Progress | None = None) -> np.ndarray:
    """Apply ``model`` to features (S, C, H, W) slice batch by slice batch: returns (S, 2, H, W) float32.

    H and W are zero-padded to multiples of 4 and cropped back; no gradients. Inputs go channels-last when the
    model's weights are (as :func:`load_network` leaves them).
    """
    from scanai.nn.backend import torch

    progress = Progress.ensure(progress)
    first = next(model.parameters())
    device = first.device
    channels_last = first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)
    n, _, height, width = features.shape
    pad_h, pad_w = (-height) % 4, (-width) % 4
    out = np.zeros((n, N_OUTPUTS, height, width), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch):
            progress(start / max(n, 1), f"Network: slices {start + 1}-{min(start + batch, n)} of {n}")
            x = torch.from_numpy(np.ascontiguousarray(features[start:start + batch], dtype=np.float32))
            if pad_h or pad_w:
                x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h))
            x = x.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = model(x)[:, :, :height, :width]
            out[start:start + batch] = y.float().cpu().numpy()
    progress(1.0, "Network: done")
    return out


# ---------------------------------------------------------------------------------------------- inference
@dataclass(frozen=True, eq=False)
class NetworkMaps:
    """Result of :func:`predict_parametric` on the input sequence's grid (0 outside the mask).

    ki:       network Ki, 1/min.
    v:        network Patlak intercept V (unitless).
    patlak:   voxelwise Patlak maps over the same frames (the baseline), None with a single frame.
    frames:   (F,) 0-based indices of the frames used; timing: their timing.
    window_min: the window asked for (min); card: the model card used.
    """

    ki: Volume
    v: Volume
    patlak: PatlakMaps | None
    frames: np.ndarray
    timing: FrameTiming
    window_min: tuple[float, float]
    card: ModelCard

    @property
    def ki_per_min(self) -> np.ndarray:
        return self.ki.array


def frames_in_window(timing: FrameTiming, window_min: tuple[float, float],
                     tolerance_min: float = WINDOW_TOLERANCE_MIN) -> np.ndarray:
    """(F,) indices of the frames that start and end inside ``window_min`` (± ``tolerance_min``)."""
    low = (window_min[0] - tolerance_min) * 60.0
    high = (window_min[1] + tolerance_min) * 60.0
    return np.flatnonzero((timing.start_s >= low) & (timing.end_s <= high))


def check_window(window_min: tuple[float, float], card: ModelCard | None = None) -> tuple[float, float]:
    """Validate a window (min) against the card's trained range; :class:`InputError` when outside."""
    try:
        start, end = (float(v) for v in window_min)
    except (TypeError, ValueError) as error:
        raise InputError(f"The frame window must be two numbers of minutes (start, end), got {window_min!r}.",
                         "Give e.g. (30, 50).") from error
    if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
        raise InputError(f"The frame window {start:g}-{end:g} min is not a valid time range.",
                         "Give a start before the end, in minutes after injection, e.g. (30, 50).")
    if card is not None:
        contract = card.input_contract
        low = float(contract.get("min_window_start_min", 0.0))
        high = float(contract.get("max_window_end_min", np.inf))
        if start < low - 1e-9 or end > high + 1e-9:
            raise InputError(f"The frame window {start:g}-{end:g} min lies outside the range the network was trained "
                             f"on ({low:g}-{high:g} min after injection).",
                             f"Choose a window inside {low:g}-{high:g} min (default {DEFAULT_WINDOW_MIN[0]:g}-"
                             f"{DEFAULT_WINDOW_MIN[1]:g}), or use voxelwise Patlak.")
    return start, end


def predict_parametric(sequence: VolumeSequence, timing: FrameTiming, input_function: InputFunction,
                       mask: Volume | np.ndarray | None = None,
                       window_min: tuple[float, float] = DEFAULT_WINDOW_MIN, device: str = "auto",
                       progress: Progress | None = None, model=None, card: ModelCard | None = None,
                       slice_batch: int = DEFAULT_SLICE_BATCH) -> NetworkMaps:
    """Network Ki and V maps from the late frames of ``sequence`` (T, k, j, i) and the plasma input function.

    Frames lying inside ``window_min`` (min after injection, ± 0.5 min) are used, whatever their number (>= 1)
    and durations; frames and input function must share one activity unit (or one SUV factor) and one time zero
    (decay-corrected to injection). Slices (k) are processed as 2-D images in batches, with progress and Cancel.
    Outputs keep the sequence's geometry; voxels outside ``mask`` are 0. The voxelwise Patlak baseline over
    the same frames (duration weights) is returned too (None with one frame).

    model / card: a trained :class:`~scanai.pet.layers.KiNet` and its card instead of the shipped
    ``pet_ki_network``.
    Raises :class:`InputError` for unusable inputs (no frame in the window, window outside the trained range,
    NaN frames, mismatched timing) and :class:`ModelError` when the model does not fit the input.
    """
    progress = Progress.ensure(progress)
    frames = sequence.frames
    if frames.shape[0] != len(timing):
        raise InputError(f"The image has {frames.shape[0]} frames but the frame timing lists {len(timing)} frames.",
                         "Give exactly one start time and duration per image frame, in the same order.")
    if model is None:
        model, card = load_network(device)
    elif card is None:
        raise ModelError("A network was given without its model card.", "Pass the card the network was saved with.")
    window = check_window(window_min, card)
    check_contract(card, channels=N_CHANNELS, features=FEATURE_SET, spatial_dims=2)
    if getattr(model, "in_channels", N_CHANNELS) != N_CHANNELS:
        raise ModelError(f"The network takes {model.in_channels} input channels, not {N_CHANNELS}.",
                         "Use a network trained with scanai.pet.train.")
    chosen = frames_in_window(timing, window)
    if chosen.size < int(card.input_contract.get("min_frames", 1)):
        mids = ", ".join(f"{m:.1f}" for m in timing.mid_min[-6:])
        raise InputError(f"No frame lies inside the window {window[0]:g}-{window[1]:g} min after injection (frames "
                         f"must start and end inside it, ±{WINDOW_TOLERANCE_MIN:g} min); the last frame mid-times are "
                         f"{mids} min.", "Choose a window that contains the late frames, e.g. 30-50 min.")
    used = timing.subset(chosen)
    spatial = frames.shape[1:]
    inside = mask_on_grid(mask, spatial, sequence.geometry)
    progress(0.0, "Checking the frames")
    for index in chosen:
        values = frames[index][inside]
        if not np.all(np.isfinite(values)):
            raise InputError(f"Frame {int(index) + 1} holds {int(np.count_nonzero(~np.isfinite(values)))} voxel "
                             "value(s) that are not numbers (NaN or infinite).",
                             "Fix or exclude that frame (or mask those voxels) before running the network.")
    x_min, cp_mean, weights = window_axes(used, input_function)
    late = np.where(inside[None], frames[chosen], 0.0)
    out = np.zeros((N_OUTPUTS,) + spatial, dtype=np.float32)
    batch = max(int(slice_batch), 1)
    net_progress = progress.sub(0.0, 0.9)
    for start in range(0, spatial[0], batch):
        net_progress(start / spatial[0], f"Network Ki: slices {start + 1}-{min(start + batch, spatial[0])} "
                                         f"of {spatial[0]}")
        block = late[:, start:start + batch]  # (F, s, j, i)
        features = np.moveaxis(patlak_features(block, x_min, cp_mean, weights), 0, 1)  # (s, C, j, i)
        out[:, start:start + batch] = np.moveaxis(run_network(model, features, batch), 1, 0)
    out *= inside[None]
    patlak = None
    if chosen.size >= 2:
        sub = VolumeSequence(frames[chosen], sequence.geometry, tuple(np.asarray(sequence.index_values)[chosen]),
                             sequence.index_name, sequence.index_unit)
        patlak = patlak_maps(sub, used, input_function, t_star_min=0.0, mask=inside, weights="duration",
                             progress=progress.sub(0.9, 1.0))
    progress(1.0, "Network Ki: done")
    return NetworkMaps(Volume(out[0], sequence.geometry), Volume(out[1], sequence.geometry), patlak, chosen, used,
                       window, card)
