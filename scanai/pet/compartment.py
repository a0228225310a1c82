"""Compartment models (1TCM, irreversible and reversible 2TCM, with blood volume) fitted voxelwise.

Model (rate constants in 1/min, times in min inside this module)::

    C_T(t)   = c1 e^{-a1 t} ⊗ Cp + c2 e^{-a2 t} ⊗ Cp                 (sum of exponentials, "macro" form)
    C_PET(t) = (1 - vB) C_T(t) + vB Cb(t)                             (Cb whole blood; plasma when not given)

    1TCM:            c1 = K1, a1 = k2                                  (c2 = 0)
    2TCM, k4 = 0:    a1 = 0, a2 = k2 + k3, c1 = K1 k3 / (k2 + k3) = Ki, c2 = K1 k2 / (k2 + k3)
    2TCM:            a1,2 = (s ∓ sqrt(s² - 4 k2 k4)) / 2, s = k2 + k3 + k4,
                     c1 = K1 (k3 + k4 - a1) / (a2 - a1), c2 = K1 (a2 - k3 - k4) / (a2 - a1)

Back from macro to micro parameters (any c1, c2 >= 0 with a1 < a2 gives k's >= 0)::

    K1 = c1 + c2,  k3 + k4 = (c1 a2 + c2 a1) / K1,  k2 = a1 + a2 - (k3 + k4),  k4 = a1 a2 / k2,  k3 = (k3 + k4) - k4

Every prediction is a **frame average**, computed exactly for the piecewise-linear input function (see
:class:`FrameConvolver`): no fine time grid, no mid-frame sampling.

Fast fit (basis functions): for a grid of exponents the frame-averaged basis curves are precomputed once, with
Gram-Schmidt tables of every pair (blood direction projected out first when vB is fitted), so that a voxel's
least-squares residual for every candidate (a1, a2) follows from its products with the single basis curves in a
few operations. The candidate with the least residual among physically valid solutions (c >= 0, 0 <= vB < 1, or
the face vB = 0) is found best-first: the unconstrained residual bounds a candidate from below, so only the best
few candidates of a voxel are solved for their coefficients (branch and bound; exhaustive when that does not
settle). The search runs coarse (float32, every 4th grid exponent) then fine (float64, around the coarse optimum).
Optional refinement: batched, bounded Levenberg-Marquardt in torch (float64, CPU or CUDA) on the exact model,
starting from the basis-function solution, with an exact Jacobian (complex-step derivative of the frame-averaged
convolution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scanai.core.errors import InputError
from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming

#: Exponent grid (1/min) of the basis functions: 1TCM k2 and irreversible k2 + k3 (fine, 1-D searches).
GRID_1D_PER_MIN = np.geomspace(1e-3, 5.0, 161)
#: Fine exponent grid for the reversible 2TCM pair search; the coarse stage uses every 4th value.
GRID_PAIRS_PER_MIN = np.geomspace(1e-3, 5.0, 73)
#: Lower and upper bounds used by the refinement (and reported as bound hits): K1 mL/min/mL, k's 1/min, vB.
BOUNDS: dict[str, tuple[float, float]] = {"K1": (0.0, 5.0), "k2": (0.0, 5.0), "k3": (0.0, 2.0), "k4": (0.0, 1.0),
                                          "vB": (0.0, 0.999)}
#: Kinetic (non-blood) parameters of each compartment model, in the order used internally.
KINETIC_PARAMETERS: dict[str, tuple[str, ...]] = {"1tcm": ("K1", "k2"), "2tcm_irreversible": ("K1", "k2", "k3"),
                                                  "2tcm": ("K1", "k2", "k3", "k4")}

_TAYLOR_TERMS = 16
#: Working-set size (bytes) of the coarse candidate scores processed at once (about the L2 cache; measured best).
_CACHE_BYTES = 1 << 22
_TAYLOR_LIMIT = 0.5


# ------------------------------------------------------------------------------------ exact frame averages
def _namespace(array: Any) -> Any:
    if isinstance(array, np.ndarray):
        return np
    import torch

    return torch


def _phis(x: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``φk(x) = Σ_n (-x)^n / (n + k)!`` for k = 1, 2, 3 (elementwise; real or complex; x >= 0 real part).

    φ1 = (1 - e^{-x}) / x, φ2 = (1 - φ1) / x, φ3 = (1/2 - φ2) / x; a Taylor series is used where |x| < 0.5.
    numpy: each branch only where it is used, with as many Taylor terms as the largest |x| needs.
    """
    if xp is np:
        return _phis_numpy(np.asarray(x))
    small = xp.abs(x) < _TAYLOR_LIMIT
    safe = xp.where(small, xp.ones_like(x), x)
    e = xp.exp(-safe)
    d1 = (1.0 - e) / safe
    d2 = (1.0 - d1) / safe
    d3 = (0.5 - d2) / safe
    factorials = [1.0]
    for n in range(1, _TAYLOR_TERMS + 4):
        factorials.append(factorials[-1] * n)
    taylor = []
    for k in (1, 2, 3):
        value = 0.0 * x + 1.0 / factorials[_TAYLOR_TERMS - 1 + k]
        for n in range(_TAYLOR_TERMS - 2, -1, -1):
            value = value * (-x) + 1.0 / factorials[n + k]
        taylor.append(value)
    return (xp.where(small, taylor[0], d1), xp.where(small, taylor[1], d2), xp.where(small, taylor[2], d3))


def _taylor(x: np.ndarray, terms: int) -> list[np.ndarray]:
    """φ1, φ2, φ3 of ``x`` by their Taylor series with ``terms`` terms (Horner)."""
    factorials = [1.0]
    for n in range(1, terms + 4):
        factorials.append(factorials[-1] * n)
    out = []
    for k in (1, 2, 3):
        value = np.full_like(x, 1.0 / factorials[terms - 1 + k])
        for n in range(terms - 2, -1, -1):
            value *= -x
            value += 1.0 / factorials[n + k]
        out.append(value)
    return out


def _phis_numpy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_phis` for numpy arrays (real or complex)."""
    magnitude = np.abs(x)
    small = magnitude < _TAYLOR_LIMIT
    everything = bool(small.all())
    result = [np.empty_like(x, dtype=np.result_type(x, 1.0)) for _ in range(3)]
    if small.any():
        xs = x if everything else x[small]
        largest = float(magnitude.max() if everything else magnitude[small].max())
        terms, bound = 2, largest * largest / 2.0
        while bound >= 1e-18 and terms < _TAYLOR_TERMS:  # truncation error |x|^N / N!
            terms += 1
            bound *= largest / terms
        for out, value in zip(result, _taylor(xs, terms), strict=True):
            if everything:
                out[...] = value
            else:
                out[small] = value
    if not everything:
        xl = x[~small]
        d1 = (1.0 - np.exp(-xl)) / xl
        d2 = (1.0 - d1) / xl
        d3 = (0.5 - d2) / xl
        for out, value in zip(result, (d1, d2, d3), strict=True):
            out[~small] = value
    return result[0], result[1], result[2]


@dataclass(frozen=True, eq=False)
class FrameConvolver:
    """Exact frame averages of ``y_a(t) = ∫_0^t Cp(τ) e^{-a (t - τ)} dτ`` for one input function and timing.

    The input function is linear between its samples (ramp from 0 at injection, constant after the last
    sample), so on each segment between the merged time points (input samples and frame boundaries) y obeys
    ``y' = Cp - a y`` with a closed-form solution. Segment contributions are combined per interval between
    frame boundaries with decaying exponentials only (no overflow, no cancellation, valid at a = 0), then a
    short recurrence over the intervals gives ``∫ y`` over each frame. Cost: O(N M) for N exponents and M
    merged segments.

    Arrays (times in min): ``h``, ``a``, ``s``, ``tail`` (M,) segment length, Cp at its start, Cp slope, time
    from its end to the end of its interval; ``interval`` (M,) interval index; ``starts`` (K,) first segment of
    each interval; ``lengths`` (K,) interval lengths; ``frame_begin``/``frame_end`` (T,) boundary indices.
    """

    h: np.ndarray
    a: np.ndarray
    s: np.ndarray
    tail: np.ndarray
    interval: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    frame_begin: np.ndarray
    frame_end: np.ndarray
    duration_min: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, input_function: InputFunction, timing: FrameTiming) -> FrameConvolver:
        """Merge the input function's samples with the frame boundaries (up to the last frame's end)."""
        boundaries_s = np.unique(np.concatenate([[0.0], timing.start_s, timing.end_s]))
        end_s = boundaries_s[-1]
        knots = input_function.t_s[(input_function.t_s > 0) & (input_function.t_s < end_s)]
        points_s = np.unique(np.concatenate([boundaries_s, knots]))
        cp = input_function.value_at(points_s)
        t = points_s / 60.0
        h = np.diff(t)
        slope = np.diff(cp) / h
        boundaries = boundaries_s / 60.0
        interval = np.searchsorted(boundaries, t[:-1], side="right") - 1
        tail = boundaries[interval + 1] - t[1:]
        starts = np.searchsorted(interval, np.arange(boundaries.size - 1))
        frame_begin = np.searchsorted(boundaries_s, timing.start_s)
        frame_end = np.searchsorted(boundaries_s, timing.end_s)
        return cls(h, cp[:-1], slope, np.maximum(tail, 0.0), interval, starts, np.diff(boundaries), frame_begin,
                   frame_end, timing.duration_s / 60.0)

    def _arrays(self, like: Any) -> dict[str, Any]:
        """The segment arrays in ``like``'s array library (numpy, or torch on ``like``'s device)."""
        if isinstance(like, np.ndarray):
            return {name: getattr(self, name) for name in ("h", "a", "s", "tail", "lengths")}
        key = (str(like.device),)
        if key not in self._cache:
            import torch

            self._cache[key] = {name: torch.as_tensor(getattr(self, name), dtype=torch.float64, device=like.device)
                                for name in ("h", "a", "s", "tail", "lengths")}
            self._cache[key]["interval"] = torch.as_tensor(self.interval, device=like.device)
        return self._cache[key]

    def frame_means(self, alpha: Any) -> Any:
        """Frame averages (N, T) of ``e^{-a t} ⊗ Cp`` (activity·min) for exponents ``alpha`` (N,) in 1/min.

        ``alpha`` may be a numpy array or a torch tensor, real or complex (complex-step derivatives).
        """
        xp = _namespace(alpha)
        arrays = self._arrays(alpha)
        h, a, s, tail, lengths = (arrays[k] for k in ("h", "a", "s", "tail", "lengths"))
        rate = alpha[:, None]
        p1, p2, p3 = _phis(rate * h, xp)
        end_value = a * h * p1 + s * h * h * p2                       # y at the segment end, from this segment
        t1, _, _ = _phis(rate * tail, xp)
        to_boundary = end_value * xp.exp(-rate * tail)               # its part of y at the interval's end
        area = a * h * h * p2 + s * h**3 * p3 + end_value * tail * t1  # its part of ∫ y over the interval
        if xp is np:
            reach = np.add.reduceat(to_boundary, self.starts, axis=1)
            integral = np.add.reduceat(area, self.starts, axis=1)
        else:
            shape = (alpha.shape[0], self.lengths.size)
            reach = xp.zeros(shape, dtype=to_boundary.dtype, device=alpha.device).index_add_(
                1, arrays["interval"], to_boundary)
            integral = xp.zeros(shape, dtype=area.dtype, device=alpha.device).index_add_(1, arrays["interval"], area)
        q1, _, _ = _phis(rate * lengths, xp)
        decay = xp.exp(-rate * lengths)
        carried = lengths * q1
        y = 0.0 * alpha
        cumulative = [0.0 * alpha]
        for k in range(self.lengths.size):
            cumulative.append(cumulative[-1] + y * carried[:, k] + integral[:, k])
            y = y * decay[:, k] + reach[:, k]
        stacked = xp.stack(cumulative, 1)
        begin, end = self.frame_begin, self.frame_end
        if xp is not np:
            begin, end = (xp.as_tensor(v, device=alpha.device) for v in (begin, end))
            duration = xp.as_tensor(self.duration_min, dtype=xp.float64, device=alpha.device)
        else:
            duration = self.duration_min
        return (stacked[:, end] - stacked[:, begin]) / duration


# --------------------------------------------------------------------------------------- micro <-> macro
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


# ---------------------------------------------------------------------------------------- basis functions
@dataclass(frozen=True, eq=False)
class _Tables:
    """Gram-Schmidt tables of one set of weighted columns over the X extended exponents (see :class:`BasisSetup`).

    For a candidate pair (i, j) the orthonormal basis of span(b_i, b_j) is u_i = b_i / r_i and
    v_ij = (b_j - m_ij u_i) / n_ij, so every pair's projections follow from the per-exponent products b·y.

    r:    (X,) column norms (1 for "none").
    m:    (X, X) ``u_i · b_j`` (0 in the "none" row).
    ninv: (X, X) ``1 / n_ij`` with ``n_ij = |b_j - m_ij u_i|`` (0 where unusable).
    bad:  (X, X) True where the pair is (nearly) rank-deficient or j is "none".
    """

    r: np.ndarray
    m: np.ndarray
    ninv: np.ndarray
    bad: np.ndarray


def _tables(columns: np.ndarray, scale: np.ndarray) -> _Tables:
    """Tables of weighted columns (T, X) (last column "none", zero); ``scale`` (X,) column sizes for the rank test."""
    r = np.sqrt(np.einsum("tx,tx->x", columns, columns))
    r[-1] = 1.0
    u = columns / r
    m = u.T @ columns
    m[-1] = 0.0
    rest = columns[:, None, :] - u[:, :, None] * m[None]  # (T, X, X): b_j - m_ij u_i
    n = np.sqrt(np.einsum("tij,tij->ij", rest, rest))
    bad = n < 1e-9 * np.maximum(scale[:, None], scale[None, :])
    bad[:, -1] = True
    bad[np.arange(n.shape[0]), np.arange(n.shape[0])] = True
    ninv = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, n))
    return _Tables(r, m, ninv, bad)


@dataclass(frozen=True, eq=False)
class _Basis:
    """Weighted basis columns (T, X) of X extended exponents and their tables (float32 or float64).

    u_blood: (T,) unit weighted blood column (None when vB is fixed); gamma (X,) ``u_blood · columns``;
    blood_norm: norm of the weighted blood column; beta (X,) = gamma / blood_norm.
    raw: tables of the columns (the model without blood, vB = 0); tissue: tables of the columns with the blood
    direction projected out (the model with vB; equal to ``raw`` when vB is fixed).
    """

    columns: np.ndarray
    u_blood: np.ndarray | None
    gamma: np.ndarray
    blood_norm: float
    beta: np.ndarray
    raw: _Tables
    tissue: _Tables

    def subset(self, keep: np.ndarray, dtype: type) -> _Basis:
        """The same for the columns ``keep`` (the last one must be "none"), in ``dtype``."""
        def tab(t: _Tables) -> _Tables:
            grid = np.ix_(keep, keep)
            return _Tables(t.r[keep].astype(dtype), t.m[grid].astype(dtype), t.ninv[grid].astype(dtype), t.bad[grid])

        blood = None if self.u_blood is None else self.u_blood.astype(dtype)
        return _Basis(self.columns[:, keep].astype(dtype), blood, self.gamma[keep].astype(dtype),
                      dtype(self.blood_norm), self.beta[keep].astype(dtype), tab(self.raw), tab(self.tissue))


@dataclass(frozen=True, eq=False)
class BasisSetup:
    """Everything needed to fit one model to many TACs: basis curves, weights, blood curve, grids.

    grid:      (E,) exponents, 1/min; basis (E, T) frame-averaged ``e^{-a t} ⊗ Cp``; integral (T,) frame-averaged
               ∫Cp (a = 0).
    blood:     (T,) frame-averaged whole blood (or plasma); sqrt_w (T,) square roots of the weights.
    vb_fixed:  None when vB is fitted, else the fixed value.
    full:      float64 basis of the X = E + 2 extended exponents: 0 is a = 0 (∫Cp), 1..E the grid, E + 1 "none"
               (a zero column: single exponentials are the pairs (none, j)).
    small:     float32 basis of the coarse exponents (local indices); coarse (2, L) local candidate pairs of the
               coarse search (grouped by first exponent), coarse_m / coarse_ninv (L,) their tissue tables;
               coarse_blocks: (first, begin, end, seconds) runs of candidates sharing the first exponent (seconds:
               a slice or an index array of local columns).
    fine:      (2, L, F) extended-index fine neighbourhood of each coarse candidate (padded with (none, none));
               fine_penalty (L, F): 0 / -inf (unusable) for those candidates; fine_cols (L, C): the extended
               exponents they use (padded with none), fine_local (2, L, F): the candidates as indices into
               fine_cols; fine_mats (L, T, C + 2F): the weighted columns fine_cols, then each candidate's
               orthonormal tissue directions v_ij and u_i (so one product gives the columns' products and scores).
    """

    method: str
    grid: np.ndarray
    basis: np.ndarray
    integral: np.ndarray
    blood: np.ndarray
    sqrt_w: np.ndarray
    vb_fixed: float | None
    convolver: FrameConvolver
    full: _Basis
    small: _Basis
    coarse: np.ndarray
    coarse_m: np.ndarray
    coarse_ninv: np.ndarray
    coarse_blocks: list
    fine: np.ndarray
    fine_penalty: np.ndarray
    fine_cols: np.ndarray
    fine_local: np.ndarray
    fine_mats: np.ndarray

    @property
    def none(self) -> int:
        """Extended index of "no exponential"."""
        return self.grid.size + 1


def _coarse_indices(size: int) -> np.ndarray:
    return np.unique(np.append(np.arange(0, size, 4), size - 1))


def _neighbourhood(method: str, size: int, first: int, second: int) -> list[tuple[int, int]]:
    """Fine candidates (extended indices) around the coarse candidate (first, second) (extended indices).

    Single exponentials: ±3 grid steps; pairs with a1 = 0 (irreversible): ±3 steps of a2; reversible pairs: ±2
    steps of each exponent (a1 = 0 included when a1 is within 2 steps of the grid start).
    """
    none = size + 1
    if first == none:
        return [(none, j) for j in range(max(second - 3, 1), min(second + 4, size + 1))]
    reach = 2 if method == "2tcm" else 3
    seconds = range(max(second - reach, 1), min(second + reach + 1, size + 1))
    if method != "2tcm":
        firsts: list[int] = [0]
    elif first == 0:
        firsts = [0, 1, 2]
    else:
        firsts = ([0] if first - 3 <= 0 else []) + list(range(max(first - 2, 1), min(first + 3, size + 1)))
    return sorted({(i, j) for i in firsts for j in seconds if i < j})


def prepare_basis(method: str, input_function: InputFunction, timing: FrameTiming, weights: np.ndarray,
                  blood: np.ndarray, vb_fixed: float | None) -> BasisSetup:
    """Precompute the frame-averaged basis curves, their Gram-Schmidt tables and the candidate lists of ``method``.

    weights: (T,) positive frame weights; blood: (T,) frame-averaged blood curve (activity units).
    """
    convolver = FrameConvolver.build(input_function, timing)
    grid = GRID_PAIRS_PER_MIN if method == "2tcm" else GRID_1D_PER_MIN
    basis = convolver.frame_means(np.asarray(grid, dtype=float))
    integral = convolver.frame_means(np.zeros(1))[0]
    sqrt_w = np.sqrt(np.asarray(weights, dtype=float))
    blood = np.asarray(blood, dtype=float)
    size = grid.size
    columns = np.concatenate([integral[:, None], basis.T, np.zeros((integral.size, 1))], axis=1) * sqrt_w[:, None]
    sizes = np.sqrt(np.einsum("tx,tx->x", columns, columns))
    raw = _tables(columns, sizes)
    if vb_fixed is None:
        weighted_blood = blood * sqrt_w
        blood_norm = float(np.sqrt(weighted_blood @ weighted_blood))
        u_blood = weighted_blood / blood_norm
        gamma = u_blood @ columns
        tissue = _tables(columns - u_blood[:, None] * gamma[None], np.maximum(sizes, blood_norm))
        full = _Basis(columns, u_blood, gamma, blood_norm, gamma / blood_norm, raw, tissue)
    else:
        full = _Basis(columns, None, np.zeros(size + 2), 1.0, np.zeros(size + 2), raw, raw)
    none = size + 1
    coarse_grid = _coarse_indices(size) + 1
    pairs = [(none, j) for j in coarse_grid]
    if method in ("2tcm_irreversible", "2tcm"):
        pairs += [(0, j) for j in coarse_grid]
        if method == "2tcm":
            pairs += [(i, j) for i in coarse_grid for j in coarse_grid if i < j]
    pairs = [pair for pair in pairs if not full.tissue.bad[pair]]
    keep = np.concatenate([[0], coarse_grid, [none]])
    local = np.zeros(none + 1, dtype=np.intp)
    local[keep] = np.arange(keep.size)
    coarse = local[np.asarray(pairs).T]
    small = full.subset(keep, np.float32)
    hoods = [_neighbourhood(method, size, i, j) for i, j in pairs]
    width = max(len(h) for h in hoods)
    fine = np.full((2, len(pairs), width), none)
    used = [sorted({x for pair in hood for x in pair} | {none}) for hood in hoods]
    fine_cols = np.full((len(pairs), max(len(u) for u in used)), none)
    fine_local = np.zeros_like(fine)
    for k, hood in enumerate(hoods):
        fine[:, k, :len(hood)] = np.asarray(hood).T
        fine_cols[k, :len(used[k])] = used[k]
        fine_local[:, k] = np.searchsorted(used[k], fine[:, k])
    t = full.tissue
    tissue_columns = columns if full.u_blood is None else columns - full.u_blood[:, None] * full.gamma[None]
    u = tissue_columns / t.r
    u[:, none] = 0.0
    v = (tissue_columns[:, fine[1]] - t.m[fine[0], fine[1]] * u[:, fine[0]]) * t.ninv[fine[0], fine[1]]  # (T, L, F)
    mats = np.concatenate([columns[:, fine_cols], v, u[:, fine[0]]], axis=2).transpose(1, 0, 2)
    blocks = []
    for f in dict.fromkeys(coarse[0].tolist()):
        run = np.flatnonzero(coarse[0] == f)
        seconds = coarse[1][run]
        contiguous = np.all(np.diff(seconds) == 1) and np.all(np.diff(run) == 1)
        blocks.append((f, int(run[0]), int(run[-1]) + 1,
                       slice(int(seconds[0]), int(seconds[-1]) + 1) if contiguous else seconds))
    assert sum(b[2] - b[1] for b in blocks) == coarse.shape[1]  # candidates are grouped by first exponent
    return BasisSetup(method, grid, basis, integral, blood, sqrt_w, vb_fixed, convolver, full, small, coarse,
                      small.tissue.m[coarse[0], coarse[1]], small.tissue.ninv[coarse[0], coarse[1]], blocks, fine,
                      np.where(t.bad[fine[0], fine[1]], -np.inf, 0.0), fine_cols, fine_local,
                      np.ascontiguousarray(mats))


@dataclass(frozen=True, eq=False)
class _Projections:
    """Per-TAC products with a basis (n TACs, X extended exponents), float32 or float64.

    yy: (n,) |y|²; p, z: (n, X) ``b·y`` and ``u·y`` (raw columns); yy_t, p_t, z_t: the same after projecting out
    the blood direction (equal to the raw ones when vB is fixed); vb0: (n,) blood coefficient of y alone.
    """

    yy: np.ndarray
    p: np.ndarray
    z: np.ndarray
    yy_t: np.ndarray
    p_t: np.ndarray
    z_t: np.ndarray
    vb0: np.ndarray

    def rows(self, rows: np.ndarray) -> _Projections:
        return _Projections(*(v[rows] for v in (self.yy, self.p, self.z, self.yy_t, self.p_t, self.z_t, self.vb0)))


def _project(basis: _Basis, y: np.ndarray) -> _Projections:
    """Products of the weighted TACs ``y`` (n, T) (the basis' dtype) with every basis column."""
    p = y @ basis.columns
    yy = np.einsum("nt,nt->n", y, y)
    z = p / basis.raw.r
    if basis.u_blood is None:
        return _Projections(yy, p, z, yy, p, z, np.zeros_like(yy))
    zb = y @ basis.u_blood
    p_t = p - zb[:, None] * basis.gamma
    return _Projections(yy, p, z, yy - zb * zb, p_t, p_t / basis.tissue.r, zb / basis.blood_norm)


def _fine_products(setup: BasisSetup, y: np.ndarray, key: np.ndarray) -> tuple[_Projections, np.ndarray]:
    """Float64 products of weighted TACs ``y`` (n, T) with the fine columns of their coarse candidates ``key`` (n,),
    and the unconstrained scores (n, F) of those fine candidates.

    TACs are grouped by coarse candidate, so each group is one small matrix product; columns:
    ``setup.fine_cols[key]``; score = (u_i·y)² + (v_ij·y)² with the orthonormal tissue directions.
    """
    basis = setup.full
    order = np.argsort(key, kind="stable")
    keys, begins = np.unique(key[order], return_index=True)
    ends = np.append(begins[1:], key.size)
    width, count = setup.fine_cols.shape[1], setup.fine.shape[2]
    p = np.empty((key.size, width))
    score = np.empty((key.size, count))
    for k, begin, end in zip(keys, begins, ends, strict=True):
        rows = order[begin:end]
        product = y[rows] @ setup.fine_mats[k]
        p[rows] = product[:, :width]
        square = product[:, width:]
        square *= square
        score[rows] = square[:, :count] + square[:, count:] + setup.fine_penalty[k]
    return _fine_projections(basis, y, p, setup.fine_cols[key]), score


def _fine_projections(basis: _Basis, y: np.ndarray, p: np.ndarray, cols: np.ndarray) -> _Projections:
    """_Projections from per-TAC column products ``p`` (n, C) with the extended exponents ``cols`` (n, C)."""
    yy = np.einsum("nt,nt->n", y, y)
    z = p / basis.raw.r[cols]
    if basis.u_blood is None:
        return _Projections(yy, p, z, yy, p, z, np.zeros_like(yy))
    zb = y @ basis.u_blood
    p_t = p - zb[:, None] * basis.gamma[cols]
    return _Projections(yy, p, z, yy - zb * zb, p_t, p_t / basis.tissue.r[cols], zb / basis.blood_norm)


def _gather(values: np.ndarray, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[rows, index] for index (n,) or (n, L) (rows (n,))."""
    return values[rows, index] if index.ndim == 1 else values[rows[:, None], index]


def _solve(basis: _Basis, d: _Projections, rows: np.ndarray, local: tuple[np.ndarray, np.ndarray],
           first: np.ndarray, second: np.ndarray, face: bool) -> tuple[np.ndarray, ...]:
    """Least squares at candidates (first, second) of TACs ``rows``: (rss, c_first, c_second, vB, valid).

    local: the candidates' column indices into ``d`` (first, second: into ``basis``). face: the model without
    blood (vB = 0) instead of the full one. Shapes follow ``first`` ((n,) or (n, L)).
    """
    blood = basis.u_blood is not None and not face
    t = basis.tissue if blood else basis.raw
    zi = _gather(d.z_t if blood else d.z, rows, local[0])
    pj = _gather(d.p_t if blood else d.p, rows, local[1])
    m, ninv = t.m[first, second], t.ninv[first, second]
    w = (pj - m * zi) * ninv
    yy = (d.yy_t if blood else d.yy)[rows]
    rss = (yy if first.ndim == 1 else yy[:, None]) - zi * zi - w * w
    c2 = w * ninv
    c1 = (zi - m * c2) / t.r[first]
    valid = (c1 >= 0) & (c2 >= 0) & ~t.bad[first, second]
    if blood:
        vb0 = d.vb0[rows] if first.ndim == 1 else d.vb0[rows][:, None]
        vb = vb0 - basis.beta[first] * c1 - basis.beta[second] * c2
        valid &= (vb >= 0) & (vb < 1)
    else:
        vb = np.zeros_like(c1)
    return rss, c1, c2, vb, valid


def _coarse_scores(setup: BasisSetup, d: _Projections) -> np.ndarray:
    """Unconstrained scores (n, L) of the coarse candidates (float32), one run of shared first exponent at a time.

    score = z_i² + w_ij², w_ij = (p_j - m_ij z_i) / n_ij: no gathers, z_i broadcast over its run; computed
    candidates-first (L, n) so that every operation runs over long contiguous rows.
    """
    n = d.yy.shape[0]
    score = np.empty((n, setup.coarse.shape[1]), dtype=d.p_t.dtype)
    m, ninv = setup.coarse_m[:, None], setup.coarse_ninv[:, None]
    none = setup.small.columns.shape[1] - 1
    part = max(1, _CACHE_BYTES // (4 * setup.coarse.shape[1]))  # TACs per cache-sized piece
    for start in range(0, n, part):
        rows = slice(start, start + part)
        p_t, z_t = np.ascontiguousarray(d.p_t[rows].T), np.ascontiguousarray(d.z_t[rows].T)
        piece = np.empty((setup.coarse.shape[1], p_t.shape[1]), dtype=d.p_t.dtype)
        for first, begin, end, seconds in setup.coarse_blocks:
            out = piece[begin:end]
            p = p_t[seconds]
            if first == none:  # single exponentials: w = z_j
                np.multiply(p, ninv[begin:end], out=out)
                np.multiply(out, out, out=out)
                continue
            z = z_t[first]
            w = m[begin:end] * z
            np.subtract(p, w, out=w)
            w *= ninv[begin:end]
            np.multiply(w, w, out=w)
            np.add(w, z * z, out=out)
        score[rows] = piece.T
    return score


def _search(basis: _Basis, d: _Projections, first: np.ndarray, second: np.ndarray, m: np.ndarray | None,
            ninv: np.ndarray | None, penalty: np.ndarray | None = None,
            local: tuple[np.ndarray, np.ndarray] | None = None, score: np.ndarray | None = None,
            key: np.ndarray | None = None, rounds: int = 6) -> tuple[np.ndarray, ...]:
    """Best physically valid candidate of every TAC among candidates (first, second), (L,) shared by all TACs, or
    (K, L) tables of which TAC r uses row ``key[r]`` (then ``score`` must be given).

    first, second index ``basis``; ``local`` (same shapes) the columns of ``d`` (default: the same).
    m, ninv, penalty: the candidates' tissue tables and 0 / -inf (unusable), broadcastable to (n, L).
    score: the unconstrained scores (n, L) ``|projection of y|²`` if already computed (it is overwritten).
    Branch and bound: the unconstrained residual of a candidate (a few operations per candidate) bounds its valid
    solutions from below, so candidates are checked best-first (full model, else its vB = 0 face) until no unchecked
    one can beat the best valid solution found; TACs still open after ``rounds`` checks are evaluated exhaustively.
    Returns (rss (n,), position (n,) into the candidate list, c (n, 3) = (c_first, c_second, vB), face (n,)).
    """
    n = d.yy.shape[0]
    blood = basis.u_blood is not None
    shared = key is None
    lf, ls = (first, second) if local is None else local
    if score is None:
        zi = d.z_t[:, lf] if shared else np.take_along_axis(d.z_t, lf, 1)
        w = d.p_t[:, ls] if shared else np.take_along_axis(d.p_t, ls, 1)
        w -= m * zi
        w *= ninv
        w *= w
        zi *= zi
        score = zi
        score += w
        if penalty is not None:
            score += penalty
    best_rss = np.full(n, np.inf)
    best_pos = np.zeros(n, dtype=np.intp)
    best_c = np.zeros((n, 3))
    best_face = np.zeros(n, dtype=bool)

    def keep(rows, pos, rss, c1, c2, vb, valid, face):
        better = valid & (rss < best_rss[rows])
        chosen = rows[better]
        best_rss[chosen] = rss[better]
        best_pos[chosen] = pos[better]
        best_c[chosen] = np.stack([c1[better], c2[better], vb[better]], axis=1)
        best_face[chosen] = face

    active = np.arange(n)
    for _ in range(rounds):
        if active.size == 0:
            break
        part = score if active.size == n else score[active]
        pos = np.argmax(part, axis=1)
        top = part[np.arange(active.size), pos]
        go = np.isfinite(top) & (d.yy_t[active] - top < best_rss[active])
        if not go.all():
            active, pos = active[go], pos[go]
        i, j, li, lj = ((a[pos] for a in (first, second, lf, ls)) if shared
                        else (a[key[active], pos] for a in (first, second, lf, ls)))
        rss, c1, c2, vb, valid = _solve(basis, d, active, (li, lj), i, j, False)
        keep(active, pos, rss, c1, c2, vb, valid, False)
        if blood and not valid.all():
            wrong = ~valid
            keep(active[wrong], pos[wrong],
                 *_solve(basis, d, active[wrong], (li[wrong], lj[wrong]), i[wrong], j[wrong], True), True)
        score[active, pos] = -np.inf
        active = active[~valid]
    if active.size:
        top = score[active].max(axis=1)
        active = active[np.isfinite(top) & (d.yy_t[active] - top < best_rss[active])]
    if active.size:
        every = np.broadcast_to(np.arange(score.shape[1]), (active.size, score.shape[1]))
        i, j, li, lj = ((a[every] for a in (first, second, lf, ls)) if shared
                        else (a[key[active]] for a in (first, second, lf, ls)))
        for face in (False, True) if blood else (False,):
            rss, c1, c2, vb, valid = _solve(basis, d, active, (li, lj), i, j, face)
            rss = np.where(valid & np.isfinite(score[active]), rss, np.inf)
            pos = np.argmin(rss, axis=1)
            rows = np.arange(active.size)
            keep(active, pos, rss[rows, pos], c1[rows, pos], c2[rows, pos], vb[rows, pos],
                 np.isfinite(rss[rows, pos]), face)
    return best_rss, best_pos, best_c, best_face


def basis_fit(setup: BasisSetup, tacs: np.ndarray, model: bool = True) -> dict[str, np.ndarray]:
    """Basis-function fit of TACs (n, T) (float64): micro parameters, vB, and a grid-edge/bound flag (n,).

    Coarse search (float32) over every 4th grid exponent, then a fine search (float64) around each TAC's best
    coarse candidate. Both find the least-squares solution among the physically valid ones (c >= 0, 0 <= vB < 1;
    or on the face vB = 0) of their candidates. Returns ``{"K1", "k2", ("k3", "k4"), "vB", "rss", "edge",
    "model"}`` (rss: weighted residual sum of squares of the (vB-corrected) TACs; model: (n, T) fitted frame means
    from the chosen basis curves, only when ``model``); TACs without any valid solution get NaN (model 0).
    """
    y = tacs
    if setup.vb_fixed is not None:
        y = (tacs - setup.vb_fixed * setup.blood) / (1.0 - setup.vb_fixed)
    yw = y * setup.sqrt_w
    n = yw.shape[0]
    scale = np.sqrt(np.maximum(np.einsum("nt,nt->n", yw, yw), 1e-300))  # float32 coarse stage on unit-norm TACs
    coarse = _project(setup.small, (yw / scale[:, None]).astype(np.float32))
    rss, pos, _, _ = _search(setup.small, coarse, setup.coarse[0], setup.coarse[1], setup.coarse_m,
                             setup.coarse_ninv, score=_coarse_scores(setup, coarse))
    found = np.flatnonzero(np.isfinite(rss))
    index = np.full((n, 2), setup.none)
    theta = np.full((n, 3), np.nan)
    face = np.zeros(n, dtype=bool)
    best = np.full(n, np.inf)
    if found.size:
        key = pos[found]
        part, score = _fine_products(setup, yw[found] if found.size < n else yw, key)
        rss_f, pos_f, c, face_f = _search(setup.full, part, setup.fine[0], setup.fine[1], None, None,
                                          local=(setup.fine_local[0], setup.fine_local[1]), score=score, key=key)
        index[found] = np.stack([setup.fine[0][key, pos_f], setup.fine[1][key, pos_f]], axis=1)
        theta[found] = c
        face[found] = face_f
        best[found] = np.maximum(rss_f, 0.0)
    return _to_micro(setup, index, theta, face, best, model)


def _to_micro(setup: BasisSetup, ext: np.ndarray, theta: np.ndarray, face: np.ndarray,
              rss: np.ndarray, model: bool = True) -> dict[str, np.ndarray]:
    """Micro parameters from extended-index candidates ``ext`` (n, 2) and coefficients ``theta`` (n, 3)."""
    single = ext[:, 0] == setup.none
    # back to grid indices: (a, -1) single exponential, (-2, j) a1 = 0, (i, j) pair
    index = np.where(single[:, None], np.stack([ext[:, 1] - 1, np.full(ext.shape[0], -1)], axis=1),
                     np.where(ext == 0, -2, ext - 1))
    theta = theta.copy()
    theta[single, 0], theta[single, 1] = theta[single, 1], 0.0
    grid = np.concatenate([setup.grid, [0.0, np.nan]])  # index -2 -> 0 (a = 0), -1 -> NaN
    last = setup.grid.size - 1
    a_first = grid[index[:, 0]]
    single = index[:, 1] == -1
    a_second = np.where(single, np.inf, grid[index[:, 1]])
    if setup.vb_fixed is None:
        vb = theta[:, 2]
        scale = 1.0 - vb
    else:
        vb = np.full(index.shape[0], setup.vb_fixed)
        scale = np.ones(index.shape[0])
    c1 = theta[:, 0] / scale
    c2 = np.where(single, 0.0, theta[:, 1] / scale)
    method = setup.method
    if method == "1tcm" or single.all():
        micro = {"K1": c1, "k2": a_first}
        if method != "1tcm":
            micro.update({"k3": np.zeros_like(c1)})
            if method == "2tcm":
                micro["k4"] = np.zeros_like(c1)
    else:
        pair_micro = micro_from_macro(method, c1, c2, np.where(single, 0.0, a_first), np.where(single, 1.0, a_second))
        micro = {}
        for name, values in pair_micro.items():
            one = {"K1": c1, "k2": a_first}.get(name, np.zeros_like(c1))
            micro[name] = np.where(single, one, values)
    edge = ((index[:, 0] == 0) | (index[:, 0] == last) | (index[:, 1] == 0) | (index[:, 1] == last)
            | (index[:, 0] == -2) & (method == "2tcm"))
    edge |= (theta[:, 0] <= 0) | (~single & (theta[:, 1] <= 0))
    if setup.vb_fixed is None:
        edge |= face | (vb <= 0)
    ok = np.isfinite(rss)
    for values in micro.values():
        values[~ok] = np.nan
    vb = np.where(ok, vb, np.nan)
    out = {**micro, "vB": vb, "rss": rss, "edge": edge | ~ok}
    if model:
        columns = np.concatenate([setup.basis, setup.integral[None], np.zeros((1, setup.integral.size))])
        safe = np.where(ok[:, None], theta, 0.0)
        tissue = safe[:, :1] * columns[index[:, 0]] + safe[:, 1:2] * columns[index[:, 1]]
        if setup.vb_fixed is None:
            out["model"] = tissue + safe[:, 2:3] * setup.blood
        else:
            out["model"] = (1.0 - setup.vb_fixed) * tissue + setup.vb_fixed * setup.blood
    return out


# ------------------------------------------------------------------------------------------ model curves
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


# -------------------------------------------------------------------------------------- LM refinement
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


def check_method(method: str) -> None:
    if method not in KINETIC_PARAMETERS:
        raise InputError(f"Unknown compartment model '{method}'.", f"Use one of: {', '.join(KINETIC_PARAMETERS)}.")
