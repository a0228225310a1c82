"""The multi-pair motion network on volumes: 3-D+t motion (a short-axis stack as one volume per frame, a 3-D echo or
CT cine).

The architecture is that of the 2-D network (:mod:`scanai.motion.network`: Siamese encoder, bidirectional ConvGRUs
over the pairs at 1/8 and 1/16 resolution, U-Net decoder, one stationary velocity field per pair integrated by
scaling and squaring) with 3-D convolutions and narrower layers (:data:`ARCHITECTURE_3D`), trained by
:mod:`scanai.motion.train3d` with exact truth. Its fields then start the 3-D instance optimisation
(:func:`scanai.motion.svf3d.optimise_fields` with its defaults, a correction of the network's fields on this cine).

Tensor contract: video ``[B, T, 1, K, J, I]`` in [0, 1] (cine percentiles 1-99), every axis a multiple of 16;
output ``[B, P, 3, K, J, I]`` pull-back displacements in voxels, channels (dk, dj, di).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.catalog import MODELS_DIR, load_shipped_model
from scanai.core.image import VolumeSequence
from scanai.core.progress import Progress
from scanai.motion.network import DEFAULT_ARCHITECTURE, SIZE_MULTIPLE, build_motion_network, normalise_video
from scanai.motion.pairs import make_pairs

MODEL_NAME_3D = "motion_network_3d"
METHOD_3D = "network-3d"
ARCHITECTURE_3D: dict[str, Any] = {
    **DEFAULT_ARCHITECTURE,
    "encoder_widths": [8, 16, 24, 32],
    "gru_hidden": [16, 24],
    "decoder_widths": [32, 24, 16, 8],
    "dims": 3,
}
#: The network sees volumes of at most this many voxels along each axis; larger ones are shrunk for it (area
#: average per axis) and its fields interpolated back.
WORKING_SIZE_3D = 64


def load_motion_network_3d(device: str = "auto", models_dir: Path = MODELS_DIR):
    """The shipped 3-D network and its card ``(model, card)``, sha256-checked, cached per (folder, device)."""
    return load_shipped_model(MODEL_NAME_3D, build_motion_network, device, models_dir)


def predict_volume_fields(model, video: np.ndarray, pairs: list[tuple[int, int]], joint: bool = True,
                          working_size: int = WORKING_SIZE_3D) -> np.ndarray:
    """Run the 3-D network on a cine of volumes.

    video: (T, K, J, I) normalised to [0, 1]; pairs: feeding-order (first, second) frame indices. Axes longer than
    ``working_size`` voxels are shrunk for the network (area average), every axis edge-padded to a multiple of 16,
    and the fields interpolated back (trilinear) and rescaled to this grid's voxels.
    Returns (P, K, J, I, 3) float32 pull-back displacements in voxels, (dk, dj, di).
    """
    from scanai.motion.svf3d import resized_field
    from scanai.nn.backend import functional, torch

    size = video.shape[1:]
    small = tuple(min(n, working_size) for n in size)
    parameter = next(model.parameters())
    tensor = torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32))[:, None]
    if small != size:
        tensor = functional.interpolate(tensor, size=small, mode="area")
    tensor = padded_volumes(tensor).to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        fields = model(tensor[None], pairs, joint=joint)[0].float()[..., :small[0], :small[1], :small[2]]
        fields = resized_field(fields, size)
    return fields.permute(0, 2, 3, 4, 1).cpu().numpy()


def padded_volumes(volumes):
    """Volumes [N, C, K, J, I] edge-padded at the far end of every spatial axis to a multiple of 16 (the network's
    four stride-2 levels); the caller crops the fields back to [..., :K, :J, :I]."""
    from scanai.nn.backend import functional

    padding = [pad for n in reversed(volumes.shape[2:]) for pad in (0, (-n) % SIZE_MULTIPLE)]
    return functional.pad(volumes, padding, mode="replicate")


def estimate_with_network_3d(sequence: VolumeSequence, reference_index: int = 0, joint: bool = True,
                             device: str | None = None, refine: bool = True, progress: Progress | None = None):
    """Motion of every frame of a 3-D+t ``sequence`` (T, K, J, I), K >= 4, relative to ``reference_index``, with
    the shipped 3-D network (pairs (reference, t)), then corrected on this cine by svf3d's optimisation (its
    defaults, :data:`scanai.motion.svf3d.SVF_DEFAULTS`) unless ``refine`` is False (the network alone).

    Returns :class:`~scanai.motion.registration.MotionFields` (pull-back fields (T, K, J, I, 3) RAS mm, zero at
    the reference, frames warped onto the reference), method "network-3d" (its options say ``joint``).
    """
    from scanai.motion.registration import MotionFields, _validate_sequence
    from scanai.motion.svf3d import SVF_DEFAULTS, check_memory_on, optimise_fields

    progress = Progress.ensure(progress)
    _validate_sequence(sequence, reference_index)
    reference_index = int(reference_index)
    if refine:
        check_memory_on(sequence.frames.shape, device)
    model, _card = load_motion_network_3d(device or "auto")
    frames = normalise_video(sequence.frames)
    pairs = make_pairs(len(frames), reference_index, "reference")
    started = time.perf_counter()
    progress(0.0, "Estimating 3-D motion with the network")
    voxels = np.zeros((*frames.shape, 3), dtype=np.float64)
    voxels[[b for _, b in pairs]] = predict_volume_fields(model, frames, pairs, joint)
    if refine:
        voxels = optimise_fields(frames, reference_index, progress.sub(0.1, 0.9), device,
                                 sequence.geometry.spacing_mm[::-1], initial=voxels)
    options = {"scheme": "reference", "joint": joint, "refine_steps": sum(SVF_DEFAULTS["iterations"]) if refine else 0,
               "passes": 1, "model": MODEL_NAME_3D}
    return MotionFields.from_voxels(sequence, voxels, reference_index, METHOD_3D,
                                    time.perf_counter() - started, options, progress)
