"""The fast basis-function fit of the compartment models (coarse then fine best-first search over exponent pairs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.pet.frame_convolution import FrameConvolver
from scanai.pet.input_function import InputFunction
from scanai.pet.kinetic_parameters import micro_from_macro
from scanai.pet.timing import FrameTiming

#: Exponent grid (1/min) of the basis functions: 1TCM k2 and irreversible k2 + k3 (fine, 1-D searches).
GRID_1D_PER_MIN = np.geomspace(1e-3, 5.0, 161)
#: Fine exponent grid for the reversible 2TCM pair search; the coarse stage uses every 4th value.
GRID_PAIRS_PER_MIN = np.geomspace(1e-3, 5.0, 73)
#: Working-set size (bytes) of the coarse candidate scores processed at once (about the L2 cache; measured best).
_CACHE_BYTES = 1 << 22


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
