"""Classical spike detector: the patent's patch pipeline with statistics in place of trained models.

Per slice (a (coils, ky, kx) plane of centred k-space):

1. **Cross-coil prediction.** A small shift-invariant kernel (GRAPPA-like, 3 x 3 neighbourhood of every coil, 5 x 5 on
   two-coil planes (:data:`~scanai.kspace.prediction.WIDE_KERNEL_COILS`), the centre sample left out) is fitted by
   regularised least squares to predict each coil's sample from its neighbours; the fit is repeated once without the
   samples it explains worst, so spikes do not bend it.
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
   re-estimated together with them. A cluster whose members leak into each other's neighbourhood fills its own
   background; its strongest member may start the peeling when it passes the peeling's level against the level
   beyond its 5 x 5 block (:func:`scanai.kspace.background.hollow_level_at`).
5. **Centre protection.** Samples within ``centre_radius`` of DC need far higher levels, and the 1.5-sample core
   about DC and the k-space peak is never flagged by the prediction; samples within ``centre_zone`` of DC need
   ``centre_factor`` times the thresholds (patent cl. 8-9). Where the prediction leaves much of the central signal
   (few coils), those samples are also judged in the k-space of the image's background, where the object is gone
   and a spike is not (:mod:`scanai.kspace.centre`); there a core sample is flagged too when it towers
   (:attr:`~scanai.kspace.peeling.Thresholds.near_dc_core`).
6. **Acquisition edges.** Samples that were never acquired (zero in every coil: partial echo, partial Fourier,
   undersampling masks) are never flagged, are left out of the local background (NaN in its median filters) and
   of the prediction of their neighbours: a sample beside them is predicted by a kernel of the neighbours it has
   (:class:`~scanai.kspace.prediction.Predictor`).
7. **Calibrated tail.** The significances are mapped so that the plane's own clean-looking samples follow the
   promised law (:func:`scanai.kspace.statistic.calibrate_tail`): one coil's heavier tails do not turn into false
   detections once a sure spike relaxes the threshold.

:func:`localise` runs the detector restricted to given target patches, at the relaxed level there, and to the
centre zone, for a patch-level classifier (the network path) that already decided which patches hold spikes.

Where each part lives (public names re-exported here): :mod:`scanai.kspace.prediction` (step 1 and the fill),
:mod:`scanai.kspace.background` (the local background of step 2), :mod:`scanai.kspace.statistic` (steps 2-3: the
per-slice statistic) and :mod:`scanai.kspace.peeling` (the thresholds and step 4); the zones of step 5 and the
detector itself are here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scanai.core.errors import InputError
from scanai.kspace.background import local_background  # noqa: F401  (re-exported)
from scanai.kspace.centre import CentreSpikes, near_centre_spikes
from scanai.kspace.patches import DEFAULT_PATCH_SIZE, PatchGrid
from scanai.kspace.peeling import Thresholds, _peel
from scanai.kspace.prediction import (  # noqa: F401  (re-exported)
    Predictor,
    acquired_mask,
    fill_by_prediction,
    fill_in_place,
    fit_kernel,
    predict,
    predict_at,
    radius_of,
)
from scanai.kspace.statistic import _SliceStatistic, whitened_energy


@dataclass(frozen=True)
class SliceDetection:
    """What the classical detector finds on one (coils, ky, kx) plane.

    mask:           (ky, kx) bool, True at each flagged sample.
    patch_scores:   (P,) highest robust z of any sample in each patch (0 where nothing was acquired).
    target_patches: (P,) bool, True for patches holding at least one flagged sample.
    z:              (ky, kx) float32 robust z of every sample (after peeling; -inf where not acquired).
    log_ratio:      (ky, kx) float32 log contrast ``log(E / B)`` of every sample.
    core_spikes:    {(ky, kx): (coils,) complex128} the value each spike flagged in the core about DC added to its
                    sample, as the background test measured it: no neighbour predicts the core, so subtracting it
                    is the correction there.
    """

    mask: np.ndarray
    patch_scores: np.ndarray
    target_patches: np.ndarray
    z: np.ndarray
    log_ratio: np.ndarray
    core_spikes: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)


def centre_distance(shape: tuple[int, int]) -> np.ndarray:
    """(ky, kx) float32 distance in samples of every sample from DC at (ky // 2, kx // 2)."""
    ky, kx = np.ogrid[: shape[0], : shape[1]]
    return np.hypot(ky - shape[0] // 2, kx - shape[1] // 2).astype(np.float32)


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
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(core, ring, zone, near) (ky, kx) bool masks, distances taken to DC or to the k-space peak (searched near
    DC).

    core: within 1.5 samples (never flagged); ring: core < distance <= ``centre_radius``; near: distance <=
    ``centre_zone``; zone: near or on the outermost rows/columns.
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
    near = distance <= centre_zone
    zone = near.copy()
    zone[[0, -1], :] = True
    zone[:, [0, -1]] = True
    return core, ring, zone, near


#: The background test near DC (:mod:`scanai.kspace.centre`) runs where the 3 x 3 cross-coil prediction leaves more
#: than this many times the plane's median residual energy (median over the samples near DC): 1-2-coil files
#: (4-540x); not the 16- and 32-coil scanner files (1.1-1.7x), nor a clean 3-coil 32 x 64 phantom (2.7x), where the
#: test's noise model does not hold (5 false detections). Two-coil planes, predicted from 5 x 5 neighbourhoods, are
#: gated by the 3 x 3 prediction too: the wider one leaves 2.1x on 164120, where the test still finds 0.97 of the
#: spikes >= 5 sigma near DC against 0.58 without it.
NEAR_DC_GATE = 3.0
#: ... and on planes of at most this many coils: on the 16-coil 256^2 phantom (10x) it found no near-DC spike the
#: cross-coil residual missed (18/18 either way, 3-125 sigma) and cost 45 ms of the 0.2 s budget.
NEAR_DC_MAX_COILS = 8


def _whole_zone_judged(plane: np.ndarray, predictor: Predictor, energy: np.ndarray, acquired: np.ndarray,
                       judged: np.ndarray) -> bool:
    """Whether the background test judges every sample near DC (``judged``): where the prediction (``predictor``,
    its whitened residual ``energy``) leaves much of the central signal (:data:`NEAR_DC_GATE`), on planes of at
    most :data:`NEAR_DC_MAX_COILS` coils."""
    if not judged.any() or plane.shape[0] > NEAR_DC_MAX_COILS:
        return False
    if radius_of(predictor.offsets) != 1:
        energy = whitened_energy(plane.astype(np.complex64, copy=False), acquired, radius=1)[1]
    ratio = float(np.median(energy[judged])) / max(float(np.median(energy[acquired])), 1e-30)
    return ratio > NEAR_DC_GATE


def _near_centre(plane: np.ndarray, flagged: np.ndarray, predictor: Predictor, energy: np.ndarray,
                 acquired: np.ndarray, core: np.ndarray, near: np.ndarray, thresholds: Thresholds,
                 noise_power: np.ndarray | None, core_suspect: bool) -> CentreSpikes:
    """:func:`scanai.kspace.centre.near_centre_spikes` on the acquired samples ``near`` DC: it may flag those not
    already ``flagged`` where :func:`_whole_zone_judged`, and the ``core`` (at :attr:`Thresholds.near_dc_core`) there
    or wherever ``core_suspect`` (the prediction would have flagged a core sample: nothing else can); else it does
    not run. The flagged samples near DC are the test's known spikes; those farther out are replaced by their
    prediction first (so that neither their plane wave in the image nor their spread reaches the test)."""
    region = near & acquired
    judged = region & ~core
    if _whole_zone_judged(plane, predictor, energy, acquired, judged):
        allowed = judged & ~flagged
    elif core_suspect and (core & acquired).any():
        allowed = np.zeros_like(judged)
    else:
        return CentreSpikes(np.zeros(acquired.shape, dtype=bool), np.zeros(acquired.shape, dtype=np.float32), {})
    far = flagged & ~near  # near DC a prediction is poor (it is why this test exists): those stay, as known spikes
    if far.any():  # each as its neighbours predict it, adjacent ones jointly (as the peeling replaces them)
        plane = predictor.fill(plane.astype(np.complex64, copy=True), far, neighbours=False)
    return near_centre_spikes(plane, region, allowed, thresholds.near_dc, noise_power,
                              towering=thresholds.near_dc_core, known=flagged & near)


def detect_plane(plane: np.ndarray, sensitivity: float = 0.5, patch_size: int = DEFAULT_PATCH_SIZE,
                 centre_radius: float = 4.0, centre_zone: float = 12.0, noise_power: np.ndarray | None = None,
                 prior: np.ndarray | None = None, region: np.ndarray | None = None) -> SliceDetection:
    """Classical detection on one (coils, ky, kx) complex plane (a (ky, kx) plane is one coil).

    sensitivity:   in (0, 1]; see :meth:`Thresholds.from_sensitivity`.
    patch_size:    patch edge in samples (clipped to the plane size).
    centre_radius: samples within this distance (in samples) of DC or of the k-space peak need the ring levels
                   of :class:`Thresholds`; the 1.5-sample core around them (DC included) is flagged only by the
                   background test (:attr:`Thresholds.near_dc_core`).
    centre_zone:   samples within this distance need :attr:`Thresholds.centre_factor` times the thresholds; where
                   the prediction leaves much signal there, they are also judged in the background's k-space
                   (:mod:`scanai.kspace.centre`, level :attr:`Thresholds.near_dc`).
    noise_power:   (coils,) known noise power ``E|n|^2`` of each coil (a file's noise scans), or None (estimated).
    prior:         (ky, kx) int8 opinion of a patch classifier (1: a spike here, -1: none here, 0: no opinion), which
                   sets the level sample by sample (:func:`scanai.kspace.peeling.prior_levels`); None: classical.
    region:        (ky, kx) bool, the only samples that may be flagged (None: all; :func:`localise`).
    The input is not modified.
    """
    plane = _check_plane(plane)
    thresholds = Thresholds.from_sensitivity(sensitivity)
    grid = PatchGrid.over(plane.shape[1:], min(int(patch_size), *plane.shape[1:]))
    zones = _zones(plane, max(centre_radius, 0.0), centre_zone)
    core, ring = zones[:2]
    mask, scores_z, log_ratio, centre = _detect(plane, thresholds, grid, zones, noise_power, prior, region)
    in_core = {place: value for place, value in centre.amplitudes.items() if core[place]}
    if in_core:  # a spike in the core also stood out in its neighbours' predictions: judged again without it
        cleaned = plane.astype(np.complex64, copy=True)
        for (y, x), value in in_core.items():
            cleaned[:, y, x] -= value.astype(np.complex64)
        mask, z, log_ratio, _ = _detect(cleaned, thresholds, grid, zones, noise_power, prior, region)
        mask[tuple(np.transpose(list(in_core)))] = True
        scores_z = np.where(core, np.maximum(z, scores_z), z)
    scores, targets = _patch_summary(grid, np.where(core | ring, -np.inf, scores_z), mask)
    return SliceDetection(mask, scores, targets, scores_z, log_ratio, in_core)


def _detect(plane: np.ndarray, thresholds: Thresholds, grid: PatchGrid,
            zones: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], noise_power: np.ndarray | None,
            prior: np.ndarray | None, region: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, CentreSpikes]:
    """The peeling and the background test of :func:`detect_plane` on one plane with its :func:`_zones`: (mask,
    z (ky, kx) float32 (the background test's significance where it flagged more), log_ratio, its
    :class:`~scanai.kspace.centre.CentreSpikes`)."""
    core, ring, zone, near = zones
    acquired = acquired_mask(plane)
    statistic = _SliceStatistic(plane, grid, acquired)
    scores_z = statistic.z.copy()
    allowed = acquired & ~core if region is None else acquired & ~core & np.asarray(region, dtype=bool)
    mask = _peel(statistic, allowed, thresholds, zone, ring, prior=prior)
    centre = _near_centre(plane, mask, statistic.predictor, statistic.energy, acquired, core, near, thresholds,
                          noise_power, core_suspect=bool(np.any(scores_z[core] > thresholds.relaxed)))
    mask |= centre.flags
    scores_z = np.where(centre.flags, np.maximum(scores_z, centre.significance), scores_z)
    return mask, scores_z, statistic.log_ratio, centre


def localise(plane: np.ndarray, grid: PatchGrid, target_patches: np.ndarray, sensitivity: float = 0.5,
             centre_radius: float = 4.0, centre_zone: float = 12.0, noise_power: np.ndarray | None = None,
             ruled_out: np.ndarray | None = None) -> SliceDetection:
    """In-patch point localisation for a patch classifier: the :class:`SliceDetection` of spikes inside target
    patches, within ``centre_zone`` of DC, and, given ``ruled_out``, wherever the classifier does not rule a spike
    out.

    plane:          complex (coils, ky, kx) k-space of one slice.
    grid:           the patch grid the classifier used.
    target_patches: (P,) bool or indices of the patches judged to hold spikes.
    Inside the target patches the level is the relaxed one (:meth:`Thresholds.from_sensitivity`), the classifier's
    agreement standing for a sure spike. Within ``centre_zone`` of DC, the patent's central area, every sample is
    judged at :func:`detect_plane`'s own level whatever the classifier says, with its background test: the
    classifier's central patches missed spikes of 30-150 sigma per coil 3-7 samples from DC on a 16-coil file. One
    :func:`detect_plane` over both regions (``prior`` 1 in the target patches); nothing inside ``centre_radius``
    of DC or not acquired is ever flagged. ``ruled_out``: (ky, kx) bool, the samples the classifier rules a spike
    out at (:func:`scanai.kspace.pipeline.classifier_prior` below 0); every other sample outside the target patches
    is judged at :func:`detect_plane`'s own level too (None: the patent's reading, the target patches only).
    """
    plane = _check_plane(plane)
    if tuple(plane.shape[1:]) != tuple(grid.shape):
        raise InputError(f"The plane is {plane.shape[1:]} but the patch grid was made for {grid.shape}.")
    chosen = np.asarray(target_patches)
    if chosen.dtype == bool and len(chosen) != len(grid):
        raise InputError(f"{len(chosen)} patch flags given for a grid of {len(grid)} patches.")
    inside = np.zeros(grid.shape, dtype=bool)
    for r, c in grid.anchors()[chosen]:
        inside[r:r + grid.size, c:c + grid.size] = True
    near = _zones(plane, max(centre_radius, 0.0), centre_zone)[3]
    region = inside | near if ruled_out is None else inside | near | ~np.asarray(ruled_out, dtype=bool)
    return detect_plane(plane, sensitivity, grid.size, centre_radius, centre_zone, noise_power,
                        prior=inside.astype(np.int8), region=region)
