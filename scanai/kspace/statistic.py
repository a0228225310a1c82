"""The classical detector's per-slice statistic: residual energy, local contrast and each patch's noise model."""

from __future__ import annotations

import numpy as np

from scanai.kspace.background import _fill_unacquired, _ring_medians, _ring_medians_near, _with_edge_lines, _workers
from scanai.kspace.patches import PatchGrid
from scanai.kspace.prediction import (
    _OFFSETS,
    _residual_at,
    fill_by_prediction,
    fill_in_place,
    fit_kernel,
    predict,
    predict_at,
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
