"""Patlak graphical analysis: net influx rate Ki and intercept V, per TAC or per voxel.

For an irreversibly trapped tracer, after an equilibration time t* the tissue curve obeys
``C(t) = Ki ∫_0^t Cp + V Cp(t)``. Dividing by Cp gives a straight line ``y = Ki x + V`` with
``x = ∫_0^t Cp / Cp(t)`` (min) and ``y = C(t) / Cp(t)`` (unitless).

Frame averaging. PET measures the frame average of ``C``, not its mid-frame value. Because the Patlak relation
is linear in ``C``, it holds **exactly** for frame averages: ``mean(C) = Ki mean(∫Cp) + V mean(Cp)``. We
therefore use ``x = mean_frame(∫_0^t Cp) / mean_frame(Cp)`` and ``y = mean_frame(C) / mean_frame(Cp)``, both
computed exactly from the sampled input function and always integrated from the injection. Mid-frame Cp and
∫Cp would add a bias of the order of the curvature of Cp over a frame (about 1 % for 5-min frames of FDG),
for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Volume, VolumeSequence, mask_on_grid
from scanai.core.progress import Progress
from scanai.pet.input_function import InputFunction, check_frames_covered
from scanai.pet.timing import FrameTiming

#: Default Patlak equilibration time t* (min) for FDG.
DEFAULT_T_STAR_MIN = 20.0
#: Voxels processed at once by :func:`patlak_maps` (bounds memory to about chunk × frames × 8 bytes × 4).
DEFAULT_CHUNK_VOXELS = 65536


@dataclass(frozen=True, eq=False)
class PatlakAxes:
    """The Patlak plot's abscissa and the normaliser, for the frames used in the fit.

    frames:   (F,) 0-based indices of the frames used (mid-time >= t*).
    x_min:    (F,) ``mean(∫_0^t Cp) / mean(Cp)`` in min.
    cp_mean:  (F,) frame-averaged Cp (activity units), > 0.
    weights:  (F,) fit weights (sum to F).
    """

    frames: np.ndarray
    x_min: np.ndarray
    cp_mean: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True, eq=False)
class PatlakResult:
    """Per-TAC Patlak fit; every array has the TACs' leading shape (``()`` for one TAC, ``(N,)`` for N).

    ki_per_min: net influx rate Ki, 1/min.
    intercept:  Patlak intercept V (unitless; distribution volume of the free tracer plus blood).
    r2:         coefficient of determination of the line on the fitted frames (0 when the TAC is flat).
    rmse:       root-mean-square residual of ``y`` (unitless) on the fitted frames.
    axes:       the plot's abscissa and the frames used.
    y:          (..., F) Patlak ordinates ``mean(C) / mean(Cp)`` of the fitted frames.
    """

    ki_per_min: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    rmse: np.ndarray
    axes: PatlakAxes
    y: np.ndarray


def _frame_numbers(indices: np.ndarray) -> str:
    return ", ".join(str(int(i) + 1) for i in indices)


def patlak_axes(timing: FrameTiming, input_function: InputFunction, t_star_min: float = DEFAULT_T_STAR_MIN,
                weights: Sequence[float] | np.ndarray | str | None = None) -> PatlakAxes:
    """Select the frames with mid-time >= ``t_star_min`` and compute their Patlak abscissa.

    ``weights``: None (unweighted), "duration" (frame duration), or (T,) numbers >= 0 per frame (0: not fitted).
    Raises :class:`InputError` when fewer than 2 frames remain, or when Cp is not positive on them.
    """
    if not np.isfinite(t_star_min) or t_star_min < 0:
        raise InputError(f"The Patlak start time t* must be a number of minutes >= 0, got {t_star_min}.")
    check_frames_covered(input_function, timing, end_tolerance=1.0)
    selected = np.flatnonzero(timing.mid_min >= t_star_min)
    if selected.size < 2:
        last = timing.end_s[-1] / 60
        late = ", ".join(f"{m:.1f}" for m in timing.mid_min[-4:])
        raise InputError(
            f"Only {selected.size} frame(s) have their mid-time after t* = {t_star_min:g} min; the Patlak line needs "
            f"at least 2 (better 3 or more). The scan ends at {last:.1f} min; the last frame mid-times are {late} min.",
            f"Choose t* earlier than {timing.mid_min[-3] if len(timing) >= 3 else timing.mid_min[0]:.1f} min "
            f"(FDG: usually 20-30 min), or add later frames.")
    cp_mean = input_function.mean_over_frames(timing)[selected]
    if np.any(cp_mean <= 0):
        bad = selected[cp_mean <= 0]
        raise InputError(f"The plasma input function is zero or negative during frame(s) {_frame_numbers(bad)}, "
                         "so the Patlak plot is undefined there.", "Check the input function's values and units.")
    x_min = input_function.mean_integral_over_frames(timing)[selected] / cp_mean
    if weights is None:
        w = np.ones(selected.size)
    elif isinstance(weights, str):
        if weights != "duration":
            raise InputError(f"Unknown Patlak weighting '{weights}'.", "Use 'duration' or give one weight per frame.")
        w = timing.duration_s[selected].astype(float)
    else:
        all_w = np.asarray(weights, dtype=float).reshape(-1)
        if all_w.size != len(timing):
            raise InputError(f"{all_w.size} Patlak weights were given for {len(timing)} frames.",
                             "Give one weight per frame.")
        w = all_w[selected]
        if not np.all(np.isfinite(w)) or np.any(w < 0) or np.count_nonzero(w) < 2:
            raise InputError("The Patlak weights of the fitted frames must be numbers >= 0, at least two of them "
                             "positive (0: the frame is not fitted).")
    return PatlakAxes(selected, x_min, cp_mean, w * (w.size / w.sum()))


def abscissa_moments(x: np.ndarray, w: np.ndarray) -> tuple[float, float, np.ndarray, float]:
    """``(Σw, weighted mean of x, x - mean, Σ w (x - mean)²)`` of the Patlak abscissa x (F,) with weights w (F,).

    Raises :class:`InputError` when x does not change over the frames (no slope can be fitted).
    """
    w_sum = float(w.sum())
    x_mean = float((w * x).sum()) / w_sum
    dx = x - x_mean
    sxx = float((w * dx * dx).sum())
    if sxx <= 0:
        raise InputError("The Patlak abscissa does not change over the fitted frames, so no slope can be fitted.",
                         "Use frames that span a longer time after t*.")
    return w_sum, x_mean, dx, sxx


def _fit_lines(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted least-squares lines ``y ≈ slope x + intercept`` for y (N, F); returns four (N,) arrays."""
    w_sum, x_mean, dx, sxx = abscissa_moments(x, w)
    y_mean = y @ w / w_sum
    slope = y @ (w * dx) / sxx
    intercept = y_mean - slope * x_mean
    residual = y - (slope[:, None] * x + intercept[:, None])
    ss_res = (residual**2) @ w
    ss_tot = ((y - y_mean[:, None]) ** 2) @ w
    scale = np.maximum(np.abs(y_mean), 1e-30)
    flat = ss_tot <= (1e-24 * scale**2 * w_sum)
    r2 = np.where(flat, 0.0, 1.0 - ss_res / np.where(flat, 1.0, ss_tot))
    rmse = np.sqrt(ss_res / w_sum)
    return slope, intercept, r2, rmse


def _nan_message(count: int, frames: np.ndarray, where: str) -> InputError:
    return InputError(f"{count} value(s) of the {where} are not numbers (NaN or infinite), in frame(s) "
                      f"{_frame_numbers(frames[:10])}{' ...' if frames.size > 10 else ''}.",
                      "Fix or exclude those frames (or mask those voxels) before computing Patlak maps.")


def patlak_fit(tacs: np.ndarray | Sequence[float], timing: FrameTiming, input_function: InputFunction,
               t_star_min: float = DEFAULT_T_STAR_MIN,
               weights: Sequence[float] | np.ndarray | str | None = None) -> PatlakResult:
    """Patlak fit of tissue TACs ``tacs`` (T,) or (N, T), frame-averaged, in the input function's unit.

    Fits frames with mid-time >= ``t_star_min`` by (weighted) linear least squares, all TACs at once.
    """
    values = np.asarray(tacs, dtype=float)
    if values.ndim not in (1, 2):
        raise InputError(f"Patlak TACs must be one curve (T,) or N curves (N, T), got shape {values.shape}.")
    if values.shape[-1] != len(timing):
        raise InputError(f"The TAC has {values.shape[-1]} frames but the frame timing lists {len(timing)} frames.",
                         "Give exactly one start time and duration per frame.")
    bad = ~np.isfinite(values)
    if bad.any():
        raise _nan_message(int(bad.sum()), np.flatnonzero(bad.reshape(-1, len(timing)).any(axis=0)), "TAC")
    axes = patlak_axes(timing, input_function, t_star_min, weights)
    rows = values.reshape(-1, len(timing))
    y = rows[:, axes.frames] / axes.cp_mean
    slope, intercept, r2, rmse = _fit_lines(axes.x_min, y, axes.weights)
    shape = values.shape[:-1]
    return PatlakResult(slope.reshape(shape), intercept.reshape(shape), r2.reshape(shape), rmse.reshape(shape),
                        axes, y.reshape(shape + (axes.frames.size,)))


@dataclass(frozen=True, eq=False)
class PatlakMaps:
    """Voxelwise Patlak results on the input sequence's grid (0 outside the mask).

    ki:        Ki in 1/min (``ki_per_min``).
    intercept: intercept V, unitless.
    r2:        R² of each voxel's line (0 where the TAC is flat).
    mask:      the voxels fitted, (k, j, i) bool.
    axes:      the Patlak abscissa and the frames used.
    """

    ki: Volume
    intercept: Volume
    r2: Volume
    mask: np.ndarray
    axes: PatlakAxes

    @property
    def ki_per_min(self) -> np.ndarray:
        """Ki array (k, j, i) in 1/min."""
        return self.ki.array


def frames_inside(sequence: VolumeSequence, timing: FrameTiming, mask: Volume | np.ndarray | None
                  ) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """(frames (T, k, j, i), spatial shape, inside mask (k, j, i) bool) of a dynamic PET whose T frames must match
    ``timing``; InputError otherwise. The frames are the sequence's own array (not copied)."""
    frames = sequence.frames
    if frames.shape[0] != len(timing):
        raise InputError(f"The image has {frames.shape[0]} frames but the frame timing lists {len(timing)} frames.",
                         "Give exactly one start time and duration per image frame, in the same order.")
    spatial = frames.shape[1:]
    return frames, spatial, mask_on_grid(mask, spatial, sequence.geometry)


def patlak_maps(sequence: VolumeSequence, timing: FrameTiming, input_function: InputFunction,
                t_star_min: float = DEFAULT_T_STAR_MIN, mask: Volume | np.ndarray | None = None,
                weights: Sequence[float] | np.ndarray | str | None = None,
                chunk_voxels: int = DEFAULT_CHUNK_VOXELS, progress: Progress | None = None) -> PatlakMaps:
    """Voxelwise Patlak Ki, intercept and R² maps of a dynamic PET ``sequence`` (T, k, j, i).

    ``timing`` gives the T frames; ``mask`` (k, j, i) limits the fit (others are 0). Voxels are processed in
    chunks of ``chunk_voxels`` so memory stays bounded; progress is reported per chunk. The outputs keep the
    sequence's geometry exactly. The input is not modified.
    """
    progress = Progress.ensure(progress)
    frames, spatial, inside = frames_inside(sequence, timing, mask)
    axes = patlak_axes(timing, input_function, t_star_min, weights)
    progress(0.0, "Checking the frames")
    nan_frames = [t for t in range(frames.shape[0]) if not np.all(np.isfinite(frames[t][inside]))]
    if nan_frames:
        count = sum(int(np.count_nonzero(~np.isfinite(frames[t][inside]))) for t in nan_frames)
        raise _nan_message(count, np.asarray(nan_frames), "image voxels")
    flat_frames = frames.reshape(frames.shape[0], -1)
    voxels = np.flatnonzero(inside.reshape(-1))
    outputs = [np.zeros(inside.size, dtype=np.float32) for _ in range(3)]
    chunk = max(int(chunk_voxels), 1)
    chunks = range(0, voxels.size, chunk)
    for number, begin in enumerate(chunks):
        progress(number / len(chunks), f"Patlak fit, voxel block {number + 1}/{len(chunks)}")
        index = voxels[begin:begin + chunk]
        y = flat_frames[np.ix_(axes.frames, index)].T.astype(float) / axes.cp_mean
        slope, intercept, r2, _ = _fit_lines(axes.x_min, y, axes.weights)
        for output, value in zip(outputs, (slope, intercept, r2), strict=True):
            output[index] = value
    progress(1.0, "Patlak fit: done")
    ki, intercept, r2 = (Volume(o.reshape(spatial), sequence.geometry) for o in outputs)
    return PatlakMaps(ki, intercept, r2, inside, axes)
