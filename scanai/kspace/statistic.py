"""The classical detector's per-slice statistic: residual energy, local contrast and each patch's noise model."""

from __future__ import annotations

import numpy as np

from scanai.kspace.background import (
    _complete,
    _excluding,
    _ring_medians,
    _ring_medians_near,
    _with_edge_lines,
    _workers,
    hollow_level_at,
)
from scanai.kspace.patches import PatchGrid
from scanai.kspace.prediction import (
    Predictor,
    radius_of,
)


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


#: Significance (-log10 p) above which the tail of a plane's scores is calibrated: its top 1 %.
TAIL_LEVEL = 2.0


def calibrate_tail(z: np.ndarray, acquired: np.ndarray, minimum: int = 20) -> tuple[float, float]:
    """(u, b): the measured tail of a plane's significances ``z`` (-log10 p, (ky, kx), over ``acquired``).

    Residuals of one coil, or of signal the prediction cannot explain, have heavier tails than the model's
    Gamma law (on se_t1, one coil: 12 clean samples above 5.5 where 0.2 were promised). The tail is measured on
    the clean-looking samples: samples scoring above 4 and their 8 neighbours (a spike leaks into the prediction
    of its neighbours) are left out, and the scores at the 90 % and 99 % quantiles give ``u`` (the 99 %, 2 under
    the model) and the scale ``b`` of one factor e in p (``(z99 - z90) / ln 10``; ``1 / ln 10`` under the model).
    With fewer than ``minimum`` samples above the 99 % quantile the model's own tail is kept.
    """
    from scipy.ndimage import binary_dilation

    model = (TAIL_LEVEL, 1.0 / np.log(10.0))
    suspect = binary_dilation(acquired & (z > 4.0), np.ones((3, 3), dtype=bool))
    scores = z[acquired & ~suspect & np.isfinite(z)].astype(np.float64)
    if scores.size * 10.0 ** -TAIL_LEVEL < minimum:
        return model
    low, high = np.quantile(scores, [0.9, 1.0 - 10.0 ** -TAIL_LEVEL])
    if not 0 < low < high:
        return model
    return float(high), float(high - low) / np.log(10.0)


def recalibrate(scores: np.ndarray, level: float, scale: float, tail: tuple[float, float]) -> np.ndarray:
    """Significances mapped so that the plane's measured tail ``tail = (u, b)`` becomes the promised one: the
    score ``u`` becomes ``level`` and every ``b`` beyond it one factor ``e`` in p (``scale = 1 / ln 10`` in
    -log10 p); below ``u`` scaled by ``level / u``. float32, monotone, the identity for ``tail = (level, scale)``.
    """
    u, b = tail
    scores = np.asarray(scores, dtype=np.float32)
    if u == level and b == scale:
        return scores
    return np.where(scores > u, level + (scores - u) * np.float32(scale / b),
                    scores * np.float32(level / u)).astype(np.float32)


def whitened_energy(plane: np.ndarray, acquired: np.ndarray, radius: int | None = None
                    ) -> tuple[Predictor, np.ndarray, np.ndarray]:
    """(predictor, energy, inverse_scale) of a complex64 (coils, ky, kx) plane: the fitted :class:`Predictor` (of
    neighbourhood ``radius``, default :func:`~scanai.kspace.prediction.kernel_radius`), the whitened residual energy
    ``E = mean_c |r_c|^2 / s_c`` (ky, kx) float32 with ``s_c`` the median residual power of coil ``c`` over the
    ``acquired`` samples, and ``1 / s_c`` (coils,) float32."""
    predictor = Predictor.fit(plane, acquired, radius=radius)
    residual = plane - predictor.predict(plane)
    power = residual.real ** 2 + residual.imag ** 2  # (coils, ky, kx)
    scale = np.fromiter(_workers().map(lambda p: np.median(p[acquired]), power), dtype=np.float64)
    positive = scale[scale > 0]
    scale[scale <= 0] = positive.min() if positive.size else 1.0
    inverse_scale = (1.0 / scale).astype(np.float32)
    return predictor, np.einsum("chw,c->hw", power, inverse_scale) / len(scale), inverse_scale


class _SliceStatistic:
    """Residual energy, local contrast and per-patch normalisation of one plane, updatable after peeling."""

    def __init__(self, plane: np.ndarray, grid: PatchGrid, acquired: np.ndarray) -> None:
        self.plane = plane.astype(np.complex64, copy=True)
        self.original = self.plane.copy()
        self.acquired = acquired
        self.grid = grid
        self.predictor, self.energy, self.inverse_scale = whitened_energy(self.plane, acquired)
        self.tiny = np.float32(1e-6 * max(float(np.median(self.energy[acquired])), 1e-30))
        self._filled: np.ndarray | None = None  # the background's input at the last refresh (None: not yet)
        self._patch_cache: dict[tuple[int, int], tuple[float | None, float | None]] = {}
        self.tail = (TAIL_LEVEL, 1.0 / np.log(10.0))  # (u, b): the model's own tail until calibrated
        self.refresh(np.zeros(acquired.shape, dtype=bool))
        self.tail = calibrate_tail(self.z, acquired)
        self.z[acquired] = recalibrate(self.z[acquired], TAIL_LEVEL, 1.0 / np.log(10.0), self.tail)

    def refresh(self, flagged: np.ndarray) -> None:
        """(Re)compute the local background, the contrast and the per-patch noise model, leaving the ``flagged``
        samples (already replaced by their prediction) out of every statistic. After the first call only what
        the peeling changed is recomputed (the values are the same as a full recomputation)."""
        grid, acquired = self.grid, self.acquired & ~flagged
        first = self._filled is None
        filled = _excluding(self.energy, acquired)  # never-acquired and flagged samples are left out (NaN)
        self._medians = (_ring_medians(filled) if first else _ring_medians_near(
            self._medians, filled, (filled != self._filled) & ~(np.isnan(filled) & np.isnan(self._filled))))
        self._filled = filled
        self.background = _complete(_with_edge_lines(self._medians, filled)) + self.tiny
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

    def remeasure_background(self, flagged: np.ndarray, where: np.ndarray) -> None:
        """:meth:`refresh` with the ``flagged`` samples left out, keeping at the samples ``where`` ((ky, kx) bool)
        the lower of the old and the new local background, elsewhere the old.

        The background of a sample flagged in the first pass was measured before the second pass flagged its
        neighbours, often around a strong run whose leakage inflated it 100-400x: a weak member of the run then
        looked explained by its neighbours (:meth:`explained`) and was unflagged. The lower level is kept because a
        new one measured from the few samples left beside a long flagged stretch can be inflated in turn; the
        peeling keeps the old one near DC and beside never-acquired samples (poorer predictions there).
        """
        stale = self.background
        self.refresh(flagged)
        self.background = np.where(where, np.minimum(self.background, stale), stale)

    def score_at(self, log_ratio: np.ndarray, where) -> np.ndarray:
        """:meth:`score` of ``log_ratio`` at the samples ``where`` (a bool mask or an index tuple) with their
        patches' noise model, its tail calibrated on this plane (:func:`calibrate_tail`)."""
        raw = self.score(log_ratio, self.median[where], self.dof[where], self.half[where])
        return recalibrate(raw, TAIL_LEVEL, 1.0 / np.log(10.0), self.tail)

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
        reach = 2 * radius_of(self.predictor.offsets)  # flagged samples within reach are filled together
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                near[(ys + dy) % ky, (xs + dx) % kx] = True
        group = near & flagged
        self.plane[:, group] = self.original[:, group]
        self.predictor.fill(self.plane, group, neighbours=False)  # the statistic's own copy
        near &= self.acquired & ~flagged
        ys, xs = np.nonzero(near)
        residual = self.predictor.residual_at(self.plane, ys, xs)
        self.energy[ys, xs], self.log_ratio[ys, xs] = self._contrast(residual, ys, xs)
        self.z[ys, xs] = self.score_at(self.log_ratio[ys, xs], (ys, xs))
        self.energy[flagged] = 0.0
        self.z[flagged] = -np.inf

    def score_without_own_leakage(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(n,) score of the samples (ys, xs) against the level of their surroundings beyond their 5 x 5 block
        (:func:`~scanai.kspace.background.hollow_level_at` of the residual energy over the acquired samples), with
        their patches' noise model: the members of a cluster of spikes, whose leakage into each other's
        neighbourhood fills their usual background (one coil's kernel spreads a spike along the phase-encoding
        line above and below it), stand out against it; an isolated spike or clean data score about as usual."""
        level = hollow_level_at(_excluding(self.energy, self.acquired), ys, xs)
        level = np.where(np.isfinite(level), level, self.background[ys, xs]) + self.tiny
        return self.score_at(np.log((self.energy[ys, xs] + self.tiny) / level).astype(np.float32), (ys, xs))

    def explained(self, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score and log contrast of each flagged sample against its neighbours with all *other* flagged samples
        replaced by their prediction: a sample that only looked abnormal because of its neighbours' spikes
        (their leakage into its prediction) scores low here. Returns two (n,) arrays in ``np.nonzero`` order.

        Beside never-acquired samples each is judged with the flagged samples near it re-estimated around its own
        value: re-estimated together with it, a run on a line whose neighbours above and below
        were never acquired rests on that line alone, and its poor estimate made the clean sample beside it look
        like a spike (the 32-coil file at R = 2: 15 -> 7 false positives).
        """
        ys, xs = np.nonzero(flagged)
        joint = self.predictor.fill(self.original.copy(), flagged)
        residual = self.original[:, ys, xs].T - self.predictor.predict_at(joint, ys, xs)
        fragile = np.flatnonzero(self.predictor.codes[ys, xs] > 0)
        filled = joint.copy() if len(fragile) else joint
        ky, kx = flagged.shape
        reach = 2 * radius_of(self.predictor.offsets)  # flagged samples within reach are re-estimated together
        span = np.arange(-reach, reach + 1)
        for i in fragile:
            window = np.ix_((ys[i] + span) % ky, (xs[i] + span) % kx)
            near = np.zeros(flagged.shape, dtype=bool)
            near[window] = flagged[window]
            near[ys[i], xs[i]] = False
            if not near.any():
                continue
            around = near.copy()
            around[ys[i], xs[i]] = True
            filled[:, around] = self.original[:, around]
            self.predictor.fill(filled, near)
            residual[i] = self.predictor.residual_at(filled, ys[i:i + 1], xs[i:i + 1])[0]
            filled[:, around] = joint[:, around]
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
        kernel = self.predictor.kernel
        coils = kernel.shape[1]
        offsets = self.predictor.offsets
        weights = kernel.reshape(len(offsets), coils, coils).astype(np.complex128)  # (offset, c_in, c_out)
        residual = self.predictor.residual_at(self.plane, ys, xs)  # (n, coils), q itself still holds its input
        leak = np.zeros((len(ys), coils, coils), dtype=np.complex128)
        for index, (dy, dx) in enumerate(offsets):
            beside = flagged[(ys + dy) % ky, (xs + dx) % kx]
            leak[beside] += weights[index].T @ weights[-1 - index].T  # offsets[-1 - i] == -offsets[i]
        joint = np.linalg.solve(np.eye(coils) - leak, residual[..., None])[..., 0]
        log_ratio = self._contrast(joint, ys, xs)[1].astype(np.float32)
        return self.score_at(log_ratio, (ys, xs)), log_ratio

    def _contrast(self, residual: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whitened energy (n,) of complex residuals (n, coils) at the samples (ys, xs), and its log contrast to
        the local background there."""
        energy = (np.abs(residual) ** 2) @ self.inverse_scale / len(self.inverse_scale)
        return energy, np.log((energy + self.tiny) / self.background[ys, xs])
