"""The KSpaceCalibration pipeline: detect spikes by patches, correct the flagged samples, reconstruct.

``detect`` -> :class:`Detection` (spike mask, a table of spikes, per-slice and per-patch scores);
``calibrate`` -> corrected k-space (only flagged samples change); ``run`` -> both plus the original, corrected
and difference root-sum-of-squares images and the log-magnitude k-space.

Detectors: ``"classical"`` (:mod:`scanai.kspace.classical`, no trained model) and ``"network"``
(``scanai.kspace.network.classify_patches`` gives each patch a probability; patches above their threshold -- 0.5,
or 0.8 near the centre, patent cl. 8-9 -- are target patches, and :func:`scanai.kspace.classical.localise` finds
the points inside them at the relaxed level, and at the classical level in the centre zone whatever the classifier
says and wherever it does not rule a spike out: some patch holding the sample scores :data:`VETO_PROBABILITY` or
more) and
``"combined"``: the classical detector with the classifier's opinion setting its level
sample by sample (:func:`classifier_prior`, :func:`scanai.kspace.peeling.prior_levels`): the relaxed level inside
target patches even in a slice with no sure spike, and one decade more than the level (at most the strict one)
where every patch holding the sample scores below :data:`VETO_PROBABILITY` -- the network's veto of borderline
classical detections, which removes most of the clean single-coil outliers that a sure spike elsewhere lets through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError, ModelError
from scanai.core.image import Volume
from scanai.core.progress import Progress
from scanai.kspace.classical import SliceDetection, centre_distance, detect_plane, localise
from scanai.kspace.correct import DEFAULT_METHOD, correct
from scanai.kspace.data import KSpaceData, as_kspace_array
from scanai.kspace.patches import DEFAULT_PATCH_SIZE, PatchGrid
from scanai.kspace.recon import reconstruct

DETECTORS = ("classical", "network", "combined")
#: The classifier rules a spike out where every patch holding the sample scores below this probability: the combined
#: detector raises its level there, the network detector's localisation leaves such samples out. Measured with the
#: shipped weights (bench seeds 0-19): the recurring clean outlier se_t1 flags once a sure spike relaxes the level
#: (significance 5.5-6.5) sits in patches of 0.009-0.010, its true 3.5-5.5 sigma spikes at 0.047 and above; 0.02 lies
#: between (the geometric middle). 0.01 left the outlier unvetoed (se_t1 25 false detections -> 8), 0.03 vetoed a weak
#: spike on gre (3-5 sigma 0.919 -> 0.909). The previous weights, trained without noise-sized spikes, scored them
#: 0.001-0.002 and 0.0034: 0.003.
VETO_PROBABILITY = 0.02
DEFAULT_SENSITIVITY = 0.5
DEFAULT_CENTRE_RADIUS = 4.0
EDGE_PATCH_THRESHOLD = 0.5
CENTRE_PATCH_THRESHOLD = 0.8
TABLE_COLUMNS = ("slice", "coil", "pe", "ro", "magnitude", "score", "patch")


@dataclass(frozen=True)
class Detection:
    """Spikes found in a (coils, slices, ky, kx) k-space.

    mask:           (slices, ky, kx) bool, True at every flagged sample (the same sample in all coils).
    table:          one row per flagged sample, columns :data:`TABLE_COLUMNS`: slice, coil (-1: all coils,
                    coil-combined), pe (ky line), ro (kx sample), magnitude (root-sum-of-squares |k| over coils,
                    in the data's units), score (classical, combined: significance -log10 p of the sample;
                    network: the probability of the patch that flagged it), patch (index in the patch grid,
                    row-major, of the patch that flagged the sample: see :func:`flagging_patch`).
    slices:         per-slice summary: slice, spikes, target_patches, max_score.
    patch_scores:   (slices, P) per-patch score (classical: max sample significance; network, combined: the
                    classifier's probability).
    target_patches: (slices, P) bool (classical, combined: the patches holding a flagged sample).
    grid:           the patch grid (patent tiling) over (ky, kx).
    detector, sensitivity: the settings used.
    core_spikes:    {(slice, ky, kx): (coils,) complex} the measured value of each spike flagged in the core about
                    DC (:attr:`scanai.kspace.classical.SliceDetection.core_spikes`), which :func:`calibrate`
                    subtracts.
    """

    mask: np.ndarray
    table: list[dict[str, float]]
    slices: list[dict[str, float]]
    patch_scores: np.ndarray
    target_patches: np.ndarray
    grid: PatchGrid
    detector: str
    sensitivity: float
    settings: dict[str, float] = field(default_factory=dict)
    core_spikes: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of flagged samples."""
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class CalibrationResult:
    """Everything :func:`run` makes.

    detection:  the :class:`Detection`.
    corrected:  corrected k-space as :class:`KSpaceData` (same settings as the input; identical data when
                nothing was flagged or ``detect_only``).
    original, corrected_image: RSS images (Volume (slices, ny, nx), the input's pixel spacing).
    difference: ``original - corrected_image`` (Volume, same geometry).
    log_kspace: log-magnitude k-space of the input (Volume (slices, ky, kx), one voxel per sample).
    method:     correction method used ("none" for detect-only).
    """

    detection: Detection
    corrected: KSpaceData
    original: Volume
    corrected_image: Volume
    difference: Volume
    log_kspace: Volume
    method: str


def _as_kspace(kspace: KSpaceData | np.ndarray) -> KSpaceData:
    if isinstance(kspace, KSpaceData):
        return kspace
    return KSpaceData(as_kspace_array(kspace), source="array")


def _network_classifier():  # noqa: ANN202 - returns the imported module
    """The ``scanai.kspace.network`` module (imported lazily: it brings torch); ModelError when unavailable."""
    try:
        from scanai.kspace import network
    except ImportError as error:
        raise ModelError("The network spike detector is not available in this installation "
                         f"({error}).", "Use the classical detector (detector='classical').") from error
    if not hasattr(network, "classify_patches"):
        raise ModelError("The installed network module has no patch classifier.", "Use the classical detector.")
    return network


def patch_thresholds(grid: PatchGrid) -> np.ndarray:
    """(P,) probability thresholds: 0.8 for patches holding any sample within one patch size of DC, else 0.5
    (patent cl. 8-9: the centre threshold is greater)."""
    distance = centre_distance(grid.shape)
    central = np.array([distance[r:r + grid.size, c:c + grid.size].min() <= grid.size / 2
                        for r, c in grid.anchors()])
    return np.where(central, CENTRE_PATCH_THRESHOLD, EDGE_PATCH_THRESHOLD)


def flagging_patch(anchors: np.ndarray, size: int, targets: np.ndarray, scores: np.ndarray, y: int, x: int
                   ) -> int:
    """Index of the patch that flagged sample (y, x): among the patches that contain it (several where they
    overlap), the target patches if any, and of those the one with the highest score (the network's probability,
    the classical detector's patch significance); ties go to the first in row-major order.

    anchors: (P, 2) upper-left corners (:meth:`PatchGrid.anchors`); targets, scores: (P,) of the sample's slice.
    """
    inside = np.flatnonzero((anchors[:, 0] <= y) & (y < anchors[:, 0] + size)
                            & (anchors[:, 1] <= x) & (x < anchors[:, 1] + size))
    chosen = inside[targets[inside]] if targets[inside].any() else inside
    return int(chosen[np.argmax(scores[chosen])])


def _classify(plane: np.ndarray, grid: PatchGrid, network) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(probabilities (P,) float64, targets (P,) bool) of the patch classifier on one (coils, ky, kx) plane."""
    probabilities = np.asarray(network.classify_patches(plane, grid), dtype=np.float64).reshape(-1)
    if probabilities.shape != (len(grid),) or not np.all(np.isfinite(probabilities)):
        raise ModelError(f"The patch classifier returned {probabilities.shape} values for {len(grid)} patches.",
                         "Reinstall the k-space model or use the classical detector.")
    thresholds = getattr(network, "patch_thresholds", patch_thresholds)(grid)
    return probabilities, probabilities > thresholds


def classifier_prior(grid: PatchGrid, probabilities: np.ndarray, targets: np.ndarray,
                     veto: float = VETO_PROBABILITY) -> np.ndarray:
    """(ky, kx) int8 opinion of the patch classifier on every sample, for the combined detector: 1 inside a target
    patch, -1 where every patch holding the sample scores below ``veto``, else 0 (probabilities, targets: (P,))."""
    best = np.zeros(grid.shape, dtype=np.float64)  # highest probability of the patches holding each sample
    placed = np.zeros(grid.shape, dtype=bool)
    for (r, c), probability, target in zip(grid.anchors(), probabilities, targets, strict=True):
        window = (slice(r, r + grid.size), slice(c, c + grid.size))
        np.maximum(best[window], probability, out=best[window])
        placed[window] |= bool(target)
    return np.where(placed, 1, np.where(best < veto, -1, 0)).astype(np.int8)


def _network_plane(plane: np.ndarray, grid: PatchGrid, sensitivity: float, centre_radius: float,
                   network, noise_power: np.ndarray | None = None  # noqa: ANN001
                   ) -> tuple[SliceDetection, np.ndarray, np.ndarray]:
    """The network detector on one (coils, ky, kx) plane: (its localisation, probabilities (P,), targets (P,)). The
    localisation covers what the classifier does not rule out (the combined detector's veto, here an exclusion):
    the target patches alone missed weak spikes wherever the classifier scored them low (partial-echo phantom
    >= 5 sigma 0.647 -> 0.981, 3-D 0.787 -> 0.987, bench seeds 0-19)."""
    probabilities, targets = _classify(plane, grid, network)
    found = localise(plane, grid, targets, sensitivity=sensitivity, centre_radius=centre_radius,
                     noise_power=noise_power, ruled_out=classifier_prior(grid, probabilities, targets) < 0)
    return found, probabilities.astype(np.float32), targets


def detect(kspace: KSpaceData | np.ndarray, detector: str = "classical", sensitivity: float = DEFAULT_SENSITIVITY,
           patch_size: int = DEFAULT_PATCH_SIZE, centre_radius: float = DEFAULT_CENTRE_RADIUS,
           progress: Progress | None = None) -> Detection:
    """Find spikes in ``kspace`` (:class:`KSpaceData` or a complex array (coils, slices, ky, kx) / (coils, ky, kx)
    / (ky, kx)), slice by slice.

    detector:      "classical", "network" or "combined" (the last two raise :class:`ModelError` when the network
                   is not installed).
    sensitivity:   in (0, 1]; 0.5 is the tuned default (no detection on the clean scanner files).
    patch_size:    patch edge in samples (patent: 32); clipped to the k-space size.
    centre_radius: samples within this distance (samples) of DC or of the k-space peak need the ring's far higher
                   levels (:class:`~scanai.kspace.peeling.Thresholds`).
    """
    if detector not in DETECTORS:
        raise InputError(f"Unknown spike detector '{detector}'.", f"Choose one of {', '.join(DETECTORS)}.")
    if int(patch_size) < 4:
        raise InputError(f"The patch size must be at least 4 samples, got {patch_size}.")
    ks = _as_kspace(kspace)
    data = ks.data
    noise_power = None if ks.noise_sigma is None else ks.noise_sigma ** 2
    progress = Progress.ensure(progress)
    classify = _network_classifier() if detector != "classical" else None
    _, slices, ky, kx = data.shape
    grid = PatchGrid.over((ky, kx), min(int(patch_size), ky, kx))
    anchors = grid.anchors()
    mask = np.zeros((slices, ky, kx), dtype=bool)
    patch_scores = np.zeros((slices, len(grid)), dtype=np.float32)
    targets = np.zeros((slices, len(grid)), dtype=bool)
    table: list[dict[str, float]] = []
    summary: list[dict[str, float]] = []
    core_spikes: dict[tuple[int, int, int], np.ndarray] = {}
    for index, _ in progress.iterate(range(slices), "Detecting spikes in slice"):
        plane = data[:, index]
        if detector != "network":
            prior, probabilities = None, None
            if classify is not None:  # combined: the classifier's opinion sets the classical levels
                probabilities, placed = _classify(plane, grid, classify)
                prior = classifier_prior(grid, probabilities, placed)
            found = detect_plane(plane, sensitivity, grid.size, centre_radius, noise_power=noise_power, prior=prior)
            mask[index], patch_scores[index], targets[index] = found.mask, found.patch_scores, found.target_patches
            if probabilities is not None:
                patch_scores[index] = probabilities
            sample_score = found.z
        else:
            found, patch_scores[index], targets[index] = _network_plane(plane, grid, sensitivity, centre_radius,
                                                                        classify, noise_power)
            mask[index], sample_score = found.mask, None
        core_spikes.update({(index, y, x): value for (y, x), value in found.core_spikes.items()})
        for y, x in zip(*np.nonzero(mask[index]), strict=True):
            patch = flagging_patch(anchors, grid.size, targets[index], patch_scores[index], int(y), int(x))
            score = float(sample_score[y, x]) if sample_score is not None else float(patch_scores[index, patch])
            table.append({"slice": index, "coil": -1, "pe": int(y), "ro": int(x),
                          "magnitude": float(np.linalg.norm(plane[:, y, x])), "score": score, "patch": patch})
        summary.append({"slice": index, "spikes": int(np.count_nonzero(mask[index])),
                        "target_patches": int(np.count_nonzero(targets[index])),
                        "max_score": float(patch_scores[index].max()) if len(grid) else 0.0})
    return Detection(mask, table, summary, patch_scores, targets, grid, detector, float(sensitivity),
                     {"patch_size": grid.size, "centre_radius": float(centre_radius)}, core_spikes)


def calibrate(kspace: KSpaceData | np.ndarray, detection: Detection, method: str = DEFAULT_METHOD,
              progress: Progress | None = None) -> np.ndarray:
    """Corrected copy of the k-space array (coils, slices, ky, kx): only ``detection.mask`` samples change. A spike
    in the core about DC is removed by subtracting its measured value (``detection.core_spikes``), whatever the
    method: no neighbour predicts the core (a 0.1 x max|k| spike there on the 32-coil file: 48-73 dB re-estimated,
    77-88 dB subtracted); the other flagged samples are then corrected by ``method`` around it."""
    data, mask = _as_kspace(kspace).data, detection.mask
    if detection.core_spikes:
        data, mask = data.copy(), mask.copy()
        for (index, y, x), value in detection.core_spikes.items():
            data[:, index, y, x] -= value.astype(data.dtype)
            mask[index, y, x] = False
    return correct(data, mask, method=method, progress=progress)


def run(kspace: KSpaceData | np.ndarray, detector: str = "classical", sensitivity: float = DEFAULT_SENSITIVITY,
        method: str = DEFAULT_METHOD, detect_only: bool = False, patch_size: int = DEFAULT_PATCH_SIZE,
        centre_radius: float = DEFAULT_CENTRE_RADIUS, progress: Progress | None = None) -> CalibrationResult:
    """Detect, correct (unless ``detect_only``) and reconstruct; see :class:`CalibrationResult`."""
    from dataclasses import replace

    ks = _as_kspace(kspace)
    progress = Progress.ensure(progress)
    detection = detect(ks, detector, sensitivity, patch_size, centre_radius, progress.sub(0.0, 0.6))
    if detect_only or detection.count == 0:
        corrected = ks
        progress.sub(0.6, 0.7)(1.0, "Nothing to correct" if not detect_only else "Detection only")
    else:
        corrected = replace(ks, data=calibrate(ks, detection, method, progress.sub(0.6, 0.7)))
    before = reconstruct(ks, progress.sub(0.7, 0.85))
    after = before if corrected is ks else reconstruct(corrected, progress.sub(0.85, 1.0))
    progress(1.0, "Done")
    difference = Volume((before.rss.array - after.rss.array).astype(np.float32), before.rss.geometry)
    return CalibrationResult(detection, corrected, before.rss, after.rss, difference, before.log_kspace,
                             "none" if detect_only else method)


def run_file(path: str | Path, allow_epi: bool = False, prewhiten: bool = False, detector: str = "classical",
             sensitivity: float = DEFAULT_SENSITIVITY, method: str = DEFAULT_METHOD, detect_only: bool = False,
             progress: Progress | None = None, axes: str | Sequence[str] | None = None,
             noise: str | Path | np.ndarray | None = None) -> CalibrationResult:
    """:func:`~scanai.kspace.io.read_kspace` then :func:`run` in one call (so one worker job reads and corrects).

    axes:  stored axis names of an array file (``"ky,kx,coil"``; None: the format's convention).
    noise: a noise covariance or noise scan of the same coils (a file or an array); its per-coil sigma
           (:attr:`KSpaceData.noise_sigma`) then sets the detector's noise level near DC.
    """
    from scanai.kspace.io import read_kspace

    progress = Progress.ensure(progress)
    kspace = read_kspace(path, allow_epi=allow_epi, prewhiten=prewhiten, axes=axes, noise=noise,
                         progress=progress.sub(0.0, 0.3))
    return run(kspace, detector, sensitivity, method, detect_only, progress=progress.sub(0.3, 1.0))
