"""Peeling: the classical detector's decision levels and its round-by-round flagging of the largest residuals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.kspace.prediction import _OFFSETS, radius_of
from scanai.kspace.statistic import _SliceStatistic

#: How far above its level (at most the strict level) a sample must score where the combined detector's classifier
#: rules a spike out (:func:`prior_levels`): one decade of significance.
VETO_RAISE = 1.0


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
    ring_factor, ring_log_ratio: the much higher level and minimum contrast (40x the local residual level) in the
                   ring between the untouchable core (1.5 samples around DC and the k-space peak) and
                   ``centre_radius``: only a spike that towers over the central signal is flagged there. Clean
                   files reach 3-11x there (11x on the 32-coil file, 8x on the partial echo, where the level alone
                   is passed); 100x, as before, missed a 43-sigma spike 2 samples from DC (91x, 45 dB after).
    near_dc:       level of the background test near DC (:mod:`scanai.kspace.centre`), ``strict - 3``: its noise
                   model holds there (no clean scanner file scores above 3.5 at default settings).
    near_dc_core:  level at which that test flags a sample of the core itself, ``5 x near_dc`` (30 at the default):
                   the core of a clean plane scores up to 7.2 there (se_t1; 8.6 on the partial-echo phantom), a
                   spike of 0.03 x max|k| in it 63-124 on gre.dat and the 16-coil file, over 300 on the 32-coil
                   file; one of 0.3 x max|k| left uncorrected leaves gre.dat's image at 32 dB.
    """

    strict: float
    relaxed: float
    sure: float
    log_ratio: float = float(np.log(2.0))
    centre_factor: float = 2.0
    ring_factor: float = 4.0
    ring_log_ratio: float = float(np.log(40.0))

    @property
    def near_dc(self) -> float:
        """Level of the background test near DC (see the class docstring)."""
        return self.strict - 3.0

    @property
    def near_dc_core(self) -> float:
        """Level of the background test in the core about DC (see the class docstring)."""
        return 5.0 * self.near_dc

    @classmethod
    def from_sensitivity(cls, sensitivity: float) -> Thresholds:
        """Thresholds for a ``sensitivity`` in (0, 1] (0.5 = the tuned default; higher finds weaker spikes but
        risks false detections on clean data)."""
        if not (np.isfinite(sensitivity) and 0.0 < sensitivity <= 1.0):
            raise InputError(f"The detection sensitivity must be a number in (0, 1], got {sensitivity}.",
                             "Use 0.5 (the default) and raise it towards 1 only to find weaker spikes.")
        strict = 13.0 - 8.0 * float(sensitivity)
        return cls(strict, strict - 3.5, strict + 3.0)


def prior_levels(thresholds: Thresholds, corrupted: bool, prior: np.ndarray | None = None) -> np.ndarray | float:
    """The level of every sample before the zone factors: ``relaxed`` in a corrupted slice, else ``strict``.

    With a patch classifier's ``prior`` ((ky, kx) int8: 1 inside its target patches, -1 where it rules a spike out,
    0 no opinion; :func:`scanai.kspace.pipeline.classifier_prior`) the combined detector's levels: ``relaxed`` inside
    the target patches even in a slice with no sure spike (the classifier's agreement replaces the sure spike as the
    gate), and :data:`VETO_RAISE` above the level (at most ``strict``) where it rules a spike out, so that a
    borderline sample there needs more than the relaxed level.
    """
    base = thresholds.relaxed if corrupted else thresholds.strict
    if prior is None:
        return base
    level = np.full(prior.shape, base, dtype=np.float32)
    level[prior > 0] = min(base, thresholds.relaxed)
    level[prior < 0] = min(thresholds.strict, base + VETO_RAISE)
    return level


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
          ring: np.ndarray, max_rounds: int = 12, prior: np.ndarray | None = None) -> np.ndarray:
    """Flag samples round by round (largest residual of its 3 x 3 neighbourhood first); returns (ky, kx) bool.

    In the centre ``zone`` and beside never-acquired samples only samples above the level before any replacement
    can be flagged (no cascade from replaced samples). Then
    the neighbours of flagged samples are judged jointly with them (:func:`_flag_hidden_neighbours`), and
    finally every flagged sample is judged with all the others replaced (:meth:`_SliceStatistic.explained`), against
    a local background measured again without the flagged samples away from DC and the acquisition's edges
    (:meth:`_SliceStatistic.remeasure_background`); those that only looked abnormal because of their neighbours
    are unflagged.

    The level is ``thresholds.relaxed`` when some allowed sample already exceeds ``thresholds.sure``, else
    ``thresholds.strict``; both are multiplied by ``centre_factor`` inside ``zone`` and by ``ring_factor`` in
    the ``ring`` around the centre, where the contrast must also exceed ``ring_log_ratio``. ``prior``: a
    patch classifier's opinion, (ky, kx) int8 (see :func:`prior_levels`), sets the level sample by sample.
    """

    factor = np.where(zone, thresholds.centre_factor, 1.0).astype(np.float32)
    factor[ring] = thresholds.ring_factor
    minimum = np.where(ring, thresholds.ring_log_ratio, thresholds.log_ratio).astype(np.float32)
    corrupted = bool(np.any(allowed & ~zone & (statistic.z > thresholds.sure)))
    level = prior_levels(thresholds, corrupted, prior) * factor
    flagged = np.zeros(allowed.shape, dtype=bool)
    # near DC and beside never-acquired samples a sample must stand out before anything was replaced too: a
    # replacement there (signal-dominated, or predicted from fewer neighbours) is poorer and raises its neighbours'
    # residuals, which must not feed a cascade of flags
    fragile = zone | (statistic.predictor.codes > 0)
    _raise_clusters_hidden_by_their_leakage(statistic, allowed & ~fragile & ~ring, level)
    standing = allowed & (~fragile | (statistic.z > level))
    for attempt in range(2):
        if attempt == 1:
            if not flagged.any():
                break
            statistic.refresh(flagged)
        for _ in range(max_rounds):
            candidates = standing & ~flagged & (statistic.z > level) & (statistic.log_ratio > minimum)
            if not candidates.any():
                break
            new = _local_maxima(statistic.energy, flagged, candidates)
            if not new.any():
                break
            flagged |= new
            statistic.replace(flagged, new)
    _flag_hidden_neighbours(statistic, flagged, allowed, level, minimum)  # once: repeated, it can feed on itself
    if flagged.any():
        statistic.remeasure_background(flagged, ~fragile)
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


#: A sample is tested for a cluster hidden by its own leakage when it is the largest residual energy of its 3 x 3
#: neighbourhood and at least this many times the plane's median energy (a cheap first cut: one coil's noise exceeds
#: it with probability 2^-10).
CLUSTER_START = 10.0


def _raise_clusters_hidden_by_their_leakage(statistic: _SliceStatistic, where: np.ndarray,
                                            level: np.ndarray | float) -> None:
    """Let the peeling start from clusters whose leakage hides them (in place, on ``statistic.z``).

    The members of a cluster of spikes leak into each other's predictions and fill their own local background:
    a 4-sample cluster of 16-168 sigma on one coil scored 2-5 against the strict level 9, the clean samples around
    it up to 14 (not local maxima, so nothing was flagged). The local maxima of the residual energy ``where`` that
    stand far above the plane's median (:data:`CLUSTER_START`) and score below their ``level`` (the peeling's, a
    number or (ky, kx)) are scored again against the level beyond their 5 x 5 block
    (:meth:`_SliceStatistic.score_without_own_leakage`); those above their level there take that score, and the
    peeling then flags and replaces them as usual (their neighbours are judged again once the strongest is
    replaced).
    """
    energy = statistic.energy
    level = np.broadcast_to(np.asarray(level, dtype=np.float32), energy.shape)
    strong = where & (statistic.z <= level)
    strong &= energy > CLUSTER_START * float(np.median(energy[statistic.acquired]))
    strong = _local_maxima(energy, np.zeros(strong.shape, dtype=bool), strong)
    ys, xs = np.nonzero(strong)
    if len(ys) == 0:
        return
    score = statistic.score_without_own_leakage(ys, xs)
    above = score > level[ys, xs]
    statistic.z[ys[above], xs[above]] = score[above]


def _flag_hidden_neighbours(statistic: _SliceStatistic, flagged: np.ndarray, allowed: np.ndarray,
                            level: np.ndarray, minimum: np.ndarray) -> None:
    """Flag (in place) the allowed samples next to flagged ones whose joint score (:meth:`_SliceStatistic.joint`)
    passes ``level`` and ``minimum``: weak members of runs and clusters hidden by a strong neighbour's replacement.
    """
    from scipy.ndimage import binary_dilation

    span = 2 * radius_of(statistic.predictor.offsets) + 1  # the samples whose prediction a flagged one enters
    beside = allowed & ~flagged & binary_dilation(flagged, np.ones((span, span), dtype=bool))
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
