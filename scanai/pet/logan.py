"""Logan graphical analysis with a plasma input: total distribution volume VT, per TAC or per voxel.

For a reversible tracer, after an equilibration time t*::

    ∫_0^t C / C(t) = VT ∫_0^t Cp / C(t) + b          (b < 0, in min)

Frame rule (documented convention). Both sides are used as **frame averages**: multiplying by C(t) the relation
reads ``∫_0^t C = VT ∫_0^t Cp + b C(t)``, which is linear in the curves, so it holds for frame averages:
``mean_j(∫C) = VT mean_j(∫Cp) + b C̄_j``. ``mean_j(∫Cp)`` is exact (from the sampled input function, integrated
from the injection). For the tissue only the frame means C̄ are known; the tissue curve is taken as the step
function of the frame means (gaps between frames, and the time before the first frame, are bridged by a line
between the neighbouring frame means, starting from 0 at the injection), whose running integral gives
``mean_j(∫C) = A(t_start,j) + C̄_j Δt_j / 2`` exactly. The plot coordinates are then
``x_j = mean_j(∫Cp) / C̄_j`` and ``y_j = mean_j(∫C) / C̄_j`` (min), fitted by weighted least squares on the
frames with mid-time >= t*, with closed-form 2x2 normal equations for all TACs at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming

#: Default Logan equilibration time t* (min).
DEFAULT_T_STAR_MIN = 30.0


@dataclass(frozen=True, eq=False)
class LoganResult:
    """Per-TAC Logan fit, arrays (N,).

    vt:        total distribution volume VT = slope (mL/mL); 0 where undefined (see ``valid``).
    intercept: b (min).
    r2:        R² of the Logan line; rmse: RMS residual of the fitted TAC (activity units) on the fitted frames.
    valid:     False where a fitted frame's mean is <= 0 (the plot is undefined) or the line is degenerate.
    frames:    (F,) 0-based indices of the fitted frames.
    predicted: (N, T) the TAC implied by the fitted line on the fitted frames, NaN elsewhere.
    """

    vt: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    rmse: np.ndarray
    valid: np.ndarray
    frames: np.ndarray
    predicted: np.ndarray


def logan_frames(timing: FrameTiming, t_star_min: float) -> np.ndarray:
    """Indices of the frames with mid-time >= t* (at least 2, else :class:`InputError`)."""
    if not np.isfinite(t_star_min) or t_star_min < 0:
        raise InputError(f"The Logan start time t* must be a number of minutes >= 0, got {t_star_min}.")
    selected = np.flatnonzero(timing.mid_min >= t_star_min)
    if selected.size < 2:
        raise InputError(f"Only {selected.size} frame(s) have their mid-time after t* = {t_star_min:g} min; the Logan "
                         "line needs at least 2 (better 4 or more).",
                         "Choose an earlier t* (often 20-40 min) or add later frames.")
    return selected


def tissue_running_integral(tacs: np.ndarray, timing: FrameTiming) -> np.ndarray:
    """Frame averages (N, T) of ``∫_0^t C`` (activity·min) for the step-function tissue curve (module docstring)."""
    start = timing.start_s / 60.0
    duration = timing.duration_s / 60.0
    previous_end = np.concatenate([[0.0], (timing.end_s[:-1]) / 60.0])
    gap = np.maximum(start - previous_end, 0.0)
    previous_value = np.concatenate([np.zeros((tacs.shape[0], 1)), tacs[:, :-1]], axis=1)
    steps = gap * 0.5 * (previous_value + tacs) + tacs * duration  # gap bridge + the frame itself
    before = np.cumsum(steps, axis=1) - tacs * duration            # integral up to each frame's start
    return before + 0.5 * tacs * duration


def logan_fit(tacs: np.ndarray, timing: FrameTiming, input_function: InputFunction,
              t_star_min: float = DEFAULT_T_STAR_MIN, weights: np.ndarray | None = None) -> LoganResult:
    """Logan plasma-input fit of TACs (N, T) (frame means, finite), all at once; ``weights`` (T,) or None."""
    values = np.asarray(tacs, dtype=float)
    input_function.check_covers(timing)
    frames = logan_frames(timing, t_star_min)
    w = np.ones(frames.size) if weights is None else np.asarray(weights, dtype=float)[frames]
    w = w * (w.size / w.sum())
    running = tissue_running_integral(values, timing)[:, frames]
    c = values[:, frames]
    cp_running = input_function.mean_integral_over_frames(timing)[frames]
    positive = np.all(c > 0, axis=1)
    safe = np.where(c > 0, c, 1.0)
    x = cp_running / safe
    y = running / safe
    sw = w.sum()
    sx, sy = x @ w, y @ w
    sxx, sxy = (x * x) @ w, (x * y) @ w
    det = sw * sxx - sx * sx
    ok = positive & (det > 1e-12 * np.maximum(sw * sxx, 1e-300))
    det = np.where(ok, det, 1.0)
    slope = np.where(ok, (sw * sxy - sx * sy) / det, 0.0)
    intercept = np.where(ok, (sy - slope * sx) / sw, 0.0)
    residual = y - (slope[:, None] * x + intercept[:, None])
    ss_res = (residual**2) @ w
    ss_tot = ((y - (sy / sw)[:, None]) ** 2) @ w
    r2 = np.where(ok & (ss_tot > 0), 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
    # TAC implied by the line: A + C Δt/2 = VT X + b C  ->  C = (VT X - A) / (Δt/2 - b)
    half = 0.5 * timing.duration_s[frames] / 60.0
    before = running - 0.5 * c * 2 * half
    denominator = half[None, :] - intercept[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        implied = (slope[:, None] * cp_running[None, :] - before) / denominator
    implied = np.where(ok[:, None] & (denominator > 0), implied, np.nan)
    predicted = np.full(values.shape, np.nan)
    predicted[:, frames] = implied
    with np.errstate(invalid="ignore"):
        rmse = np.sqrt(np.nansum((implied - c) ** 2 * w, axis=1) / sw)
    rmse = np.where(ok, rmse, 0.0)
    return LoganResult(slope, intercept, r2, rmse, ok, frames, predicted)
