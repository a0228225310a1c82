"""Bounded Levenberg-Marquardt refinement of compartment-model fits in torch (exact Jacobian by complex step)."""

from __future__ import annotations

from typing import Any

import numpy as np

from scanai.pet.frame_convolution import FrameConvolver
from scanai.pet.kinetic_parameters import BOUNDS, KINETIC_PARAMETERS, macro_from_micro


def refine_lm(method: str, convolver: FrameConvolver, tacs: np.ndarray, weights: np.ndarray, blood: np.ndarray,
              start: np.ndarray, vb_fixed: float | None, device: Any, max_iterations: int = 200,
              batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Bounded Levenberg-Marquardt refinement, batched over TACs, in torch float64 on ``device``.

    tacs: (N, T); weights: (T,); blood: (T,); start: (N, P) parameters (kinetic columns, then vB when fitted).
    Bounds (:data:`BOUNDS`) are enforced by projection. Returns (parameters (N, P), bound hit (N,) bool).
    """
    import torch

    names = KINETIC_PARAMETERS[method] + (("vB",) if vb_fixed is None else ())
    lower = torch.tensor([BOUNDS[n][0] for n in names], dtype=torch.float64, device=device)
    upper = torch.tensor([BOUNDS[n][1] for n in names], dtype=torch.float64, device=device)
    w = torch.as_tensor(weights, dtype=torch.float64, device=device)
    cb = torch.as_tensor(blood, dtype=torch.float64, device=device)
    out = np.empty_like(start)
    hit = np.zeros(start.shape[0], dtype=bool)
    threads = torch.get_num_threads()
    small = start.shape[0] * convolver.h.size < 2_000_000
    if small and torch.device(device).type == "cpu":
        torch.set_num_threads(1)  # small tensors: thread hand-offs cost more than they save (restored below)
    try:
        _refine_batches(method, convolver, tacs, cb, w, start, vb_fixed, lower, upper, max_iterations, batch, out,
                        hit, device)
    finally:
        torch.set_num_threads(threads)
    return out, hit


def _refine_batches(method, convolver, tacs, cb, w, start, vb_fixed, lower, upper, max_iterations, batch, out, hit,
                    device) -> None:
    import torch

    for begin in range(0, start.shape[0], batch):
        y = torch.as_tensor(tacs[begin:begin + batch], dtype=torch.float64, device=device)
        p = torch.as_tensor(start[begin:begin + batch], dtype=torch.float64, device=device)
        p = torch.minimum(torch.maximum(torch.nan_to_num(p, nan=0.01), lower), upper)
        p = _lm_batch(method, convolver, y, w, cb, p, vb_fixed, lower, upper, max_iterations)
        out[begin:begin + batch] = p.cpu().numpy()
        span = (upper - lower)
        near = (p - lower <= 1e-6 * span) | (upper - p <= 1e-6 * span)
        hit[begin:begin + batch] = near.any(dim=1).cpu().numpy()


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


def _lm_batch(method, convolver, y, w, cb, p, vb_fixed, lower, upper, max_iterations):
    import torch

    def cost_of(model):
        r = model - y
        return (r * r * w).sum(dim=1), r

    model, jac = _model_and_jacobian(method, convolver, p, cb, vb_fixed)
    cost, r = cost_of(model)
    lam = torch.full_like(cost, 1e-3)
    eye = torch.eye(p.shape[1], dtype=torch.float64, device=p.device)
    active = torch.ones_like(cost, dtype=torch.bool)
    for _ in range(max_iterations):
        jw = jac * w[None, :, None]
        a = jw.transpose(1, 2) @ jac
        g = (jw.transpose(1, 2) @ r[:, :, None])[:, :, 0]
        diag = torch.diagonal(a, dim1=1, dim2=2).clamp_min(1e-30)
        system = a + lam[:, None, None] * torch.diag_embed(diag) + 1e-30 * eye
        step = -torch.linalg.solve(system, g[:, :, None])[:, :, 0]
        trial = torch.minimum(torch.maximum(p + step, lower), upper)
        trial = torch.where(active[:, None], trial, p)
        t_model, t_jac = _model_and_jacobian(method, convolver, trial, cb, vb_fixed)
        t_cost, t_r = cost_of(t_model)
        better = (t_cost < cost) & active & torch.isfinite(t_cost)
        change = (cost - t_cost) / cost.clamp_min(1e-300)
        p = torch.where(better[:, None], trial, p)
        jac = torch.where(better[:, None, None], t_jac, jac)
        r = torch.where(better[:, None], t_r, r)
        moved = (trial - p).abs().max(dim=1).values
        cost = torch.where(better, t_cost, cost)
        lam = torch.where(better, lam / 3.0, lam * 4.0).clamp(1e-12, 1e12)
        converged = (better & (change < 1e-14)) | (lam >= 1e12) | (cost <= 1e-28 * (y * y * w).sum(dim=1))
        converged |= ~better & (moved == 0) & (lam > 1e6)
        active = active & ~converged
        if not bool(active.any()):
            break
    return p
