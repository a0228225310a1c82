"""Classical spike detector: the patent's patch pipeline with statistics in place of trained models.

Per slice (a (coils, ky, kx) plane of centred k-space):

1. **Cross-coil prediction.** A small shift-invariant kernel (GRAPPA-like, 3 x 3 neighbourhood of every coil,
   the centre sample left out) is fitted by regularised least squares to predict each coil's sample from its
   neighbours; the fit is repeated once without the samples it explains worst, so spikes do not bend it.
   Multi-coil k-space is highly predictable this way, a spike is not: the *prediction residual* removes most of
   the true signal (10-1000x in power on the shared scanner files) and keeps the spike. This is how cross-coil
   consistency enters: a sample is suspicious when it disagrees with what its neighbours in every coil say.
2. **Whitened residual energy** ``E = sum_c |r_c|^2 / sigma_c^2`` (``sigma_c^2`` the median residual power of
   coil ``c``) and its **local contrast** ``D = log(E / B)``, ``B`` the largest of three median filters that
   leave the sample out (a 5 x 5 square, a 1 x 15 readout line, a 9 x 1 phase-encoding line; periodic across
   the border, like the prediction): ridges of k-space along either axis do not stand out. A spike also leaks
   into the prediction residual of its 8 neighbours, which raises ``B`` around runs and clusters; so once the
   first spikes are found and replaced by their prediction, ``B`` and the patch statistics are computed again and
   the search repeats (two passes).
3. **Per-patch robust z** over the patent's :class:`~scanai.kspace.patches.PatchGrid`:
   ``z = (D - median_patch D) / (1.4826 MAD_patch D)``.
4. **Peeling.** A sample is flagged when ``z`` and ``D`` both exceed the thresholds set by ``sensitivity`` and it
   is the largest residual of its 3 x 3 neighbourhood; its value is then replaced by its prediction and the
   residuals of its neighbours recomputed, and the search repeats, so that a strong spike's leakage into the
   predictions of its neighbours is never mistaken for more spikes while adjacent spikes (runs, clusters) are
   found one after the other. A weak spike next to a strong one is partly explained by the strong one's
   replacement (which was predicted from it), so the neighbours of flagged samples are also scored as if they were
   re-estimated together with them.
5. **Centre protection.** Samples within ``centre_radius`` of DC are never flagged (DC is never modified);
   samples within ``centre_zone`` of DC need ``centre_factor`` times the thresholds (patent cl. 8-9).
   Samples that were never acquired (zero in every coil) are left out of every statistic and never flagged.

:func:`localise` runs steps 1-5 restricted to given target patches with lower thresholds, for a patch-level
classifier (the network path) that already decided which patches hold spikes.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.kspace.patches import DEFAULT_PATCH_SIZE, PatchGrid

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


@functools.cache
def _workers() -> ThreadPoolExecutor:
    """Two threads for the NumPy work that releases the GIL (partitions): the detector's medians run on both
    cores of a small machine."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="scanai-kspace")


def _ring(shape: tuple[int, int], hole: tuple[int, int]) -> np.ndarray:
    """Footprint of ``shape`` with a centred ``hole`` left out."""
    footprint = np.ones(shape, dtype=bool)
    top, left = (shape[0] - hole[0]) // 2, (shape[1] - hole[1]) // 2
    footprint[top:top + hole[0], left:left + hole[1]] = False
    return footprint


# Background footprints: a 5 x 5 square, a 1 x 15 readout line and a 9 x 1 phase-encoding line, the sample left out.
_FOOTPRINTS = (_ring((5, 5), (1, 1)), _ring((1, 15), (1, 1)), _ring((9, 1), (1, 1)))


@dataclass(frozen=True)
class Thresholds:
    """Decision levels of the detector, as significances ``-log10 p`` under the patch's noise-only model.

    strict:        level a sample must exceed in a slice that shows no sure spike (clean-looking data).
    relaxed:       level used once the slice holds at least one sure spike (the patent's soft gate, L468-L470,
                   the other way round: a clean-looking slice gets the raised level, a corrupted one the normal).
    sure:          a sample above this level makes the slice "corrupted".
    log_ratio:     minimum log contrast ``log(E / B)`` of any flagged sample.
    centre_factor: the levels are multiplied by this in the centre zone and on the outermost k-space rows and
                   columns (patent cl. 8-9: a higher threshold where the data are easily misjudged).
    ring_factor, ring_log_ratio: the much higher level and minimum contrast (100x the local residual level) in the
                   ring between the untouchable core (1.5 samples around DC and the k-space peak) and
                   ``centre_radius``: only a spike that towers over the central signal is flagged there.
    """

    strict: float
    relaxed: float
    sure: float
    log_ratio: float = float(np.log(2.0))
    centre_factor: float = 2.0
    ring_factor: float = 4.0
    ring_log_ratio: float = float(np.log(100.0))

    @classmethod
    def from_sensitivity(cls, sensitivity: float, relaxed: bool = False) -> Thresholds:
        """Thresholds for a ``sensitivity`` in (0, 1] (0.5 = the tuned default; higher finds weaker spikes but
        risks false detections on clean data). ``relaxed``: the levels for patches a classifier already flagged
        (the relaxed level everywhere)."""
        if not (np.isfinite(sensitivity) and 0.0 < sensitivity <= 1.0):
            raise InputError(f"The detection sensitivity must be a number in (0, 1], got {sensitivity}.",
                             "Use 0.5 (the default) and raise it towards 1 only to find weaker spikes.")
        strict = 13.0 - 8.0 * float(sensitivity)
        relaxed_level = strict - 3.5
        if relaxed:
            return cls(relaxed_level, relaxed_level, relaxed_level)
        return cls(strict, relaxed_level, strict + 3.0)


@dataclass(frozen=True)
class SliceDetection:
    """What the classical detector finds on one (coils, ky, kx) plane.

    mask:           (ky, kx) bool, True at each flagged sample.
    patch_scores:   (P,) highest robust z of any sample in each patch (0 where nothing was acquired).
    target_patches: (P,) bool, True for patches holding at least one flagged sample.
    z:              (ky, kx) float32 robust z of every sample (after peeling; -inf where not acquired).
    log_ratio:      (ky, kx) float32 log contrast ``log(E / B)`` of every sample.
    kernel:         (8 * coils, coils) the cross-coil prediction kernel fitted on this plane (reusable for the
                    "grappa" correction).
    """

    mask: np.ndarray
    patch_scores: np.ndarray
    target_patches: np.ndarray
    z: np.ndarray
    log_ratio: np.ndarray
    kernel: np.ndarray


# ----------------------------------------------------------------------------------------------- helpers


def acquired_mask(plane: np.ndarray) -> np.ndarray:
    """(ky, kx) bool: samples that hold data in at least one coil of a (coils, ky, kx) plane."""
    return np.any(plane != 0, axis=0)


def centre_distance(shape: tuple[int, int]) -> np.ndarray:
    """(ky, kx) float32 distance in samples of every sample from DC at (ky // 2, kx // 2)."""
    ky, kx = np.ogrid[: shape[0], : shape[1]]
    return np.hypot(ky - shape[0] // 2, kx - shape[1] // 2).astype(np.float32)


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
    coils = plane.shape[0]
    n_features = 8 * coils
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(usable, np.ones((3, 3), bool), border_value=0)
    ys, xs = np.nonzero(inner)
    if len(ys) < n_features + 1:
        ys, xs = np.nonzero(usable)
    if len(ys) == 0:
        return np.zeros((n_features, coils), dtype=np.complex64)
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
        kernel = _regularised_solve(gram, cross, regularisation)
    return kernel


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


def _dof_from_log_spread(spread: np.ndarray) -> np.ndarray:
    """Coil-equivalent degrees of freedom ``k`` whose Gamma(k) log-spread is ``spread`` (``trigamma(k) = s^2``).

    The standard deviation of the log of a Gamma(k) variable is ``sqrt(trigamma(k))``: 1.28 for one coil
    (exponential), shrinking like ``1 / sqrt(k)``. Structure left in the residual widens the spread, lowers ``k``
    and so makes the detector more cautious there. Clipped to [0.5, 256].
    """
    from scipy.special import polygamma

    target = np.maximum(np.asarray(spread, dtype=np.float64), 1e-3) ** 2
    dof = 1.0 / target + 0.5
    for _ in range(30):
        dof = np.clip(dof - (polygamma(1, dof) - target) / polygamma(2, dof), 0.25, 1e4)
    return np.clip(dof, 0.5, 256.0)


def _half_level(dof: np.ndarray) -> np.ndarray:
    """Median of a Gamma(k, 1/k) variable for ``k = dof`` (given as float32, the statistic's precision), float64."""
    from scipy.special import gammaincinv

    dof = np.asarray(dof, dtype=np.float32)
    return gammaincinv(dof, 0.5) / dof


def _fill_unacquired(values: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """``values`` with every not-acquired sample set to the value of the nearest acquired one."""
    if acquired.all():
        return values
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(~acquired, return_indices=True)
    return values[iy, ix]


#: Half extents (rows, columns) of the union of the background footprints.
_REACH = (max(f.shape[0] for f in _FOOTPRINTS) // 2, max(f.shape[1] for f in _FOOTPRINTS) // 2)


def _median_filter(values: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.median_filter(values, footprint=footprint, mode="wrap")`` (the same values: the element of
    rank ``footprint.sum() // 2``), about twice as fast for these small footprints. Periodic, like the prediction
    (:func:`predict`): a spike's leakage across the border lands in the background of the samples it reaches."""
    return _median_of_padded(np.pad(values, [(n // 2, n // 2) for n in footprint.shape], mode="wrap"), footprint)


def _median_of_padded(padded: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Median filter of an array already padded by ``footprint.shape // 2`` on every side (the padding is cut
    off): a partition over a sliding window view."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(padded, footprint.shape)[..., footprint]
    rank = int(footprint.sum()) // 2
    return np.partition(windows, rank, axis=-1)[..., rank]


def _ring_medians_of_padded(padded: np.ndarray) -> np.ndarray:
    """Largest of the three sample-excluding median filters of an array padded by :data:`_REACH` on every side."""
    background = None
    for footprint in _FOOTPRINTS:
        dy, dx = _REACH[0] - footprint.shape[0] // 2, _REACH[1] - footprint.shape[1] // 2
        median = _median_of_padded(padded[dy:padded.shape[0] - dy, dx:padded.shape[1] - dx], footprint)
        background = median if background is None else np.maximum(background, median, out=background)
    return background


def _ring_medians(filled: np.ndarray) -> np.ndarray:
    """(ky, kx) largest of the three sample-excluding median filters of ``filled`` (periodic across the border);
    the upper and lower halves are filtered in two threads."""
    padded = np.pad(filled, [(r, r) for r in _REACH], mode="wrap")
    half = filled.shape[0] // 2
    if half < 16:
        return _ring_medians_of_padded(padded)
    halves = (padded[:half + 2 * _REACH[0]], padded[half:])
    return np.concatenate(list(_workers().map(_ring_medians_of_padded, halves)))


def _ring_medians_near(previous: np.ndarray, filled: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """:func:`_ring_medians` of ``filled`` given its value ``previous`` for an array that differs from ``filled``
    only where ``changed``: recomputed only where a footprint reaches a changed sample (identical result)."""
    from scipy import ndimage

    background = previous.copy()
    box = (2 * _REACH[0] + 1, 2 * _REACH[1] + 1)
    reach = ndimage.maximum_filter(changed.astype(np.uint8), size=box, mode="wrap") > 0
    labels, _count = ndimage.label(reach)
    padded = np.pad(filled, [(r, r) for r in _REACH], mode="wrap")
    for rows, cols in ndimage.find_objects(labels):
        crop = padded[rows.start:rows.stop + 2 * _REACH[0], cols.start:cols.stop + 2 * _REACH[1]]
        background[rows, cols] = _ring_medians_of_padded(crop)
    return background


def _with_edge_lines(background: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """The outermost rows and columns are predicted from fewer neighbours: each is also compared with a median
    along its own line (the larger level is kept). Returns a new array."""
    background = background.copy()
    line = _FOOTPRINTS[1][0]
    for index in (0, -1):
        np.maximum(background[index, :], _median_filter(filled[index, :], line), out=background[index, :])
        np.maximum(background[:, index], _median_filter(filled[:, index], line), out=background[:, index])
    return background


def local_background(energy: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """(ky, kx) robust local level of ``energy``: the largest of three sample-excluding median filters."""
    filled = _fill_unacquired(energy, acquired)
    return _with_edge_lines(_ring_medians(filled), filled)


# ----------------------------------------------------------------------------------------------- the statistic


class _SliceStatistic:
    """Residual energy, local contrast and per-patch normalisation of one plane, updatable after peeling."""

    def __init__(self, plane: np.ndarray, grid: PatchGrid, acquired: np.ndarray) -> None:
        self.plane = plane.astype(np.complex64, copy=True)
        self.original = self.plane.copy()
        self.acquired = acquired
        self.grid = grid
        self.kernel = fit_kernel(self.plane, acquired)
        residual = self.plane - predict(self.plane, self.kernel)
        power = residual.real ** 2 + residual.imag ** 2  # (coils, ky, kx)
        scale = np.fromiter(_workers().map(lambda p: np.median(p[acquired]), power), dtype=np.float64)
        positive = scale[scale > 0]
        scale[scale <= 0] = positive.min() if positive.size else 1.0
        self.inverse_scale = (1.0 / scale).astype(np.float32)
        self.energy = np.einsum("chw,c->hw", power, self.inverse_scale) / len(scale)
        self.tiny = np.float32(1e-6 * max(float(np.median(self.energy[acquired])), 1e-30))
        self._filled: np.ndarray | None = None  # the background's input at the last refresh (None: not yet)
        self._patch_cache: dict[tuple[int, int], tuple[float | None, float | None]] = {}
        self.refresh(np.zeros(acquired.shape, dtype=bool))

    def refresh(self, flagged: np.ndarray) -> None:
        """(Re)compute the local background, the contrast and the per-patch noise model, leaving the ``flagged``
        samples (already replaced by their prediction) out of every statistic. After the first call only what
        the peeling changed is recomputed (the values are the same as a full recomputation)."""
        grid, acquired = self.grid, self.acquired & ~flagged
        first = self._filled is None
        filled = _fill_unacquired(self.energy, acquired)
        self._medians = (_ring_medians(filled) if first
                         else _ring_medians_near(self._medians, filled, filled != self._filled))
        self._filled = filled
        self.background = _with_edge_lines(self._medians, filled) + self.tiny
        log_ratio = np.log((self.energy + self.tiny) / self.background).astype(np.float32)
        changed = (np.ones(grid.shape, dtype=bool) if first
                   else (log_ratio != self.log_ratio) | (acquired != self._used))
        old_median, old_dof = (None, None) if first else (self.median, self.dof)
        old_z = np.full(grid.shape, -np.inf, dtype=np.float32) if first else self.z
        self.log_ratio, self._used = log_ratio, acquired
        self.median = np.zeros(grid.shape, dtype=np.float32)
        self.dof = np.ones(grid.shape, dtype=np.float32)
        self.half = np.full(grid.shape, _half_level(np.ones(1))[0])
        windows, centres, spreads = [], [], []
        for r, c in grid.anchors():
            window = (slice(r, r + grid.size), slice(c, c + grid.size))
            if changed[window].any():
                values = log_ratio[window][acquired[window]]
                centre = float(np.median(values)) if values.size else None
                spread = 1.4826 * float(np.median(np.abs(values - centre))) if values.size else None
                self._patch_cache[(r, c)] = (centre, spread)
            centre, spread = self._patch_cache[(r, c)]
            if centre is None:
                continue
            windows.append(window)
            centres.append(centre)
            spreads.append(spread)
        dofs = _dof_from_log_spread(np.array(spreads)).astype(np.float32)
        for window, centre, dof, half in zip(windows, centres, dofs, _half_level(dofs), strict=True):
            self.median[window] = centre
            self.dof[window] = dof
            self.half[window] = half
        # score where the contrast, the sample's use or its patch's noise model changed
        rescore = acquired if first else acquired & (changed | (self.median != old_median) | (self.dof != old_dof))
        self.z = np.where(acquired, old_z, np.float32(-np.inf))
        self.z[rescore] = self.score_at(log_ratio[rescore], rescore)

    def score_at(self, log_ratio: np.ndarray, where) -> np.ndarray:
        """:meth:`score` of ``log_ratio`` at the samples ``where`` (a bool mask or an index tuple) with their
        patches' noise model."""
        return self.score(log_ratio, self.median[where], self.dof[where], self.half[where])

    @staticmethod
    def score(log_ratio: np.ndarray, median: np.ndarray, dof: np.ndarray, half: np.ndarray | None = None
              ) -> np.ndarray:
        """Significance ``-log10 p`` of log contrasts under the noise-only model of their patch.

        Without a spike the whitened residual energy of ``k`` coils is Gamma(k, 1/k) distributed; its contrast to
        the local median then has median ``median`` (the patch median of the log contrast), and ``k`` follows
        from the patch's spread of log contrasts (see :func:`_dof_from_log_spread`). ``half``: the Gamma median
        :func:`_half_level` of ``dof`` when already known (it is computed per patch, not per sample).
        """
        from scipy.special import gammaincc

        half = _half_level(dof) if half is None else half
        level = half * np.exp(np.asarray(log_ratio, np.float64) - median)
        tail = gammaincc(dof, dof * level)
        return (-np.log10(np.maximum(tail, 1e-300))).astype(np.float32)

    def replace(self, flagged: np.ndarray, new: np.ndarray) -> None:
        """Replace the ``flagged`` samples near the ``new`` ones by predictions (jointly, from the input values)
        and refresh the statistic around them."""
        ky, kx = self.grid.shape
        ys, xs = np.nonzero(new)
        near = np.zeros(flagged.shape, dtype=bool)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near[(ys + dy) % ky, (xs + dx) % kx] = True
        group = near & flagged
        self.plane[:, group] = self.original[:, group]
        fill_in_place(self.plane, group, self.kernel, neighbours=False)  # the statistic's own copy
        near &= self.acquired & ~flagged
        ys, xs = np.nonzero(near)
        residual = self.plane[:, ys, xs].T - predict_at(self.plane, self.kernel, ys, xs)
        self.energy[ys, xs], self.log_ratio[ys, xs] = self._contrast(residual, ys, xs)
        self.z[ys, xs] = self.score_at(self.log_ratio[ys, xs], (ys, xs))
        self.energy[flagged] = 0.0
        self.z[flagged] = -np.inf

    def explained(self, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score and log contrast of each flagged sample against its neighbours with all *other* flagged samples
        replaced by their prediction: a sample that only looked abnormal because of its neighbours' spikes
        (their leakage into its prediction) scores low here. Returns two (n,) arrays in ``np.nonzero`` order."""
        ys, xs = np.nonzero(flagged)
        filled = fill_by_prediction(self.original, flagged, self.kernel)
        residual = self.original[:, ys, xs].T - predict_at(filled, self.kernel, ys, xs)
        _, log_ratio = self._contrast(residual, ys, xs)
        return self.score_at(log_ratio, (ys, xs)), log_ratio

    def joint(self, flagged: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score and log contrast of unflagged samples (ys, xs) next to flagged ones as if they were taken out and
        re-estimated together with their flagged neighbours. A weak spike q next to a replaced strong one p leaks
        into p's replacement (p is predicted from q), which then explains part of q: q's residual shrinks to
        ``(I - S) r`` with ``S = sum_o W_o^T W_-o^T`` over its flagged neighbours ``q + o``; undoing that factor
        gives the residual of the joint fit (first order: the flagged neighbours' coupling among themselves is
        left out)."""
        ky, kx = flagged.shape
        coils = self.kernel.shape[1]
        weights = self.kernel.reshape(8, coils, coils).astype(np.complex128)  # (offset, c_in, c_out)
        residual = _residual_at(self.plane, self.kernel, ys, xs)  # (n, coils), q itself still holds its input
        leak = np.zeros((len(ys), coils, coils), dtype=np.complex128)
        for index, (dy, dx) in enumerate(_OFFSETS):
            beside = flagged[(ys + dy) % ky, (xs + dx) % kx]
            leak[beside] += weights[index].T @ weights[7 - index].T  # _OFFSETS[7 - i] == -_OFFSETS[i]
        joint = np.linalg.solve(np.eye(coils) - leak, residual[..., None])[..., 0]
        log_ratio = self._contrast(joint, ys, xs)[1].astype(np.float32)
        return self.score_at(log_ratio, (ys, xs)), log_ratio

    def _contrast(self, residual: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whitened energy (n,) of complex residuals (n, coils) at the samples (ys, xs), and its log contrast to
        the local background there."""
        energy = (np.abs(residual) ** 2) @ self.inverse_scale / len(self.inverse_scale)
        return energy, np.log((energy + self.tiny) / self.background[ys, xs])


def _local_maxima(energy: np.ndarray, flagged: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(ky, kx) bool: the ``candidates`` whose energy is the largest of their 3 x 3 neighbourhood (edges repeated),
    with the ``flagged`` samples counted as zero; only the candidates' neighbourhoods are read."""
    ky, kx = energy.shape
    ys, xs = np.nonzero(candidates)
    values = np.where(flagged[ys, xs], 0.0, energy[ys, xs])
    largest = values.copy()
    for dy, dx in _OFFSETS:
        yy, xx = np.clip(ys + dy, 0, ky - 1), np.clip(xs + dx, 0, kx - 1)
        np.maximum(largest, np.where(flagged[yy, xx], 0.0, energy[yy, xx]), out=largest)
    new = np.zeros(candidates.shape, dtype=bool)
    keep = values >= largest
    new[ys[keep], xs[keep]] = True
    return new


def _peel(statistic: _SliceStatistic, allowed: np.ndarray, thresholds: Thresholds, zone: np.ndarray,
          ring: np.ndarray, max_rounds: int = 12) -> np.ndarray:
    """Flag samples round by round (largest residual of its 3 x 3 neighbourhood first); returns (ky, kx) bool.

    Then the neighbours of flagged samples are judged jointly with them (:func:`_flag_hidden_neighbours`), and
    finally every flagged sample is judged with all the others replaced (:meth:`_SliceStatistic.explained`); those
    that only looked abnormal because of their neighbours are unflagged.

    The level is ``thresholds.relaxed`` when some allowed sample already exceeds ``thresholds.sure``, else
    ``thresholds.strict``; both are multiplied by ``centre_factor`` inside ``zone`` and by ``ring_factor`` in
    the ``ring`` around the centre, where the contrast must also exceed ``ring_log_ratio``.
    """

    factor = np.where(zone, thresholds.centre_factor, 1.0).astype(np.float32)
    factor[ring] = thresholds.ring_factor
    minimum = np.where(ring, thresholds.ring_log_ratio, thresholds.log_ratio).astype(np.float32)
    corrupted = bool(np.any(allowed & ~zone & (statistic.z > thresholds.sure)))
    level = (thresholds.relaxed if corrupted else thresholds.strict) * factor
    flagged = np.zeros(allowed.shape, dtype=bool)
    for attempt in range(2):
        if attempt == 1:
            if not flagged.any():
                break
            statistic.refresh(flagged)
        for _ in range(max_rounds):
            candidates = allowed & ~flagged & (statistic.z > level) & (statistic.log_ratio > minimum)
            if not candidates.any():
                break
            new = _local_maxima(statistic.energy, flagged, candidates)
            if not new.any():
                break
            flagged |= new
            statistic.replace(flagged, new)
    _flag_hidden_neighbours(statistic, flagged, allowed, level, minimum)  # once: repeated, it can feed on itself
    for _ in range(3):
        if not flagged.any():
            break
        score, log_ratio = statistic.explained(flagged)
        ys, xs = np.nonzero(flagged)
        weak = (score <= level[ys, xs]) | (log_ratio <= minimum[ys, xs])
        if not weak.any():
            break
        flagged[ys[weak], xs[weak]] = False
    return flagged


def _flag_hidden_neighbours(statistic: _SliceStatistic, flagged: np.ndarray, allowed: np.ndarray,
                            level: np.ndarray, minimum: np.ndarray) -> None:
    """Flag (in place) the allowed samples next to flagged ones whose joint score (:meth:`_SliceStatistic.joint`)
    passes ``level`` and ``minimum``: weak members of runs and clusters hidden by a strong neighbour's replacement.
    """
    from scipy.ndimage import binary_dilation

    beside = allowed & ~flagged & binary_dilation(flagged, np.ones((3, 3), dtype=bool))
    ys, xs = np.nonzero(beside)
    if len(ys) == 0:
        return
    score, log_ratio = statistic.joint(flagged, ys, xs)
    keep = (score > level[ys, xs]) & (log_ratio > minimum[ys, xs])
    if keep.any():
        new = np.zeros(flagged.shape, dtype=bool)
        new[ys[keep], xs[keep]] = True
        flagged |= new
        statistic.replace(flagged, new)


def _patch_summary(grid: PatchGrid, z: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.zeros(len(grid), dtype=np.float32)
    targets = np.zeros(len(grid), dtype=bool)
    finite = np.where(np.isfinite(z), z, 0.0)
    for index, (r, c) in enumerate(grid.anchors()):
        window = (slice(r, r + grid.size), slice(c, c + grid.size))
        scores[index] = max(float(finite[window].max()), 0.0)
        targets[index] = bool(mask[window].any())
    return scores, targets


def _check_plane(plane: np.ndarray) -> np.ndarray:
    plane = np.asarray(plane)
    if plane.ndim == 2:
        plane = plane[np.newaxis]
    if plane.ndim != 3 or plane.size == 0 or not np.iscomplexobj(plane):
        raise InputError(f"A k-space plane must be complex (coils, ky, kx), got {plane.dtype} {plane.shape}.",
                         "Pass complex raw k-space, not magnitudes.")
    return plane


def _zones(plane: np.ndarray, centre_radius: float, centre_zone: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(core, ring, zone) (ky, kx) bool masks, distances taken to DC or to the k-space peak (searched near DC).

    core: within 1.5 samples (never flagged); ring: core < distance <= ``centre_radius``; zone: distance <=
    ``centre_zone`` or on the outermost rows/columns.
    """
    shape = plane.shape[1:]
    distance = centre_distance(shape)
    reach = max(4.0, 0.0625 * min(shape))  # the peak is searched within this distance of DC
    box = tuple(slice(max(n // 2 - int(reach), 0), n // 2 + int(reach) + 1) for n in shape)
    near = plane[:, box[0], box[1]]
    energy = np.sum(near.real.astype(np.float32) ** 2 + near.imag.astype(np.float32) ** 2, axis=0)
    energy[distance[box] > reach] = -1.0
    peak_in_box = np.unravel_index(int(np.argmax(energy)), energy.shape)
    peak = (peak_in_box[0] + box[0].start, peak_in_box[1] + box[1].start)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    distance = np.minimum(distance, np.hypot(yy - peak[0], xx - peak[1]).astype(np.float32))
    core = distance <= 1.5
    ring = (distance <= centre_radius) & ~core
    zone = distance <= centre_zone
    zone[[0, -1], :] = True
    zone[:, [0, -1]] = True
    return core, ring, zone


def detect_plane(plane: np.ndarray, sensitivity: float = 0.5, patch_size: int = DEFAULT_PATCH_SIZE,
                 centre_radius: float = 4.0, centre_zone: float = 12.0) -> SliceDetection:
    """Classical detection on one (coils, ky, kx) complex plane (a (ky, kx) plane is one coil).

    sensitivity:   in (0, 1]; see :meth:`Thresholds.from_sensitivity`.
    patch_size:    patch edge in samples (clipped to the plane size).
    centre_radius: samples within this distance (in samples) of DC or of the k-space peak need the ring levels
                   of :class:`Thresholds`; the 1.5-sample core around them (DC included) is never flagged.
    centre_zone:   samples within this distance need :attr:`Thresholds.centre_factor` times the thresholds.
    The input is not modified.
    """
    plane = _check_plane(plane)
    thresholds = Thresholds.from_sensitivity(sensitivity)
    grid = PatchGrid.over(plane.shape[1:], min(int(patch_size), *plane.shape[1:]))
    acquired = acquired_mask(plane)
    core, ring, zone = _zones(plane, max(centre_radius, 0.0), centre_zone)
    statistic = _SliceStatistic(plane, grid, acquired)
    scores_z = statistic.z.copy()
    mask = _peel(statistic, acquired & ~core, thresholds, zone, ring)
    scores, targets = _patch_summary(grid, np.where(core | ring, -np.inf, scores_z), mask)
    return SliceDetection(mask, scores, targets, scores_z, statistic.log_ratio, statistic.kernel)


def localise(plane: np.ndarray, grid: PatchGrid, target_patches: np.ndarray, sensitivity: float = 0.5,
             centre_radius: float = 4.0, centre_zone: float = 12.0) -> np.ndarray:
    """In-patch point localisation for a patch classifier: (ky, kx) bool mask of spikes inside target patches.

    plane:          complex (coils, ky, kx) k-space of one slice.
    grid:           the patch grid the classifier used.
    target_patches: (P,) bool or indices of the patches judged to hold spikes.
    Uses the relaxed thresholds (:meth:`Thresholds.from_sensitivity` with ``relaxed=True``); nothing outside the
    target patches, inside ``centre_radius`` of DC or not acquired is ever flagged.
    """
    plane = _check_plane(plane)
    if tuple(plane.shape[1:]) != tuple(grid.shape):
        raise InputError(f"The plane is {plane.shape[1:]} but the patch grid was made for {grid.shape}.")
    chosen = np.zeros(len(grid), dtype=bool)
    chosen[np.asarray(target_patches)] = True if np.asarray(target_patches).dtype != bool else False
    if np.asarray(target_patches).dtype == bool:
        if len(target_patches) != len(grid):
            raise InputError(f"{len(target_patches)} patch flags given for a grid of {len(grid)} patches.")
        chosen = np.asarray(target_patches, dtype=bool)
    inside = np.zeros(grid.shape, dtype=bool)
    for r, c in grid.anchors()[chosen]:
        inside[r:r + grid.size, c:c + grid.size] = True
    if not inside.any():
        return inside
    acquired = acquired_mask(plane)
    core, ring, zone = _zones(plane, max(centre_radius, 0.0), centre_zone)
    statistic = _SliceStatistic(plane, grid, acquired)
    return _peel(statistic, inside & acquired & ~core, Thresholds.from_sensitivity(sensitivity, True), zone, ring)
