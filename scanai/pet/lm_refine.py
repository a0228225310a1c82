"""Bound-constrained Levenberg-Marquardt refinement of compartment-model fits in torch (exact Jacobian by complex step).

Projected, active-set Levenberg-Marquardt (Kanzow, Yamashita and Fukushima 2004; the active-set rule of
Bertsekas' projected Newton method): at each iteration a parameter that sits on a bound while the gradient of the
cost pushes it outwards is held there, the damped Gauss-Newton system is solved for the other (free) parameters
only, and the trial point is projected onto the box. A parameter whose optimum lies on a bound (vB = 0, k4 -> 0, K1
at a user bound) therefore stops stalling the others: the free parameters take their own full Gauss-Newton step,
and the fit reaches the optimum of its objective on the face of the box (the first-order conditions of the
bounded problem: zero gradient in every free parameter, a gradient pointing outwards on every held one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scanai.pet.frame_convolution import FrameConvolver
from scanai.pet.kinetic_parameters import BOUNDS, KINETIC_PARAMETERS, macro_from_micro, predict

#: A parameter within this fraction of its bound range from a bound counts as on it (held; reported as a bound hit).
ON_BOUND = 1e-6


def parameter_names(method: str, vb_fixed: float | None) -> tuple[str, ...]:
    """The refined parameters of ``method``: the kinetic ones, then vB when it is fitted."""
    return KINETIC_PARAMETERS[method] + (("vB",) if vb_fixed is None else ())


def bound_arrays(names: tuple[str, ...], bounds: Mapping[str, tuple[float, float]] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(lower (P,), upper (P,)) of ``names``: :data:`BOUNDS` with the entries of ``bounds`` replacing them."""
    table = {**BOUNDS, **(bounds or {})}
    return (np.array([table[n][0] for n in names], dtype=float), np.array([table[n][1] for n in names], dtype=float))


def refine_lm(method: str, convolver: FrameConvolver, tacs: np.ndarray, weights: np.ndarray, blood: np.ndarray,
              start: np.ndarray, vb_fixed: float | None, device: Any, max_iterations: int = 200,
              batch: int = 1024, bounds: Mapping[str, tuple[float, float]] | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Bound-constrained Levenberg-Marquardt refinement, batched over TACs, in torch float64 on ``device``; without
    torch, scipy's trust-region reflective solver curve by curve (:func:`refine_without_torch`, for the few curves of
    regional fits).

    tacs: (N, T); weights: (T,) >= 0 (0: frame not fitted); blood: (T,); start: (N, P) parameters (kinetic
    columns, then vB when fitted; projected onto the bounds first). bounds: name -> (lower, upper) replacing
    :data:`BOUNDS`. Returns (parameters (N, P), bound hit (N,) bool: a parameter within :data:`ON_BOUND` of its
    range from a bound).
    """
    from scanai.core.device import torch_available

    if not torch_available():
        return refine_without_torch(method, convolver, tacs, weights, blood, start, vb_fixed, bounds)
    import torch

    lower_np, upper_np = bound_arrays(parameter_names(method, vb_fixed), bounds)
    lower = torch.tensor(lower_np, dtype=torch.float64, device=device)
    upper = torch.tensor(upper_np, dtype=torch.float64, device=device)
    w = torch.as_tensor(weights, dtype=torch.float64, device=device)
    cb = torch.as_tensor(blood, dtype=torch.float64, device=device)
    out = np.empty_like(start)
    hit = np.zeros(start.shape[0], dtype=bool)
    threads = torch.get_num_threads()
    small = start.shape[0] * convolver.h.size < 2_000_000
    if small and torch.device(device).type == "cpu":
        torch.set_num_threads(1)  # small tensors: thread hand-offs cost more than they save (restored below)
    try:
        for begin in range(0, start.shape[0], batch):
            y = torch.as_tensor(tacs[begin:begin + batch], dtype=torch.float64, device=device)
            p = torch.as_tensor(start[begin:begin + batch], dtype=torch.float64, device=device)
            p = torch.minimum(torch.maximum(torch.nan_to_num(p, nan=0.01), lower), upper)
            p = _lm_batch(method, convolver, y, w, cb, p, vb_fixed, lower, upper, max_iterations)
            out[begin:begin + batch] = p.cpu().numpy()
            span = upper - lower
            near = (p - lower <= ON_BOUND * span) | (upper - p <= ON_BOUND * span)
            hit[begin:begin + batch] = near.any(dim=1).cpu().numpy()
    finally:
        torch.set_num_threads(threads)
    return out, hit


def refine_without_torch(method: str, convolver: FrameConvolver, tacs: np.ndarray, weights: np.ndarray,
                         blood: np.ndarray, start: np.ndarray, vb_fixed: float | None,
                         bounds: Mapping[str, tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`refine_lm` in numpy: ``scipy.optimize.least_squares`` (trust-region reflective, bounded) on each
    curve, same objective, bounds and outputs; about 10-50 ms a curve, for regional fits where torch is absent."""
    from scipy.optimize import least_squares

    lower, upper = bound_arrays(parameter_names(method, vb_fixed), bounds)
    n_kin = len(KINETIC_PARAMETERS[method])
    root_w = np.sqrt(np.asarray(weights, dtype=float))
    out = np.empty_like(start, dtype=float)
    hit = np.zeros(start.shape[0], dtype=bool)

    def residual(p: np.ndarray, y: np.ndarray) -> np.ndarray:
        vb = np.array([p[n_kin] if vb_fixed is None else vb_fixed])
        return root_w * (predict(method, convolver, p[None, :n_kin], vb, blood)[0] - y)

    for n, (y, p0) in enumerate(zip(np.asarray(tacs, dtype=float), start, strict=True)):
        p0 = np.clip(np.nan_to_num(p0, nan=0.01), lower, upper)
        span = upper - lower
        p0 = np.clip(p0, lower + 1e-9 * span, upper - 1e-9 * span)  # trf needs a strictly feasible start
        p = least_squares(residual, p0, bounds=(lower, upper), method="trf", x_scale="jac", args=(y,),
                          xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=400).x
        snap_low, snap_high = p - lower <= 1e-7 * span, upper - p <= 1e-7 * span  # trf stays strictly inside
        out[n] = np.where(snap_low, lower, np.where(snap_high, upper, p))
        hit[n] = bool(np.any((out[n] - lower <= ON_BOUND * span) | (upper - out[n] <= ON_BOUND * span)))
    return out, hit


def _model_and_jacobian(method: str, convolver: FrameConvolver, p: Any, cb: Any, vb_fixed: float | None):
    """Model (n, T) and Jacobian (n, T, P) at parameters p (n, P) (torch float64)."""
    import torch

    step = 1e-20
    n_kin = len(KINETIC_PARAMETERS[method])
    kinetic = p[:, :n_kin]
    vb = p[:, n_kin] if vb_fixed is None else torch.full_like(p[:, 0], vb_fixed)
    c1, c2, a1, a2 = macro_from_micro(method, kinetic)
    dmacro = torch.empty(p.shape[0], 4, n_kin, dtype=torch.float64, device=p.device)
    for j in range(n_kin):
        shifted = kinetic.to(torch.complex128).clone()
        shifted[:, j] = shifted[:, j] + 1j * step
        dmacro[:, :, j] = torch.stack([v.imag / step for v in macro_from_micro(method, shifted)], dim=1)
    y1 = convolver.frame_means(a1.to(torch.complex128) + 1j * step)
    value1, slope1 = y1.real, y1.imag / step
    if method == "1tcm":
        value2 = slope2 = torch.zeros_like(value1)
    else:
        y2 = convolver.frame_means(a2.to(torch.complex128) + 1j * step)
        value2, slope2 = y2.real, y2.imag / step
    tissue = c1[:, None] * value1 + c2[:, None] * value2
    keep = (1.0 - vb)[:, None]
    model = keep * tissue + vb[:, None] * cb
    jac_macro = torch.stack([keep * value1, keep * value2, keep * c1[:, None] * slope1,
                             keep * c2[:, None] * slope2], dim=2)  # (n, T, 4)
    jac = jac_macro @ dmacro
    if vb_fixed is None:
        jac = torch.cat([jac, (cb - tissue)[:, :, None]], dim=2)
    return model, jac


def _held(p: Any, gradient: Any, lower: Any, upper: Any) -> Any:
    """(n, P) bool: parameters on a bound whose cost gradient points out of the box (held at the bound)."""
    span = upper - lower
    return ((p - lower <= 1e-12 * span) & (gradient > 0)) | ((upper - p <= 1e-12 * span) & (gradient < 0))


def _lm_batch(method, convolver, y, w, cb, p, vb_fixed, lower, upper, max_iterations):
    """Projected active-set Levenberg-Marquardt on one batch: p (n, P) -> refined p (n, P)."""
    import torch

    def cost_of(model):
        r = model - y
        return (r * r * w).sum(dim=1), r

    model, jac = _model_and_jacobian(method, convolver, p, cb, vb_fixed)
    cost, r = cost_of(model)
    scale = (y * y * w).sum(dim=1)
    lam = torch.full_like(cost, 1e-3)
    active = torch.ones_like(cost, dtype=torch.bool)
    for _ in range(max_iterations):
        jw = jac * w[None, :, None]
        a = jw.transpose(1, 2) @ jac
        g = (jw.transpose(1, 2) @ r[:, :, None])[:, :, 0]
        free = (~_held(p, g, lower, upper)).to(torch.float64)
        diag = torch.diagonal(a, dim1=1, dim2=2).clamp_min(1e-30)
        # held parameters: their rows and columns dropped, an identity in their place (so their step is 0)
        system = (a * free[:, :, None] * free[:, None, :]
                  + torch.diag_embed(lam[:, None] * diag * free + (1.0 - free) + 1e-30))
        step = -torch.linalg.solve(system, (g * free)[:, :, None])[:, :, 0]
        trial = torch.minimum(torch.maximum(p + step, lower), upper)
        trial = torch.where(active[:, None], trial, p)
        t_model, t_jac = _model_and_jacobian(method, convolver, trial, cb, vb_fixed)
        t_cost, t_r = cost_of(t_model)
        better = (t_cost < cost) & active & torch.isfinite(t_cost)
        change = (cost - t_cost) / cost.clamp_min(1e-300)
        span = upper - lower
        still = ((trial - p).abs() <= 1e-15 * span).all(dim=1)  # the projected step vanished: a stationary point
        p = torch.where(better[:, None], trial, p)
        jac = torch.where(better[:, None, None], t_jac, jac)
        r = torch.where(better[:, None], t_r, r)
        cost = torch.where(better, t_cost, cost)
        lam = torch.where(better, lam / 3.0, lam * 4.0).clamp(1e-12, 1e12)
        converged = (better & (change < 1e-14)) | (lam >= 1e12) | (cost <= 1e-28 * scale)
        converged |= ~better & still & (lam <= 1e-6)
        active = active & ~converged
        if not bool(active.any()):
            break
    return p
