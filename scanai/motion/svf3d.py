"""3-D+t motion by joint multi-pair optimisation of stationary velocity fields (classical; no training).

The shipped motion network is 2-D (it runs a stack slice by slice). For a cine of volumes (a short-axis stack as
one 3-D volume per frame, a 3-D echo or CT cine) this module estimates every frame's motion relative to the
reference in 3-D at once, with the same ingredients as the network's instance refinement
(:func:`scanai.motion.network.refine_fields`), generalised to volumes:

- one stationary velocity field per frame, integrated by scaling and squaring (7 steps), so the fields are
  diffeomorphic up to discretisation (folding stays rare);
- the similarity is the local normalised cross-correlation (box window, separable) between the reference and
  each warped frame; the pairs (reference, t) are optimised together, joined by a small temporal-smoothness term
  on their velocities (consecutive frames move alike). A similarity between consecutive *warped* frames is
  available (``pair_weight``) but off: both sides are interpolated, which smooths their noise and texture alike
  and raised their NCC for a thinning warp, about -3 points of radial strain at every frame of the phantom;
- bending regularisation of the velocities (squared second differences: a uniform strain costs nothing, so the
  wall's thickening is not pulled flat as a first-difference (diffusion) penalty pulled it, GRS 15 % against
  25 % true), and a coarse-to-fine pyramid (shrink factors 2, 1, never fewer than 8 voxels along an axis; a
  first level at 1/4 as well cost twice the time and, on the real Sunnybrook stack, lost at the base: ED -> ES
  Dice 0.908 against 0.917, the base 0.761 against 0.814, for the same phantom error, 0.131 against 0.134 voxel);
  the velocity grid is half the image resolution (smooth fields, an eighth of the cost of integrating at full
  size; a full-resolution grid was slower and less accurate at the same step count), the integrated field is
  upsampled trilinearly.

Frames are scaled to [0, 1] over the whole sequence (1st / 99th percentiles). Fields follow the package's
convention (pull-back on the reference grid, RAS mm; see :mod:`scanai.motion.registration`). The optimisation is
deterministic on a CPU (Adam, fixed iteration counts). The defaults were chosen on the 3-D phantom of
:mod:`scanai.motion.phantom3d` (64 x 64 x 48 voxels, 10 frames), the same phantom the benchmark
(``Testing/motion/test_bench_motion3d.py``) measures: its figures are not from data unseen by the tuning. The
bench also measures the shared Sunnybrook short-axis stack (10 mm slices): ED -> ES Dice 0.917 in 3-D against
0.926 for the network slice by slice; the NCC box spans about the same millimetres along every axis
(:func:`ncc_window`), so that it does not reach across thick slices.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from scanai.core.errors import InputError, with_defaults
from scanai.core.image import VolumeSequence
from scanai.core.progress import Progress
from scanai.motion.registration import _shrink_for

METHOD = "svf3d"
#: Added to the product of the local variances in the NCC (intensity⁴ units; tiny, as in the 2-D refinement).
NCC_EPS = 1e-7
#: Settings of :func:`estimate_svf_3d` (override with keyword options).
SVF_DEFAULTS: dict[str, Any] = {
    "shrink_factors": (2, 1),
    "iterations": (60, 20),  # Adam steps per pyramid level
    "step_voxels": 0.1,  # Adam learning rate, velocity in voxels of the level's grid
    "window": 5,  # NCC box window (voxels of the level's grid)
    "smoothness": 0.2,  # weight of the velocity regulariser
    "regulariser": "bending",  # "bending": mean squared second differences; "diffusion": first differences
    "pair_weight": 0.0,  # weight of the similarity between consecutive warped frames (off: see above)
    "temporal": 0.05,  # weight of the mean squared velocity change between consecutive frames
    "integration_steps": 7,
    "velocity_factor": 2,  # the velocity grid is the level's grid shrunk by this (1 = same grid)
}


#: Working memory of the optimisation on the CPU per voxel and frame (measured 230-300 bytes: the frames, their
#: pyramid, the velocities and the autograd graph of the warps, NCC and integration).
BYTES_PER_VOXEL_FRAME = 300
#: Share of the computer's physical memory the optimisation may ask for before it is refused.
MEMORY_SHARE = 0.7


def check_memory(shape: tuple[int, int, int, int], available: int | None) -> None:
    """InputError, saying what to do, when the CPU optimisation of a (T, K, J, I) cine would need more than
    :data:`MEMORY_SHARE` of ``available`` bytes (None: unknown, not checked) -- before any work, not after the
    computer starts swapping."""
    needed = BYTES_PER_VOXEL_FRAME * float(np.prod(shape))
    if available is None or needed <= MEMORY_SHARE * available:
        return
    frames, slices, rows, columns = shape
    raise InputError(f"3-D motion of {frames} frames of {columns} x {rows} x {slices} voxels needs about "
                     f"{needed / 2**30:.0f} GB of memory; this computer has {available / 2**30:.0f} GB.",
                     "Crop the volumes around the heart (Crop Volume module) or resample them coarser, use a GPU, "
                     "or estimate 2-D motion slice by slice.")


def check_memory_on(shape: tuple[int, int, int, int], device: str | None) -> None:
    """:func:`check_memory` against this computer's memory when the optimisation runs on the CPU (``device`` "cpu",
    or "auto"/None without a GPU)."""
    from scanai.core.device import choose_device
    from scanai.core.memory import physical_memory_bytes

    if choose_device(device or "auto").type == "cpu":
        check_memory(shape, physical_memory_bytes())


def _merged(options: dict[str, Any]) -> dict[str, Any]:
    merged = with_defaults(options, SVF_DEFAULTS, "Unknown option(s) for the 3-D SVF method")
    if merged["regulariser"] not in ("diffusion", "bending"):
        raise InputError(f"Unknown regulariser {merged['regulariser']!r}.", "Use 'diffusion' or 'bending'.")
    if len(merged["shrink_factors"]) != len(merged["iterations"]) or min(merged["shrink_factors"]) < 1:
        raise InputError("The 3-D SVF method needs one iteration count per shrink factor (each >= 1).")
    return merged


def resized_field(field, size: tuple[int, ...]):
    """A voxel displacement / velocity field [N, 3, K, J, I] resampled (trilinear, corners aligned) to ``size``,
    its (k, j, i) components rescaled to the new voxels."""
    from scanai.nn.backend import functional

    old = field.shape[-3:]
    if tuple(old) == tuple(size):
        return field
    out = functional.interpolate(field, size=size, mode="trilinear", align_corners=True)
    scale = [(new - 1) / (was - 1) if was > 1 else 1.0 for new, was in zip(size, old, strict=True)]
    return out * out.new_tensor(scale).view(1, 3, 1, 1, 1)


def ncc_window(window: int, spacing_mm: tuple[float, float, float]) -> tuple[int, int, int]:
    """(k, j, i) NCC box widths: ``window`` voxels along the finest axis of a grid of ``spacing_mm`` (k, j, i), and
    about the same length in mm along the others (odd, at least 1): on a short-axis stack of 10 mm slices with
    1.4 mm pixels a 5-voxel box would otherwise reach two slices above and below, into the atrium at the base."""
    finest = min(spacing_mm)
    return tuple(max(1, 2 * int(round((window * finest / size - 1) / 2)) + 1) for size in spacing_mm)


def _shrunk(volumes, factor: int):
    """Average-pooled copy [N, 1, K, J, I] by ``factor`` per axis (never fewer than 8 voxels along an axis)."""
    from scanai.nn.backend import functional

    factors = _shrink_for(volumes.shape[-3:], factor)
    if max(factors) == 1:
        return volumes
    return functional.avg_pool3d(volumes, factors, stride=factors, ceil_mode=True)


def _smoothness(velocity, order: int = 1):
    """Mean squared finite difference of order ``order`` (1 = diffusion, 2 = bending: uniform strain costs
    nothing) of [N, 3, K, J, I] along each spatial axis (axes too short for it skipped)."""
    total = velocity.new_zeros(())
    for axis in (2, 3, 4):
        if velocity.shape[axis] > order:
            total = total + velocity.diff(n=order, dim=axis).square().mean()
    return total


def _temporal(velocity, reference_index: int):
    """Mean squared change of the velocities [T - 1, 3, K, J, I] (every frame but the reference, in frame order)
    between frames next to each other in time; the frames before and after the reference are not neighbours."""
    sides = [side for side in (velocity[:reference_index], velocity[reference_index:]) if len(side) > 1]
    if not sides:
        return velocity.new_zeros(())
    from scanai.nn.backend import torch

    changes = torch.cat([side.diff(dim=0) for side in sides])
    return changes.square().mean()


def optimise_fields(frames: np.ndarray, reference_index: int, progress: Progress | None = None,
                    device: str | None = None, spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
                    initial: np.ndarray | None = None, **options: Any) -> np.ndarray:
    """The joint multi-pair SVF optimisation on normalised frames (T, K, J, I) in [0, 1] on voxels of
    ``spacing_mm`` (k, j, i) (only their proportions matter: the NCC box of :func:`ncc_window`).

    initial: None (start from zero) or (T, K, J, I, 3) pull-back voxels (k, j, i), e.g. the 3-D network's fields:
    then a correction is optimised and added to them, and the regularisers act on the correction alone (the
    network's field is the prior, as in the 2-D :func:`scanai.motion.network.refine_fields`).

    Returns (T, K, J, I, 3) float64 pull-back displacements in voxels, (k, j, i) order, zero at the reference.
    device: "cpu", "cuda" or "auto"/None (:func:`scanai.core.device.choose_device`). options: see
    :data:`SVF_DEFAULTS`.
    """
    from scanai.core.device import choose_device
    from scanai.motion.layers import integrate, warp
    from scanai.motion.network import local_ncc
    from scanai.nn.backend import torch

    settings = _merged(options)
    progress = Progress.ensure(progress)
    count = len(frames)
    others = [t for t in range(count) if t != reference_index]
    out = np.zeros((*frames.shape, 3), dtype=np.float64)
    if not others:
        return out
    where = choose_device(device or "auto")
    volumes = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))[:, None].to(where)
    full = tuple(volumes.shape[-3:])
    prior = None if initial is None else torch.from_numpy(
        np.ascontiguousarray(np.asarray(initial)[others], dtype=np.float32)).permute(0, 4, 1, 2, 3).to(where)
    velocity = None
    levels = list(zip(settings["shrink_factors"], settings["iterations"], strict=True))
    total = sum(iterations for _, iterations in levels)
    done = 0
    order = 2 if settings["regulariser"] == "bending" else 1
    for factor, iterations in levels:
        images = _shrunk(volumes, factor)
        grid = tuple(images.shape[-3:])
        velocity_grid = tuple(_shrunk(images[:1], int(settings["velocity_factor"])).shape[-3:])
        velocity = torch.zeros(len(others), 3, *velocity_grid, device=where) if velocity is None else \
            resized_field(velocity.detach(), velocity_grid)
        velocity.requires_grad_(True)
        optimiser = torch.optim.Adam([velocity], lr=float(settings["step_voxels"]))
        reference, moving = images[reference_index:reference_index + 1], images[others]
        level_spacing = [size * shrink for size, shrink in zip(spacing_mm, _shrink_for(full, factor), strict=True)]
        window = ncc_window(int(settings["window"]), tuple(level_spacing))
        to_reference = local_ncc(reference, window, NCC_EPS)  # the reference's local statistics once per level
        start = 0.0 if prior is None else resized_field(prior, grid)
        with torch.enable_grad():
            for _ in range(int(iterations)):
                displacement = start + resized_field(integrate(velocity, int(settings["integration_steps"])), grid)
                warped = warp(moving, displacement)
                loss = to_reference(warped)
                if settings["pair_weight"] > 0 and len(others) > 1:
                    loss = loss + settings["pair_weight"] * local_ncc(warped[:-1], window, NCC_EPS)(warped[1:])
                loss = loss + settings["smoothness"] * _smoothness(velocity, order)
                if settings["temporal"] > 0:  # neighbours in time on each side of the reference
                    loss = loss + settings["temporal"] * _temporal(velocity, reference_index)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                done += 1
                progress(done / total, f"3-D motion, level 1/{factor}: step {done} of {total}")
    with torch.no_grad():
        displacement = resized_field(integrate(velocity, int(settings["integration_steps"])), full)
        if prior is not None:
            displacement = displacement + prior
    out[others] = displacement.permute(0, 2, 3, 4, 1).double().cpu().numpy()
    return out


def estimate_svf_3d(sequence: VolumeSequence, reference_index: int = 0, progress: Progress | None = None,
                    device: str | None = None, **options: Any):
    """Motion of every frame of a 3-D+t ``sequence`` (T, K, J, I), K >= 4, relative to ``reference_index``.

    device: "cpu", "cuda" or "auto"/None (a GPU when present). options: see :data:`SVF_DEFAULTS`.
    Returns :class:`~scanai.motion.registration.MotionFields` (pull-back fields (T, K, J, I, 3) RAS mm, zero at
    the reference, and the frames warped onto the reference), method "svf3d". Raises :class:`InputError` for a
    single slice (use the 2-D methods), unknown options, or a cine too large for the computer's memory on the CPU
    (:func:`check_memory`).
    """
    from scanai.motion.network import normalise_video
    from scanai.motion.registration import MotionFields, _validate_sequence

    progress = Progress.ensure(progress)
    _validate_sequence(sequence, reference_index)
    if sequence.frames.shape[1] < 4:
        raise InputError(f"3-D motion needs a volume per frame (at least 4 slices); this cine has "
                         f"{sequence.frames.shape[1]} slice(s).", "Estimate 2-D motion per slice instead.")
    settings = _merged(options)
    check_memory_on(sequence.frames.shape, device)
    started = time.perf_counter()
    voxels = optimise_fields(normalise_video(sequence.frames), int(reference_index), progress.sub(0.0, 0.9),
                             device, sequence.geometry.spacing_mm[::-1], **settings)
    return MotionFields.from_voxels(sequence, voxels, int(reference_index), METHOD, time.perf_counter() - started,
                                    settings, progress)
