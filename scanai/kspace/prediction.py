"""Cross-coil prediction of k-space samples: the kernel fit, the prediction and the least-squares fill."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Neighbour offsets (dy, dx) of a prediction kernel, in the order of its rows.
Offsets = tuple[tuple[int, int], ...]


@functools.cache
def stencil(radius: int) -> Offsets:
    """The neighbour offsets (dy, dx) of a (2 radius + 1)^2 square about a sample, the sample left out, row-major
    (so that ``offsets[m - 1 - i] == -offsets[i]``)."""
    span = range(-radius, radius + 1)
    return tuple((dy, dx) for dy in span for dx in span if (dy, dx) != (0, 0))


#: The 3 x 3 neighbourhood: the kernel of multi-coil planes.
_OFFSETS = stencil(1)


def radius_of(offsets: Offsets) -> int:
    """The radius of a :func:`stencil`."""
    return offsets[-1][0]


def offsets_of(kernel: np.ndarray) -> Offsets:
    """The :func:`stencil` a (m * coils, coils) prediction kernel was fitted on (m = 8: 3 x 3, 24: 5 x 5, ...)."""
    count = kernel.shape[0] // kernel.shape[1]
    return stencil((int(np.sqrt(count + 1)) - 1) // 2)


def acquired_mask(plane: np.ndarray) -> np.ndarray:
    """(ky, kx) bool: samples that hold data in at least one coil of a (coils, ky, kx) plane."""
    return np.any(plane != 0, axis=0)


def _neighbours_at(plane: np.ndarray, ys: np.ndarray, xs: np.ndarray, offsets: Offsets = _OFFSETS) -> np.ndarray:
    """(n, m * coils): the neighbourhood feature rows of the samples (ys, xs) over the m ``offsets``, periodic
    across the border (see :func:`predict`)."""
    ky, kx = plane.shape[1:]
    return np.concatenate([plane[:, (ys + dy) % ky, (xs + dx) % kx].T for dy, dx in offsets], axis=1)


def fit_kernel(plane: np.ndarray, usable: np.ndarray, max_rows: int | None = None, regularisation: float = 1e-3,
               refit_quantile: float = 0.98, radius: int = 1) -> np.ndarray:
    """Fit the cross-coil prediction kernel of a (coils, ky, kx) plane; returns (m * coils, coils) complex64 over
    the m offsets of ``stencil(radius)``.

    Row ``o * coils + c_in`` of the kernel weighs coil ``c_in`` at neighbour offset ``o`` (see :func:`stencil`).
    usable: (ky, kx) bool, samples that may serve as training targets (their whole neighbourhood must be
    usable too). ``max_rows`` targets at most (evenly strided; default ``max(4096, 12 * n_features)``).
    Tikhonov regularisation: ``regularisation * trace(A^H A) / n_features``. Targets that tower over their own
    neighbourhood, or have such a sample among their neighbours (:func:`_towering`), are left out from the start:
    strong spikes among the features bend the kernel (on a small plane with many coils 20 strong spikes made it
    explain spikes and invent new ones). The fit is then repeated once without the targets whose residual energy
    lies above the ``refit_quantile`` quantile (spikes and their neighbours).
    """
    gram, cross, regularisation = _normal_equations(plane, usable, max_rows, regularisation, refit_quantile,
                                                    stencil(radius))
    return _regularised_solve(gram, cross, regularisation)


#: Planes of this many coils are predicted from a 5 x 5 neighbourhood instead of 3 x 3. With two coils the cross-
#: coil relations explain little, and the wider support recovers much of the k-space structure: the residual near
#: DC falls from 19 to 3.7 times the plane's median on gre.dat, and 3-5 sigma sensitivity rises 0.81 -> 0.92 there,
#: 0.87-0.92 -> 0.92-0.95 on 164120. On one coil it lost cluster members beside strong spikes (se_t1 >= 5 sigma
#: 0.905 -> 0.865: a spike enters 24 predictions, whose joint re-estimation the peeling does to first order only);
#: with many coils the 3 x 3 residual is already near the noise (1.1-1.7x near DC) and the cost would grow 9-fold.
WIDE_KERNEL_COILS = (2,)


def kernel_radius(coils: int) -> int:
    """Neighbourhood radius of the prediction kernel of a plane of ``coils`` coils (:data:`WIDE_KERNEL_COILS`)."""
    return 2 if coils in WIDE_KERNEL_COILS else 1


#: The detector's :class:`Predictor`: fewest fitted targets per kernel coefficient at which the Tikhonov load is
#: ``regularisation`` alone; with fewer the load stays that of this many targets (a prior of fixed strength instead
#: of one that shrinks with the data). Every fully sampled plane has more (13-85 per coefficient on the shared
#: files); a 32-coil 64^2 plane at R = 2 has 3.6 (its kernel rests on the inner lines of the calibration block):
#: 7 false detections beside strong spikes at the block's edges with the plain load, 3 with this rule. Measured, not
#: derived: the load that predicts best there (generalised cross-validation) is weaker, 1e-4, and gave 10; the
#: kernel's squared weights shrink only 12 %. The correction's :func:`fit_kernel` keeps the plain load: its
#: re-estimates were poorer with it (lowest PSNR 63.5 -> 62.2 dB there).
MIN_TARGETS_PER_COEFFICIENT = 10


def _normal_equations(plane: np.ndarray, usable: np.ndarray, max_rows: int | None, regularisation: float,
                      refit_quantile: float, offsets: Offsets = _OFFSETS, min_targets: float = 0.0
                      ) -> tuple[np.ndarray, np.ndarray, float]:
    """(gram, cross, regularisation) of the kernel fit of :func:`fit_kernel` over ``offsets`` (complex128,
    (m * coils)^2 and (m * coils, coils)), and the relative Tikhonov load to solve them with: ``regularisation``,
    raised by ``min_targets * n_features / targets`` where there are fewer than ``min_targets`` targets per
    coefficient (:data:`MIN_TARGETS_PER_COEFFICIENT`)."""
    coils = plane.shape[0]
    n_features = len(offsets) * coils
    from scipy.ndimage import binary_erosion

    span = 2 * radius_of(offsets) + 1
    inner = binary_erosion(usable, np.ones((span, span), bool), border_value=0)
    ys, xs = np.nonzero(inner)
    if len(ys) < n_features + 1:
        ys, xs = np.nonzero(usable)
    if len(ys) == 0:
        return np.zeros((n_features, n_features), complex), np.zeros((n_features, coils), complex), regularisation
    limit = max_rows or max(4096, 12 * n_features)
    step = max(1, len(ys) // limit)
    ys, xs = ys[::step], xs[::step]
    features = _neighbours_at(plane, ys, xs, offsets).astype(np.complex64, copy=False)
    targets = plane[:, ys, xs].T.astype(np.complex64, copy=False)
    calm = ~_towering(features, targets)
    if calm.sum() > n_features:
        features, targets = features[calm], targets[calm]
    regularisation *= max(1.0, min_targets * n_features / len(features))
    adjoint = features.conj().T
    gram = (adjoint @ features).astype(np.complex128)
    cross = (adjoint @ targets).astype(np.complex128)
    kernel = _regularised_solve(gram, cross, regularisation)
    energy = np.sum(np.abs(targets - features @ kernel) ** 2, axis=1)
    worst = energy > np.quantile(energy, refit_quantile)
    if worst.any() and (~worst).sum() > n_features:
        gram -= adjoint[:, worst] @ features[worst]
        cross -= adjoint[:, worst] @ targets[worst]
    return gram, cross, regularisation


def missing_neighbours(acquired: np.ndarray, offsets: Offsets = _OFFSETS) -> np.ndarray:
    """(ky, kx) uint64 code of the never-acquired neighbours of every sample: bit ``o`` is set when the neighbour at
    ``offsets[o]`` (periodic) was not acquired; 0 for a full neighbourhood."""
    code = np.zeros(acquired.shape, dtype=np.uint64)
    for bit, (dy, dx) in enumerate(offsets):
        code |= (~np.roll(acquired, (-dy, -dx), axis=(0, 1))).astype(np.uint64) << np.uint64(bit)
    return code


@dataclass(frozen=True)
class Predictor:
    """Cross-coil prediction of a plane whose acquisition has edges inside k-space (partial Fourier, partial
    echo, undersampling masks).

    kernel: (m * coils, coils) the kernel of samples whose m neighbours (:func:`offsets_of`) were all acquired
            (:func:`fit_kernel`).
    codes:  (ky, kx) uint64 :func:`missing_neighbours` of the plane over the same m offsets.
    edges:  {code: kernel} for the samples beside never-acquired ones: the same least-squares fit restricted to
            the neighbours they have (the rows of the missing ones are zero), so that a zero-filled neighbour is
            not taken for a measured zero and the signal it would have carried is not left in the residual.
    """

    kernel: np.ndarray
    codes: np.ndarray
    edges: dict

    @classmethod
    def fit(cls, plane: np.ndarray, acquired: np.ndarray, regularisation: float = 1e-3, max_patterns: int = 32,
            min_samples: int = 8, radius: int | None = None) -> Predictor:
        """Fit on a (coils, ky, kx) plane; ``acquired`` its :func:`acquired_mask`; the neighbourhood's ``radius``
        defaults to :func:`kernel_radius`. Edge kernels are fitted for the ``max_patterns`` most frequent
        neighbourhood codes held by at least ``min_samples`` acquired samples (from the full fit's normal equations,
        so they cost a small solve each); other samples use :attr:`kernel`."""
        coils = plane.shape[0]
        offsets = stencil(kernel_radius(coils) if radius is None else radius)
        gram, cross, regularisation = _normal_equations(plane, acquired, None, regularisation, 0.98, offsets,
                                                        MIN_TARGETS_PER_COEFFICIENT)
        kernel = _regularised_solve(gram, cross, regularisation)
        codes = missing_neighbours(acquired, offsets)
        found, counts = np.unique(codes[acquired & (codes > 0)], return_counts=True)
        edges = {}
        for index in np.argsort(counts)[::-1][:max_patterns]:
            code = int(found[index])
            if counts[index] < min_samples:
                break
            present = np.repeat([not (code >> bit) & 1 for bit in range(len(offsets))], coils)
            edge = np.zeros_like(kernel)
            if present.any():
                edge[present] = _regularised_solve(gram[np.ix_(present, present)], cross[present], regularisation)
            edges[code] = edge
        return cls(kernel, codes, edges)

    @property
    def offsets(self) -> Offsets:
        """The neighbour offsets of :attr:`kernel`."""
        return offsets_of(self.kernel)

    def predict(self, plane: np.ndarray) -> np.ndarray:
        """:func:`predict` of every sample, with the edge kernels beside never-acquired samples."""
        out = predict(plane, self.kernel)
        for code, edge in self.edges.items():
            ys, xs = np.nonzero(self.codes == code)
            out[:, ys, xs] = (_neighbours_at(plane, ys, xs, self.offsets) @ edge).T
        return out

    def predict_at(self, plane: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(n, coils) prediction of the samples (ys, xs), with the edge kernels where they apply."""
        features = _neighbours_at(plane, ys, xs, self.offsets)
        out = features @ self.kernel
        if self.edges:
            codes = self.codes[ys, xs]
            for code in np.intersect1d(codes, np.array(list(self.edges), dtype=np.uint64)):
                rows = codes == code
                out[rows] = features[rows] @ self.edges[int(code)]
        return out

    def residual_at(self, plane: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(n, coils) complex128 prediction residual of the samples (ys, xs)."""
        return plane[:, ys, xs].T.astype(np.complex128) - self.predict_at(plane, ys, xs)

    def fill(self, plane: np.ndarray, flagged: np.ndarray, neighbours: bool = True) -> np.ndarray:
        """:func:`fill_in_place` of the ``flagged`` samples of a (coils, ky, kx) ``plane`` with :attr:`kernel`, then
        beside never-acquired samples the prediction from the neighbours they have (the edge kernels); in place,
        ``plane`` returned."""
        fill_in_place(plane, flagged, self.kernel, neighbours)
        ys, xs = np.nonzero(flagged & (self.codes > 0))
        if len(ys):
            plane[:, ys, xs] = self.predict_at(plane, ys, xs).T
        return plane


def _towering(features: np.ndarray, targets: np.ndarray, ratio: float = 100.0) -> np.ndarray:
    """(n,) bool: rows whose target, or one of whose neighbours, holds more than ``ratio`` times the median
    coil-summed energy of the row's neighbours (a strong spike; the noise of one coil exceeds 100 x its local median
    with probability ~1e-30). features: (n, m * coils) as in :func:`fit_kernel` (m neighbours); targets:
    (n, coils)."""
    count = features.shape[1] // targets.shape[1]
    neighbours = np.sum((features.real ** 2 + features.imag ** 2).reshape(len(features), count, -1), axis=2)
    level = ratio * np.median(neighbours, axis=1)
    target = np.sum(targets.real ** 2 + targets.imag ** 2, axis=1)
    return (target > level) | (neighbours.max(axis=1) > level)


def _regularised_solve(gram: np.ndarray, cross: np.ndarray, regularisation: float) -> np.ndarray:
    """complex64 solution of (gram + load I) K = cross, load = regularisation * trace(gram) / n (complex128 solve)."""
    n_features = gram.shape[0]
    load = regularisation * max(float(np.trace(gram).real), 1e-30) / n_features
    return np.linalg.solve(gram + load * np.eye(n_features), cross).astype(np.complex64)


def predict(plane: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Prediction of every sample of a (coils, ky, kx) plane from its neighbours (:func:`offsets_of` the kernel) in
    all coils; complex64.

    Neighbours are taken periodically across the border: discrete k-space is periodic (it is the DFT of the
    image), and the coil relations the kernel learns are circular convolutions, so the sample beyond ``-N/2`` is
    the one at ``N/2 - 1``.
    """
    coils, ky, kx = plane.shape
    offsets = offsets_of(kernel)
    weights = kernel.astype(np.complex64).reshape(len(offsets), coils, coils)  # (offset, c_in, c_out)
    flat = np.ascontiguousarray(plane, dtype=np.complex64).reshape(coils, -1)
    out = np.zeros((coils, ky, kx), dtype=np.complex64)
    for (dy, dx), weight in zip(offsets, weights, strict=True):
        # weigh every sample as the (dy, dx) neighbour, then move the result to the sample it predicts
        out += np.roll((weight.T @ flat).reshape(coils, ky, kx), (-dy, -dx), axis=(1, 2))
    return out


def predict_at(plane: np.ndarray, kernel: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Prediction of the samples (ys, xs) of a (coils, ky, kx) plane; complex (n, coils)."""
    return _neighbours_at(plane, ys, xs, offsets_of(kernel)) @ kernel


def fill_by_prediction(plane: np.ndarray, flagged: np.ndarray, kernel: np.ndarray, neighbours: bool = True
                       ) -> np.ndarray:
    """Copy of ``plane`` with the ``flagged`` (ky, kx) samples re-estimated from their neighbours and coils.

    The flagged samples (all coils, jointly) take the values that make the prediction residuals of every sample
    they touch, themselves and their neighbours, as small as possible in the least-squares sense: each value is
    consistent both with what its neighbours predict for it and with what it predicts for its neighbours (the
    SPIRiT idea on the kernel's neighbourhood); never-acquired (all-zero) neighbours do not count. Flagged samples
    within twice the kernel's radius of each other (runs, clusters) share residuals and are solved together. Other
    samples are untouched.
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
    offsets = offsets_of(kernel)
    if neighbours:
        touched = np.unravel_index(_touched_by(ys, xs, flagged.shape, offsets), flagged.shape)
        fitted = np.zeros(flagged.shape, dtype=bool)  # never-acquired residuals mean nothing
        fitted[touched] = np.any(out[:, touched[0], touched[1]] != 0, axis=0)
    else:
        fitted = flagged
    group = _groups(flagged, ys, xs, 2 * radius_of(offsets))
    alone = np.bincount(group)[group] == 1
    if neighbours:
        for dy, dx in offsets:
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


def _groups(flagged: np.ndarray, ys: np.ndarray, xs: np.ndarray, reach: int = 2) -> np.ndarray:
    """(n,) group label of each flagged sample (ys, xs): samples within ``reach`` of each other (Chebyshev,
    periodic), directly or through others, share a label (with ``reach`` twice the kernel's radius their
    neighbourhoods, whose residuals they move, overlap)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ky, kx = flagged.shape
    position = np.full(flagged.shape, -1, dtype=np.int64)
    position[ys, xs] = np.arange(len(ys))
    first, second = [], []
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
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
    offsets = offsets_of(kernel)
    weights = kernel.reshape(len(offsets), coils, coils).astype(np.complex128)  # (offset, c_in, c_out)
    normal = np.eye(coils) + np.einsum("oab,ocb->ac", weights.conj(), weights)
    gradient = own
    for (dy, dx), weight in zip(offsets, weights, strict=True):
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
    offsets = offsets_of(kernel)
    touched = _touched_by(ys, xs, (ky, kx), offsets)
    touched = touched[fitted.ravel()[touched]]
    ty, tx = np.divmod(touched, kx)
    blocks = [((0, 0), np.eye(coils))] + [(offset, -weight.T) for offset, weight in
                                          zip(offsets, kernel.reshape(len(offsets), coils, coils), strict=True)]
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


def _touched_by(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], offsets: Offsets = _OFFSETS) -> np.ndarray:
    """Sorted flat indices into a ``shape`` plane of the samples (ys, xs) and of every sample that has one of them
    among its neighbours at ``offsets`` (periodic): the samples whose prediction residual depends on their values."""
    ky, kx = shape
    return np.unique(np.concatenate([((ys - dy) % ky) * kx + (xs - dx) % kx for dy, dx in ((0, 0),) + offsets]))
