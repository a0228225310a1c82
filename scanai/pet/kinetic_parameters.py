"""Compartment-model parameters: names and bounds, micro <-> macro (sum of exponentials) conversion, Ki and VT."""

from __future__ import annotations

from typing import Any

import numpy as np

from scanai.core.errors import InputError
from scanai.pet.frame_convolution import FrameConvolver, _namespace

#: Lower and upper bounds used by the refinement (and reported as bound hits): K1 mL/min/mL, k's 1/min, vB.
BOUNDS: dict[str, tuple[float, float]] = {"K1": (0.0, 5.0), "k2": (0.0, 5.0), "k3": (0.0, 2.0), "k4": (0.0, 1.0),
                                          "vB": (0.0, 0.999)}
#: Kinetic (non-blood) parameters of each compartment model, in the order used internally.
KINETIC_PARAMETERS: dict[str, tuple[str, ...]] = {"1tcm": ("K1", "k2"), "2tcm_irreversible": ("K1", "k2", "k3"),
                                                  "2tcm": ("K1", "k2", "k3", "k4")}


def macro_from_micro(method: str, kinetic: Any) -> tuple[Any, Any, Any, Any]:
    """(c1, c2, a1, a2) from the kinetic parameters (N, P) (columns: :data:`KINETIC_PARAMETERS`); broadcasts.

    Works on numpy arrays and torch tensors, real or complex.
    """
    xp = _namespace(kinetic)
    k1 = kinetic[:, 0]
    if method == "1tcm":
        zero = 0.0 * k1
        return k1, zero, kinetic[:, 1], zero + 1.0
    k2, k3 = kinetic[:, 1], kinetic[:, 2]
    if method == "2tcm_irreversible":
        beta = k2 + k3
        safe = xp.where(beta.real > 1e-12, beta, 0.0 * beta + 1e-12)
        return k1 * k3 / safe, k1 * k2 / safe, 0.0 * k1, beta
    k4 = kinetic[:, 3]
    total = k2 + k3 + k4
    disc = total * total - 4.0 * k2 * k4
    floor = (1e-9 * total.real) ** 2 + 1e-30
    disc = disc + (floor - disc.real) * (disc.real < floor)
    root = disc**0.5
    a1, a2 = (total - root) / 2.0, (total + root) / 2.0
    return k1 * (k3 + k4 - a1) / root, k1 * (a2 - k3 - k4) / root, a1, a2


def micro_from_macro(method: str, c1: np.ndarray, c2: np.ndarray, a1: np.ndarray,
                     a2: np.ndarray) -> dict[str, np.ndarray]:
    """Micro parameters (N,) from macro ones (c >= 0, a1 <= a2; see the module docstring); numpy only."""
    k1 = c1 + c2
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "1tcm":
            return {"K1": k1, "k2": np.where(c1 > 0, a1, a2)}
        sum34 = np.where(k1 > 0, (c1 * a2 + c2 * a1) / k1, 0.0)
        k2 = a1 + a2 - sum34
        k4 = np.where(k2 > 0, a1 * a2 / np.where(k2 > 0, k2, 1.0), 0.0)
        k3 = np.maximum(sum34 - k4, 0.0)
    result = {"K1": k1, "k2": np.maximum(k2, 0.0), "k3": k3}
    if method == "2tcm":
        result["k4"] = k4
    return result


def derived(method: str, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Macro-parameters: Ki = K1 k3/(k2 + k3) (2TCM), VT = K1/k2 (1 + k3/k4) (VT = K1/k2 for 1TCM).

    Undefined values (k2 = 0, or VT of a 2TCM with k4 = 0) are NaN.
    """
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if method in ("2tcm_irreversible", "2tcm"):
            total = p["k2"] + p["k3"]
            out["Ki"] = np.where(total > 0, p["K1"] * p["k3"] / np.where(total > 0, total, 1.0),
                                 np.where(p["K1"] > 0, np.nan, 0.0))
        if method == "1tcm":
            out["VT"] = np.where(p["k2"] > 0, p["K1"] / p["k2"], np.nan)
        elif method == "2tcm":
            ok = (p["k2"] > 0) & (p["k4"] > 0)
            out["VT"] = np.where(ok, p["K1"] / p["k2"] * (1 + p["k3"] / np.where(ok, p["k4"], 1.0)), np.nan)
            out["VT"] = np.where((p["K1"] == 0) & (p["k2"] > 0), 0.0, out["VT"])
    return out


def check_method(method: str) -> None:
    if method not in KINETIC_PARAMETERS:
        raise InputError(f"Unknown compartment model '{method}'.", f"Use one of: {', '.join(KINETIC_PARAMETERS)}.")


def predict(method: str, convolver: FrameConvolver, kinetic: np.ndarray, vb: np.ndarray,
            blood: np.ndarray, block: int = 256) -> np.ndarray:
    """Frame-averaged model TACs (N, T) from kinetic parameters (N, P) and vB (N,) (numpy; O(N M), in blocks)."""
    kinetic = np.asarray(kinetic, dtype=float)
    out = np.empty((kinetic.shape[0], convolver.frame_begin.size))
    for begin in range(0, kinetic.shape[0], block):
        part = slice(begin, begin + block)
        c1, c2, a1, a2 = macro_from_micro(method, kinetic[part])
        tissue = c1[:, None] * convolver.frame_means(np.asarray(a1, float))
        if method != "1tcm":
            tissue = tissue + c2[:, None] * convolver.frame_means(np.asarray(a2, float))
        out[part] = (1.0 - vb[part, None]) * tissue + vb[part, None] * blood[None, :]
    return out
