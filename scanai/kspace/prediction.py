"""Cross-coil prediction of k-space samples: the kernel fit, the prediction and the least-squares fill."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def acquired_mask(plane: np.ndarray) -> np.ndarray:
    """(ky, kx) bool: samples that hold data in at least one coil of a (coils, ky, kx) plane."""
    return np.any(plane != 0, axis=0)


def _neighbours_at(plane: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(n, 8 * coils): the neighbourhood feature rows of the samples (ys, xs), periodic across the border
    (see :func:`predict`)."""
    ky, kx = plane.shape[1:]
    return np.concatenate([plane[:, (ys + dy) % ky, (xs + dx) % kx].T for dy, dx in _OFFSETS], axis=1)


def fit_kernel(plane: np.ndarray, usable: np.ndarray, max_rows: int | None = None, regularisation: float = 1e-3,
               refit_quantile: float = 0.98) -> np.ndarray:
    """Fit the cross-coil prediction kernel of a (coils, ky, kx) plane; returns (8 * coils, coils) complex64.

    Row ``o * coils + c_in`` of the kernel weighs coil ``c_in`` at neighbour offset ``o`` (see ``_OFFSETS``).
    usable: (ky, kx) bool, samples that may serve as training targets (their whole 3 x 3 neighbourhood must be
    usable too). ``max_rows`` targets at most (evenly strided; default ``max(4096, 12 * n_features)``).
    Tikhonov regularisation: ``regularisation * trace(A^H A) / n_features``. Targets that tower over their own
    neighbourhood, or have such a sample among their neighbours (:func:`_towering`), are left out from the start:
    strong spikes among the features bend the kernel (on a small plane with many coils 20 strong spikes made it
    explain spikes and invent new ones). The fit is then repeated once without the targets whose residual energy
    lies above the ``refit_quantile`` quantile (spikes and their neighbours).
    """
    gram, cross = _normal_equations(plane, usable, max_rows, regularisation, refit_quantile)
    return _regularised_solve(gram, cross, regularisation)


def _normal_equations(plane: np.ndarray, usable: np.ndarray, max_rows: int | None, regularisation: float,
                      refit_quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """(gram, cross) of the kernel fit of :func:`fit_kernel` (complex128, (8 * coils)^2 and (8 * coils, coils))."""
    coils = plane.shape[0]
    n_features = 8 * coils
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(usable, np.ones((3, 3), bool), border_value=0)
    ys, xs = np.nonzero(inner)
    if len(ys) < n_features + 1:
        ys, xs = np.nonzero(usable)
    if len(ys) == 0:
        return np.zeros((n_features, n_features), complex), np.zeros((n_features, coils), complex)
    limit = max_rows or max(4096, 12 * n_features)
    step = max(1, len(ys) // limit)
    ys, xs = ys[::step], xs[::step]
    features = _neighbours_at(plane, ys, xs).astype(np.complex64, copy=False)
    targets = plane[:, ys, xs].T.astype(np.complex64, copy=False)
    calm = ~_towering(features, targets)
    if calm.sum() > n_features:
        features, targets = features[calm], targets[calm]
    adjoint = features.conj().T
    gram = (adjoint @ features).astype(np.complex128)
    cross = (adjoint @ targets).astype(np.complex128)
    kernel = _regularised_solve(gram, cross, regularisation)
    energy = np.sum(np.abs(targets - features @ kernel) ** 2, axis=1)
    worst = energy > np.quantile(energy, refit_quantile)
    if worst.any() and (~worst).sum() > n_features:
        gram -= adjoint[:, worst] @ features[worst]
        cross -= adjoint[:, worst] @ targets[worst]
    return gram, cross


def missing_neighbours(acquired: np.ndarray) -> np.ndarray:
    """(ky, kx) uint8 code of the never-acquired neighbours of every sample: bit ``o`` is set when the neighbour at
    ``_OFFSETS[o]`` (periodic) was not acquired; 0 for a full neighbourhood."""
    code = np.zeros(acquired.shape, dtype=np.uint8)
    for bit, (dy, dx) in enumerate(_OFFSETS):
        code |= (~np.roll(acquired, (-dy, -dx), axis=(0, 1))).astype(np.uint8) << bit
    return code


@dataclass(frozen=True)
class Predictor:
    """Cross-coil prediction of a plane whose acquisition has edges inside k-space (partial Fourier, partial
    echo, undersampling masks).

    kernel: (8 * coils, coils) the kernel of samples whose 8 neighbours were all acquired (:func:`fit_kernel`).
    codes:  (ky, kx) uint8 :func:`missing_neighbours` of the plane.
    edges:  {code: kernel} for the samples beside never-acquired ones: the same least-squares fit restricted to
            the neighbours they have (the rows of the missing ones are zero), so that a zero-filled neighbour is
            not taken for a measured zero and the signal it would have carried is not left in the residual.
    """

    kernel: np.ndarray
    codes: np.ndarray
    edges: dict

    @classmethod
    def fit(cls, plane: np.ndarray, acquired: np.ndarray, regularisation: float = 1e-3, max_patterns: int = 32,
            min_samples: int = 8) -> Predictor:
        """Fit on a (coils, ky, kx) plane; ``acquired`` its :func:`acquired_mask`. Edge kernels are fitted for the
        ``max_patterns`` most frequent neighbourhood codes held by at least ``min_samples`` acquired samples (from
        the full fit's normal equations, so they cost a small solve each); other samples use :attr:`kernel`."""
        coils = plane.shape[0]
        gram, cross = _normal_equations(plane, acquired, None, regularisation, 0.98)
        kernel = _regularised_solve(gram, cross, regularisation)
        codes = missing_neighbours(acquired)
        counts = np.bincount(codes[acquired], minlength=256)
        counts[0] = 0
        edges = {}
        for code in np.argsort(counts)[::-1][:max_patterns]:
            if counts[code] < min_samples:
                break
            present = np.repeat([not (int(code) >> bit) & 1 for bit in range(8)], coils)
            edge = np.zeros_like(kernel)
            if present.any():
                edge[present] = _regularised_solve(gram[np.ix_(present, present)], cross[present], regularisation)
            edges[int(code)] = edge
        return cls(kernel, codes, edges)

    def predict(self, plane: np.ndarray) -> np.ndarray:
        """:func:`predict` of every sample, with the edge kernels beside never-acquired samples."""
        out = predict(plane, self.kernel)
        for code, edge in self.edges.items():
            ys, xs = np.nonzero(self.codes == code)
            out[:, ys, xs] = (_neighbours_at(plane, ys, xs) @ edge).T
        return out

    def predict_at(self, plane: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(n, coils) prediction of the samples (ys, xs), with the edge kernels where they apply."""
        features = _neighbours_at(plane, ys, xs)
        out = features @ self.kernel
        if self.edges:
            codes = self.codes[ys, xs]
            for code in np.intersect1d(codes, list(self.edges)):
                rows = codes == code
                out[rows] = features[rows] @ self.edges[int(code)]
        return out

    def residual_at(self, plane: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(n, coils) complex128 prediction residual of the samples (ys, xs)."""
        return plane[:, ys, xs].T.astype(np.complex128) - self.predict_at(plane, ys, xs)


def _towering(features: np.ndarray, targets: np.ndarray, ratio: float = 100.0) -> np.ndarray:
    """(n,) bool: rows whose target, or one of whose 8 neighbours, holds more than ``ratio`` times the median
    coil-summed energy of the row's 8 neighbours (a strong spike; the noise of one coil exceeds 100 x its local
    median with probability ~1e-30). features: (n, 8 * coils) as in :func:`fit_kernel`; targets: (n, coils)."""
    neighbours = np.sum((features.real ** 2 + features.imag ** 2).reshape(len(features), 8, -1), axis=2)
    level = ratio * np.median(neighbours, axis=1)
    target = np.sum(targets.real ** 2 + targets.imag ** 2, axis=1)
    return (target > level) | (neighbours.max(axis=1) > level)


def _regularised_solve(gram: np.ndarray, cross: np.ndarray, regularisation: float) -> np.ndarray:
    """complex64 solution of (gram + load I) K = cross, load = regularisation * trace(gram) / n (complex128 solve)."""
    n_features = gram.shape[0]
    load = regularisation * max(float(np.trace(gram).real), 1e-30) / n_features
    return np.linalg.solve(gram + load * np.eye(n_features), cross).astype(np.complex64)


def predict(plane: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Prediction of every sample of a (coils, ky, kx) plane from its 8 neighbours in all coils; complex64.

    Neighbours are taken periodically across the border: discrete k-space is periodic (it is the DFT of the
    image), and the coil relations the kernel learns are circular convolutions, so the sample beyond ``-N/2`` is
    the one at ``N/2 - 1``.
    """
    coils, ky, kx = plane.shape
    weights = kernel.astype(np.complex64).reshape(8, coils, coils)  # (offset, c_in, c_out)
    flat = np.ascontiguousarray(plane, dtype=np.complex64).reshape(coils, -1)
    out = np.zeros((coils, ky, kx), dtype=np.complex64)
    for (dy, dx), weight in zip(_OFFSETS, weights, strict=True):
        # weigh every sample as the (dy, dx) neighbour, then move the result to the sample it predicts
        out += np.roll((weight.T @ flat).reshape(coils, ky, kx), (-dy, -dx), axis=(1, 2))
    return out


def predict_at(plane: np.ndarray, kernel: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Prediction of the samples (ys, xs) of a (coils, ky, kx) plane; complex (n, coils)."""
    return _neighbours_at(plane, ys, xs) @ kernel


def fill_by_prediction(plane: np.ndarray, flagged: np.ndarray, kernel: np.ndarray, neighbours: bool = True
                       ) -> np.ndarray:
    """Copy of ``plane`` with the ``flagged`` (ky, kx) samples re-estimated from their neighbours and coils.

    The flagged samples (all coils, jointly) take the values that make the prediction residuals of every sample
    they touch, themselves and their 8 neighbours, as small as possible in the least-squares sense: each value is
    consistent both with what its neighbours predict for it and with what it predicts for its neighbours (the
    SPIRiT idea on a 3 x 3 kernel); never-acquired (all-zero) neighbours do not count. Flagged samples within 2 of
    each other (runs, clusters) share residuals and are solved together. Other samples are untouched.
    ``neighbours=False`` fits only the flagged samples' own residuals: each equals the prediction from its
    neighbours, adjacent flagged ones solved jointly and exactly (what the detector's peeling uses: residuals of
    neighbours that may hold a spike not found yet do not steer the values).
    """
    return fill_in_place(plane.copy(), flagged, kernel, neighbours)


def fill_in_place(out: np.ndarray, flagged: np.ndarray, kernel: np.ndarray, neighbours: bool = True
                  ) -> np.ndarray:
    """:func:`fill_by_prediction` in place: ``out`` itself is filled and returned.

    A flagged sample alone in its group (with only acquired neighbours) has a closed form shared by all
    (:func:`_fill_alone`); every other group is one least-squares problem (:func:`_group_fit`).
    """
    ys, xs = np.nonzero(flagged)
    if len(ys) == 0:
        return out
    ky, kx = flagged.shape
    if neighbours:
        touched = np.unravel_index(_touched_by(ys, xs, flagged.shape), flagged.shape)
        fitted = np.zeros(flagged.shape, dtype=bool)  # never-acquired residuals mean nothing
        fitted[touched] = np.any(out[:, touched[0], touched[1]] != 0, axis=0)
    else:
        fitted = flagged
    group = _groups(flagged, ys, xs)
    alone = np.bincount(group)[group] == 1
    if neighbours:
        for dy, dx in _OFFSETS:
            alone &= fitted[(ys + dy) % ky, (xs + dx) % kx]
    out[:, ys, xs] = 0
    if alone.any():
        values = _fill_alone(out, ys[alone], xs[alone], kernel, neighbours)
        out[:, ys[alone], xs[alone]] = values.T.astype(out.dtype)
    rest = np.flatnonzero(~alone)
    if len(rest):
        order = rest[np.argsort(group[rest], kind="stable")]  # by group, row-major inside each
        for members in np.split(order, np.flatnonzero(np.diff(group[order])) + 1):
            values = _group_fit(out, ys[members], xs[members], fitted, kernel)
            out[:, ys[members], xs[members]] = values.T.astype(out.dtype)
    return out


def _groups(flagged: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(n,) group label of each flagged sample (ys, xs): samples within 2 of each other (Chebyshev, periodic),
    directly or through others, share a label (their 3 x 3 neighbourhoods, whose residuals they move, overlap)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ky, kx = flagged.shape
    position = np.full(flagged.shape, -1, dtype=np.int64)
    position[ys, xs] = np.arange(len(ys))
    first, second = [], []
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            other = position[(ys + dy) % ky, (xs + dx) % kx]
            near = np.flatnonzero(other >= 0)
            first.append(near)
            second.append(other[near])
    links = coo_matrix((np.ones(sum(map(len, first))), (np.concatenate(first), np.concatenate(second))),
                       shape=(len(ys), len(ys)))
    return connected_components(links)[1]


def _fill_alone(zeroed: np.ndarray, ys: np.ndarray, xs: np.ndarray, kernel: np.ndarray, neighbours: bool
                ) -> np.ndarray:
    """(n, coils) least-squares values of isolated flagged samples (ys, xs), already set to zero in ``zeroed``.

    With ``r`` the residuals at zero, the value ``u`` minimises ``|r_p + u|^2 + sum_o |r_(p-o) - W_o^T u|^2``:
    ``u = -(I + sum_o conj(W_o) W_o^T)^-1 (r_p - sum_o conj(W_o) r_(p-o))``; without the ``neighbours`` terms it is
    the prediction ``-r_p``.
    """
    own = _residual_at(zeroed, kernel, ys, xs)
    if not neighbours:
        return -own
    ky, kx = zeroed.shape[1:]
    coils = kernel.shape[1]
    weights = kernel.reshape(8, coils, coils).astype(np.complex128)  # (offset, c_in, c_out)
    normal = np.eye(coils) + np.einsum("oab,ocb->ac", weights.conj(), weights)
    gradient = own
    for (dy, dx), weight in zip(_OFFSETS, weights, strict=True):
        gradient -= _residual_at(zeroed, kernel, (ys - dy) % ky, (xs - dx) % kx) @ weight.conj().T
    return -np.linalg.solve(normal, gradient.T).T


def _residual_at(plane: np.ndarray, kernel: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(n, coils) complex128 prediction residual of the samples (ys, xs)."""
    return plane[:, ys, xs].T.astype(np.complex128) - predict_at(plane, kernel, ys, xs)


#: Unknowns (samples x coils) up to which a group's least-squares problem is solved dense; larger ones go sparse.
_DENSE_UNKNOWNS = 512


def _group_fit(zeroed: np.ndarray, ys: np.ndarray, xs: np.ndarray, fitted: np.ndarray, kernel: np.ndarray
               ) -> np.ndarray:
    """(k, coils) least-squares values of k flagged samples (ys, xs) (in row-major order), zero in ``zeroed``: they
    minimise the prediction residuals of every sample they touch that is ``fitted`` (normal equations; dense for
    small groups, sparse for large ones: a long run or a big cluster)."""
    from scipy.sparse import coo_matrix, identity
    from scipy.sparse.linalg import spsolve

    ky, kx = fitted.shape
    coils = kernel.shape[1]
    members = ys * kx + xs  # flat indices, sorted like np.nonzero
    touched = _touched_by(ys, xs, (ky, kx))
    touched = touched[fitted.ravel()[touched]]
    ty, tx = np.divmod(touched, kx)
    blocks = [((0, 0), np.eye(coils))] + [(offset, -weight.T) for offset, weight in
                                          zip(_OFFSETS, kernel.reshape(8, coils, coils), strict=True)]
    links = []  # (touched sample q, member j, block): the residual at q holds +u(q) and -W_o^T u(q + o)
    for (dy, dx), block in blocks:
        neighbour = ((ty + dy) % ky) * kx + (tx + dx) % kx
        j = np.minimum(np.searchsorted(members, neighbour), len(members) - 1)
        q = np.flatnonzero(members[j] == neighbour)
        links.append((q, j[q], block))
    right = _residual_at(zeroed, kernel, ty, tx).ravel()
    shape = (len(ty) * coils, len(ys) * coils)
    if shape[1] <= _DENSE_UNKNOWNS:
        response = np.zeros((len(ty), coils, len(ys), coils), dtype=np.complex128)  # d residual / d u
        for q, j, block in links:
            response[q, :, j, :] = block
        response = response.reshape(shape)
        adjoint = response.conj().T
        normal = adjoint @ response
        normal[np.diag_indices_from(normal)] += 1e-9 * np.abs(np.diag(normal)).max()  # never singular
        return np.linalg.solve(normal, -(adjoint @ right)).reshape(len(ys), coils)
    c_out, c_in = np.meshgrid(np.arange(coils), np.arange(coils), indexing="ij")
    rows = np.concatenate([(q[:, None, None] * coils + c_out).ravel() for q, _, _ in links])
    columns = np.concatenate([(j[:, None, None] * coils + c_in).ravel() for _, j, _ in links])
    entries = np.concatenate([np.broadcast_to(block, (len(q), coils, coils)).ravel() for q, _, block in links])
    response = coo_matrix((entries.astype(np.complex128), (rows, columns)), shape=shape).tocsr()
    adjoint = response.conj().T.tocsr()
    normal = (adjoint @ response).tocsc()
    normal += identity(shape[1], format="csc") * (1e-9 * abs(normal.diagonal()).max())
    return spsolve(normal, -(adjoint @ right)).reshape(len(ys), coils)


def _touched_by(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sorted flat indices into a ``shape`` plane of the samples (ys, xs) and of every sample that has one of them
    among its 8 neighbours (periodic): the samples whose prediction residual depends on their values."""
    ky, kx = shape
    return np.unique(np.concatenate([((ys - dy) % ky) * kx + (xs - dx) % kx for dy, dx in ((0, 0),) + _OFFSETS]))
