"""Forward model: tissue time-activity curves (TACs) of the two-tissue compartment model (2TCM).

    dC1/dt = K1 Cp - (k2 + k3) C1 + k4 C2,    dC2/dt = k3 C1 - k4 C2,    C_T = C1 + C2
    C_PET  = (1 - vB) C_T + vB Cp             (whole blood taken equal to plasma)

Rate constants are in 1/min, times in s. The impulse response is a sum of two exponentials,
``K1 / (a2 - a1) [(k3 + k4 - a1) e^{-a1 t} + (a2 - k3 - k4) e^{-a2 t}]`` with
``a1,2 = (k2 + k3 + k4 ∓ sqrt((k2 + k3 + k4)^2 - 4 k2 k4)) / 2``; for k4 = 0 (irreversible, FDG) ``a1 = 0`` and
the net influx rate is ``Ki = K1 k3 / (k2 + k3)``. The convolution with the input function is computed on a
uniform fine grid by an exponential recursion that is exact for an input that is linear between grid points;
frame values are exact averages of the fine curve (piecewise linear) over each frame.
"""

from __future__ import annotations

import numpy as np

from scanai.core.errors import InputError
from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming

#: Default fine-grid step for the convolution, s.
DEFAULT_STEP_S = 0.5


def patlak_ki(k1_per_min: float | np.ndarray, k2_per_min: float | np.ndarray,
              k3_per_min: float | np.ndarray) -> np.ndarray:
    """Net influx rate ``Ki = K1 k3 / (k2 + k3)`` (1/min) of an irreversible 2TCM (k4 = 0); broadcasts."""
    k1, k2, k3 = (np.asarray(v, dtype=float) for v in (k1_per_min, k2_per_min, k3_per_min))
    total = k2 + k3
    return np.divide(k1 * k3, total, out=np.zeros(np.broadcast(k1, total).shape), where=total > 0)


def _exponential_convolution(signal: np.ndarray, rate_per_s: float, step_s: float) -> np.ndarray:
    """``∫_0^t signal(τ) e^{-rate (t - τ)} dτ`` (signal·s) on a uniform grid, exact for piecewise-linear signal.

    signal: (M,) samples at ``0, step, 2 step, ...``; returns (M,), 0 at the first sample.
    """
    from scipy.signal import lfilter

    x = rate_per_s * step_s
    decay = np.exp(-x)
    if x < 1e-3:  # Taylor series (avoids cancellation); x = 0 gives the trapezoid rule
        whole = step_s * (1.0 - x / 2 + x**2 / 6)
        late = step_s * (0.5 - x / 6 + x**2 / 24)
    else:
        whole = -np.expm1(-x) / rate_per_s                                    # ∫_0^h e^{-r u} du
        late = whole - (1.0 - decay * (1.0 + x)) / (rate_per_s**2 * step_s)  # weight of the segment's end sample
    early = whole - late
    # y[n] = decay y[n-1] + late x[n] + early x[n-1]; the initial state makes y[0] = 0.
    result, _ = lfilter([late, early], [1.0, -decay], signal, zi=[-late * signal[0]])
    return result


def _check_rates(k1: np.ndarray, k2: np.ndarray, k3: np.ndarray, k4: np.ndarray, vb: np.ndarray) -> None:
    for values, name in ((k1, "K1"), (k2, "k2"), (k3, "k3"), (k4, "k4")):
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise InputError(f"The rate constant {name} must be a finite number >= 0 (in 1/min).")
    if not np.all((vb >= 0) & (vb < 1)):
        raise InputError("The blood volume fraction vB must be between 0 and 1.")


def tissue_curves_2tcm(input_function: InputFunction, end_s: float, k1_per_min: float | np.ndarray,
                       k2_per_min: float | np.ndarray, k3_per_min: float | np.ndarray,
                       k4_per_min: float | np.ndarray = 0.0, vb: float | np.ndarray = 0.0,
                       step_s: float = DEFAULT_STEP_S) -> tuple[np.ndarray, np.ndarray]:
    """2TCM PET curves on a fine grid: returns ``(t_s (M,), curves (N, M))`` from 0 to ``end_s``.

    The rate constants (1/min) and ``vb`` broadcast to N parameter sets. ``curves`` is in the input's
    activity unit and includes the blood term ``vB Cp``.
    """
    if not (0 < step_s <= 1.0):
        raise InputError(f"The convolution step must be between 0 and 1 s, got {step_s:g} s.")
    k1, k2, k3, k4, vb_all = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float)).reshape(-1)
                                                   for v in (k1_per_min, k2_per_min, k3_per_min, k4_per_min, vb)))
    _check_rates(k1, k2, k3, k4, vb_all)
    t = np.arange(0.0, end_s + step_s, step_s)
    cp = input_function.value_at(t)
    curves = np.empty((k1.size, t.size))
    for n in range(k1.size):
        total = k2[n] + k3[n] + k4[n]
        root = np.sqrt(max(total**2 - 4.0 * k2[n] * k4[n], 0.0))
        a1, a2 = (total - root) / 2.0, (total + root) / 2.0
        if a2 - a1 < 1e-12:  # k2 = k3 = k4 = 0: pure trapping, C_T = K1 ∫Cp
            tissue = k1[n] * _exponential_convolution(cp, 0.0, step_s) / 60.0
        else:
            c1 = k1[n] * (k3[n] + k4[n] - a1) / (a2 - a1)
            c2 = k1[n] * (a2 - k3[n] - k4[n]) / (a2 - a1)
            tissue = (c1 * _exponential_convolution(cp, a1 / 60.0, step_s)
                      + c2 * _exponential_convolution(cp, a2 / 60.0, step_s)) / 60.0
        curves[n] = (1.0 - vb_all[n]) * tissue + vb_all[n] * cp
    return t, curves


def frame_average(t_s: np.ndarray, curves: np.ndarray, timing: FrameTiming) -> np.ndarray:
    """Average of piecewise-linear ``curves`` (N, M) sampled at ``t_s`` (M,) over each frame: (N, T)."""
    if timing.end_s[-1] > t_s[-1] + 1e-9:
        raise InputError(f"The simulated curve ends at {t_s[-1]:g} s, before the last frame ends "
                         f"({timing.end_s[-1]:g} s).")
    steps = np.diff(t_s)
    cumulative = np.concatenate([np.zeros((curves.shape[0], 1)),
                                 np.cumsum(0.5 * steps * (curves[:, 1:] + curves[:, :-1]), axis=1)], axis=1)

    def integral(times: np.ndarray) -> np.ndarray:
        index = np.clip(np.searchsorted(t_s, times, side="right") - 1, 0, t_s.size - 2)
        offset = times - t_s[index]
        slope = (curves[:, index + 1] - curves[:, index]) / steps[index]
        return cumulative[:, index] + curves[:, index] * offset + 0.5 * slope * offset**2

    return (integral(timing.end_s) - integral(timing.start_s)) / timing.duration_s


def two_tissue_tacs(input_function: InputFunction, timing: FrameTiming, k1_per_min: float | np.ndarray,
                    k2_per_min: float | np.ndarray, k3_per_min: float | np.ndarray,
                    k4_per_min: float | np.ndarray = 0.0, vb: float | np.ndarray = 0.0,
                    step_s: float = DEFAULT_STEP_S) -> np.ndarray:
    """Frame-averaged 2TCM PET TACs (N, T) for N parameter sets (broadcast), in the input's activity unit."""
    t, curves = tissue_curves_2tcm(input_function, float(timing.end_s[-1]), k1_per_min, k2_per_min, k3_per_min,
                                   k4_per_min, vb, step_s)
    return frame_average(t, curves, timing)
