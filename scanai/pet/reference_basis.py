"""SRTM and SRTM2 by basis functions (Gunn et al. 1997), with an optional exact 1-D refinement of k2a per curve.

SRTM (Lammertsma & Hume 1996), operational equation with frame averages::

    C_T = R1 C_R + (k2 - R1 k2a) (C_R ⊗ e^{-k2a t}),      k2a = k2 / (1 + BPnd)

is linear in θ1 = R1 and θ2 = k2 - R1 k2a once θ3 = k2a is fixed. For each exponent θ3 of a grid the basis
curve ``B(θ3) = frame means of C_R ⊗ e^{-θ3 t}`` is computed exactly by :class:`FrameConvolver` from the
reference curve taken as linear between its frame mid-times (0 at the injection, held after the last mid-time),
and the best (θ1, θ2) of every curve follows from one matrix product. SRTM2 (Wu & Carson 2002) fixes k2' = k2/R1
(the reference efflux rate): ``C_T = R1 [C_R + (k2' - k2a) B(k2a)]``, one linear parameter per basis curve.

Variable projection: the residual of the best linear part is a function of θ3 alone, so a golden-section search
of it in ln θ3 between the neighbours of the best grid point (:func:`refine_k2a`) reaches the least-squares optimum
of the nonlinear model (within that bracket) to about 1e-9 relative in θ3. All curves are handled at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.pet.frame_convolution import FrameConvolver
from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming

#: Default grid of k2a (1/min) of the basis functions (Gunn 1997 used 100 log-spaced values).
K2A_GRID_PER_MIN = np.geomspace(0.005, 2.0, 100)
#: Golden-section iterations of the refinement (bracket shrinks by 0.618 each).
_GOLDEN_STEPS = 48
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
#: Bytes of projections computed at once by :func:`grid_fit` (measured: smaller pieces starve a threaded BLAS).
_CACHE_BYTES = 1 << 24


def reference_input(reference: np.ndarray, timing: FrameTiming, unit: str = "") -> InputFunction:
    """The reference curve (T,) of frame means as a continuous curve: linear between the frame mid-times, from 0
    at the injection, held after the last mid-time (the convolution input of SRTM/SRTM2)."""
    return InputFunction(timing.mid_s, np.asarray(reference, dtype=float), unit)


@dataclass(frozen=True, eq=False)
class BasisTables:
    """Weighted SRTM/SRTM2 basis of one reference curve, timing and weights.

    grid:      (G,) k2a values, 1/min.
    ref_w:     (T,) weighted reference frame means ``sqrt(w) C_R``; basis_w (G, T) weighted basis curves.
    k2_ref:    None for SRTM, k2' (1/min) for SRTM2.
    sqrt_w:    (T,) square roots of the frame weights.
    search:    (T, G) unit search directions (SRTM: the basis with the reference direction projected out;
               SRTM2: the normalised columns ``C_R + (k2' - k2a) B``), zero where (nearly) rank-deficient, times
               ``sqrt_w`` once more, so that ``search.T @ C`` projects the weighted curve of unweighted frames C.
    norm:      (G,) the norms of those directions before normalising (inf where unusable).
    m:         (G,) SRTM: ``u · basis_w`` with u the unit weighted reference (0 for SRTM2).
    u_w:       (T,) SRTM: ``sqrt_w u`` (``u_w · C`` is the weighted curve's reference coefficient); 0 for SRTM2.
    """

    grid: np.ndarray
    ref_w: np.ndarray
    basis_w: np.ndarray
    k2_ref: float | None
    sqrt_w: np.ndarray
    search: np.ndarray
    norm: np.ndarray
    m: np.ndarray
    u_w: np.ndarray

    @property
    def ref_norm(self) -> float:
        """Norm of the weighted reference curve."""
        return float(np.sqrt(self.ref_w @ self.ref_w))


def _directions(ref_w: np.ndarray, basis_w: np.ndarray, grid: np.ndarray, k2_ref: float | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unnormalised directions (n, T), norms (n,), m (n,)) of basis curves ``basis_w`` (n, T) with exponents
    ``grid`` (n,): SRTM (``k2_ref`` None) projects the reference out, SRTM2 adds the reference."""
    if k2_ref is None:
        u = ref_w / np.sqrt(ref_w @ ref_w)
        m = basis_w @ u
        directions = basis_w - m[:, None] * u
        scale = np.sqrt(np.einsum("nt,nt->n", basis_w, basis_w))
    else:
        m = np.zeros(grid.size)
        directions = ref_w + (k2_ref - grid)[:, None] * basis_w
        scale = np.sqrt(ref_w @ ref_w) + np.abs(k2_ref - grid) * np.sqrt(np.einsum("nt,nt->n", basis_w, basis_w))
    norm = np.sqrt(np.einsum("nt,nt->n", directions, directions))
    usable = norm > 1e-7 * scale
    return directions, np.where(usable, norm, np.inf), m


def basis_tables(convolver: FrameConvolver, reference: np.ndarray, sqrt_w: np.ndarray, k2_ref: float | None,
                 grid: np.ndarray = K2A_GRID_PER_MIN) -> BasisTables:
    """Tables of :class:`BasisTables` for the reference frame means (T,) and the square roots of the weights (T,)."""
    grid = np.asarray(grid, dtype=float)
    ref_w = np.asarray(reference, dtype=float) * sqrt_w
    basis_w = convolver.frame_means(grid) * sqrt_w
    directions, norm, m = _directions(ref_w, basis_w, grid, k2_ref)
    search = (directions / norm[:, None]).T * sqrt_w[:, None]
    u_w = np.zeros_like(ref_w) if k2_ref is not None else ref_w / np.sqrt(ref_w @ ref_w) * sqrt_w  # u sqrt_w
    return BasisTables(grid, ref_w, basis_w, k2_ref, sqrt_w, np.ascontiguousarray(search), norm, m, u_w)


def _coefficients(tables: BasisTables, a: np.ndarray, energy: np.ndarray, b: np.ndarray, norm: np.ndarray,
                  m: np.ndarray, k2a: np.ndarray) -> dict[str, np.ndarray]:
    """R1, k2, k2a, BPnd, the weighted residual sum of squares ``rss`` and ``energy`` (n,) of weighted TACs from
    their reference coefficient ``a`` (SRTM), squared weighted norm ``energy`` and projection ``b`` on their chosen
    unit direction (norm, m, k2a), all (n,)."""
    a, energy, b = (v.astype(np.float64, copy=False) for v in (a, energy, b))
    theta2 = b / norm
    rss = energy - b * b
    if tables.k2_ref is None:
        r1 = (a - m * theta2) / tables.ref_norm
        k2 = theta2 + r1 * k2a
        rss -= a * a
    else:
        r1 = theta2
        k2 = r1 * tables.k2_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = k2 / k2a - 1.0
    return {"R1": r1, "k2": k2, "k2a": k2a, "BPnd": bp, "rss": np.maximum(rss, 0.0), "energy": energy}


def grid_fit(tables: BasisTables, frames: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Best basis curve of each TAC, given frames-first (T, n) unweighted (float32 or float64, any strides):
    (parameters (n,), grid index (n,)).

    The best curve maximises the squared projection ``(y_w · direction)²`` (= the least residual): one matrix
    product and its row maximum and minimum, in the data's precision, in pieces of bounded size (weights are folded
    into the directions, so the data are never copied); the coefficients in float64.
    """
    dtype = frames.dtype
    search = tables.search.astype(dtype, copy=False)
    n, size = frames.shape[1], search.shape[1]
    index, b = np.empty(n, dtype=np.intp), np.empty(n, dtype=dtype)
    part = max(1, _CACHE_BYTES // (size * frames.itemsize))
    buffer = np.empty((min(part, n), size), dtype=dtype)
    for start in range(0, n, part):  # pieces: bounded memory, the projections read soon after they are written
        stop = min(start + part, n)
        projection = np.matmul(frames[:, start:stop].T, search, out=buffer[:stop - start])
        high, low = np.argmax(projection, axis=1), np.argmin(projection, axis=1)  # the largest |projection|
        b_high = np.take_along_axis(projection, high[:, None], 1)[:, 0]
        b_low = np.take_along_axis(projection, low[:, None], 1)[:, 0]
        positive = b_high >= -b_low
        index[start:stop] = np.where(positive, high, low)
        b[start:stop] = np.where(positive, b_high, b_low)
    a = tables.u_w.astype(dtype) @ frames
    energy = (tables.sqrt_w**2).astype(dtype) @ np.square(frames)
    return _coefficients(tables, a, energy, b, tables.norm[index], tables.m[index], tables.grid[index]), index


def _scores(tables: BasisTables, convolver: FrameConvolver, y_w: np.ndarray,
            k2a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(score, projection b, norm, m) of each weighted TAC y_w (n, T) at its own k2a (n,), from exact basis curves."""
    basis_w = convolver.frame_means(k2a) * tables.sqrt_w
    directions, norm, m = _directions(tables.ref_w, basis_w, k2a, tables.k2_ref)
    b = np.einsum("nt,nt->n", y_w, directions) / norm
    return b * b, b, norm, m


def refine_k2a(tables: BasisTables, convolver: FrameConvolver, rows: np.ndarray,
               index: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Golden-section search of k2a in ln k2a between the grid neighbours of each TAC's best grid point ``index``
    (n,), TACs ``rows`` (n, T) float64; returns (parameters (n,), on_edge (n,): the optimum is at a grid end)."""
    y_w = rows * tables.sqrt_w
    log_grid = np.log(tables.grid)
    last = tables.grid.size - 1
    low, high = log_grid[np.maximum(index - 1, 0)], log_grid[np.minimum(index + 1, last)]
    c, d = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    fc = _scores(tables, convolver, y_w, np.exp(c))[0]
    fd = _scores(tables, convolver, y_w, np.exp(d))[0]
    for _ in range(_GOLDEN_STEPS):
        left = fc > fd  # the maximum lies in [low, d]
        high = np.where(left, d, high)
        low = np.where(left, low, c)
        new = np.where(left, high - _GOLDEN * (high - low), low + _GOLDEN * (high - low))
        fn = _scores(tables, convolver, y_w, np.exp(new))[0]
        c, d, fc, fd = (np.where(left, new, d), np.where(left, c, new), np.where(left, fn, fd),
                        np.where(left, fc, fn))
    best = np.exp(0.5 * (low + high))
    grid_k2a = tables.grid[index]
    score, b, norm, m = _scores(tables, convolver, y_w, best)
    grid_score, grid_b, grid_norm, grid_m = _scores(tables, convolver, y_w, grid_k2a)
    worse = ~(score >= grid_score)  # keep the grid point where the bracket held nothing better (non-unimodal)
    k2a = np.where(worse, grid_k2a, best)
    b, norm, m = (np.where(worse, g, v) for g, v in ((grid_b, b), (grid_norm, norm), (grid_m, m)))
    span = log_grid[1] - log_grid[0]
    edge = (np.log(k2a) <= log_grid[0] + 1e-6 * span) | (np.log(k2a) >= log_grid[-1] - 1e-6 * span)
    a = rows @ tables.u_w
    energy = np.einsum("nt,nt->n", y_w, y_w)
    return _coefficients(tables, a, energy, b, norm, m, k2a), edge


def predict(convolver: FrameConvolver, reference: np.ndarray, parameters: dict[str, np.ndarray]) -> np.ndarray:
    """Model frame means (n, T): ``R1 C_R + (k2 - R1 k2a) B(k2a)`` (NaN parameters give NaN)."""
    k2a = parameters["k2a"]
    ok = np.isfinite(k2a) & (k2a > 0)
    basis = convolver.frame_means(np.where(ok, k2a, 1.0))
    r1, k2 = parameters["R1"], parameters["k2"]
    model = r1[:, None] * reference[None] + (k2 - r1 * k2a)[:, None] * basis
    return np.where(ok[:, None], model, np.nan)


def build_convolver(reference: np.ndarray, timing: FrameTiming) -> FrameConvolver:
    """Exact frame-averaged convolutions with the reference curve of :func:`reference_input`."""
    return FrameConvolver.build(reference_input(reference, timing), timing)
