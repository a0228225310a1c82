"""Multi-phase cardiac motion-artifact correction (seed 000): select, rank and correct phase volumes.

A *phase sequence* holds phase volumes, each reconstructed from one short acquisition window (a patent "image
sequence", digest §1.3). :func:`correct_phase_sequence` follows process 500:

1. windows and cardiac phases of every phase volume (:func:`phase_windows`: from the index values, a timing
   table and/or an ECG);
2. a motion amplitude per phase volume, from the images (¶56, inside an optional ROI) and, with an ECG, from the
   heart's reference contraction curve (¶57);
3. selection of N phase volumes (¶55-¶57: successive, N smallest image or ECG amplitude, below a threshold);
4. ranking (¶63-¶64, claims 7-9) and the output window (¶68-¶70: M < N, between the inputs);
5. correction by the trained network (the patent's model) or a classical baseline (best phase, plain mean,
   half-way warping, registration-based fusion, digest §7.2). The network's correction is guarded
   (:mod:`scanai.artifact_correction.guard`: the phases' mean where they agree, the bounded network where they
   disagree) and falls back to registration fusion, with a warning and the reason in the result, on inputs
   outside its training ranges or an uncertain correction (:func:`run_network_or_fallback`).

The result lies on the input grid exactly (same geometry, same scalar type) and is never written over the input.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scanai.artifact_correction import windows as win
from scanai.artifact_correction.timing import PhaseWindow, RPeaks
from scanai.core.errors import InputError
from scanai.core.image import VolumeSequence
from scanai.core.progress import Progress

#: Correction methods: the trained network and the classical baselines.
METHODS = ("network", "registration-fusion", "halfway", "best-phase", "mean")
#: Methods validated on simulated CT only (no real multi-phase CT with a motion-free truth exists here): never the
#: default, and labelled experimental wherever their output is shown (validated on real data, or withheld).
EXPERIMENTAL_METHODS = ("network",)
#: The default method: the classical twin, which assumes nothing learnt about the scanner's physics.
DEFAULT_METHOD = "registration-fusion"
#: What an experimental method's output says about itself (CLI note, the module's summary).
EXPERIMENTAL_NOTE = ("experimental: the network is validated on simulated CT only, not on real multi-phase CT; "
                     "check the result against the input phases")
METHOD_LABELS = {"network": "trained multi-phase network (the patent's model; experimental, simulation only)",
                 "registration-fusion": "registration-based motion-compensated fusion",
                 "halfway": "half-way warping between the two middle phases",
                 "best-phase": "the phase volume with the least motion, unchanged",
                 "mean": "plain mean of the middle phases (no registration)"}
#: Selection modes (¶55-¶57).
SELECTIONS = ("successive", "image-smallest", "image-below", "ecg-smallest", "ecg-below")
#: Phase volumes used by the classical methods when the network does not fix the count.
DEFAULT_COUNT = 4
#: A phase-indexed sequence given without an ECG needs no scan timing: selection by image motion, ranking, the
#: network and the output phase use the phases only. Its windows are then placed on a nominal 1 s cycle with
#: 10 ms windows, and their times are not reported (:func:`timing_is_nominal`).
NOMINAL_RR_S, NOMINAL_WINDOW_S = 1.0, 0.01


@dataclass(frozen=True)
class ArtifactCorrection:
    """Result of :func:`correct_phase_sequence`.

    corrected:        M corrected volumes on the input grid and scalar type; index = output phase (%) when known,
                      else the output window's centre (s).
    output_windows:   the M output windows (¶68-¶70).
    windows:          the windows of every input phase volume.
    image_amplitude:  (T,) image-based motion amplitude of every input phase volume (image units, ¶56).
    ecg_amplitude:    (T,) ECG-based amplitude (per second, ¶57), or None without an ECG.
    selected:         indices of the chosen phase volumes, in ranked order (the order fed to the method).
    method:           the correction method actually used; seconds: its run time.
    requested_method: the method asked for (``method`` differs when the network fell back to registration
                      fusion).
    fallback_reason:  why the network's correction was not used, in words (None when it was, or not asked for).
    uncertainty:      the network's relative correction uncertainty over test-time variants (NaN when it did not
                      run or had nothing to correct).
    """

    corrected: VolumeSequence
    output_windows: list[PhaseWindow]
    windows: list[PhaseWindow]
    image_amplitude: np.ndarray
    ecg_amplitude: np.ndarray | None
    selected: list[int]
    method: str
    seconds: float
    requested_method: str | None = None
    fallback_reason: str | None = None
    uncertainty: float = float("nan")

    @property
    def experimental(self) -> bool:
        """Whether the output came from a method validated on simulation only (:data:`EXPERIMENTAL_METHODS`)."""
        return self.method in EXPERIMENTAL_METHODS

    def table_rows(self) -> list[dict[str, object]]:
        """One row per input phase volume: item (1-based), window, cycle, phase, amplitudes, selected, rank."""
        rows = []
        for item, window in enumerate(self.windows):
            rank = self.selected.index(item) + 1 if item in self.selected else None
            rows.append({
                "item": item + 1, "window_start_s": window.start_s, "window_end_s": window.end_s,
                "cycle_index": window.cycle_index, "phase_pct": window.phase_pct,
                "image_motion_amplitude": float(self.image_amplitude[item]),
                "ecg_motion_amplitude": None if self.ecg_amplitude is None else float(self.ecg_amplitude[item]),
                "selected": rank is not None, "rank": rank})
        return rows


def phase_windows(sequence: VolumeSequence, window_s: float | None = None, r_peaks: RPeaks | None = None,
                  rr_s: float | None = None, timing: Sequence[PhaseWindow] | None = None) -> list[PhaseWindow]:
    """The acquisition window of every phase volume of ``sequence``.

    timing: windows from a timing table (:func:`scanai.artifact_correction.tables.read_timing_table`), one per phase
    volume;
    otherwise the sequence index values ("%" phase or "s" window centre) with windows of ``window_s`` seconds.
    With ``r_peaks`` (or a regular ``rr_s``) the cycle and phase of every window are filled in. A sequence indexed
    by phase (%) needs neither ``window_s`` nor ``rr_s`` unless an ECG is given (its motion amplitude integrates
    over the window): without them the windows are nominal (:data:`NOMINAL_RR_S`, :data:`NOMINAL_WINDOW_S`).
    """
    if timing is not None:
        windows = list(timing)
        if len(windows) != len(sequence):
            raise InputError(f"The timing table has {len(windows)} rows but the phase sequence has {len(sequence)} "
                             "phase volumes.", "Give one row (item, window_start_s, window_end_s) per phase volume.")
        if r_peaks is not None:
            return win.assign_phases(windows, r_peaks)
        if rr_s is not None:
            return win.assign_phases(windows, win.regular_peaks_covering(windows, rr_s))
        return windows
    if timing_is_nominal(sequence, window_s, r_peaks, rr_s, timing):
        return win.windows_from_index(sequence.index_values, sequence.index_unit, NOMINAL_WINDOW_S, None,
                                      NOMINAL_RR_S)
    if window_s is None:
        raise InputError("The acquisition window length of the phase volumes is not known.",
                         "Give the window length in seconds (e.g. 0.15 s for a half-scan at 0.3 s rotation) or "
                         "a timing table with window_start_s and window_end_s.")
    return win.windows_from_index(sequence.index_values, sequence.index_unit, window_s, r_peaks, rr_s)


def timing_is_nominal(sequence: VolumeSequence, window_s: float | None, r_peaks: RPeaks | None,
                      rr_s: float | None, timing: Sequence[PhaseWindow] | None) -> bool:
    """True when :func:`phase_windows` places the windows on a nominal cycle: a phase-indexed (%) sequence without
    a timing table or ECG, and without the window length or the R-R interval (so no window time can be known)."""
    if timing is not None or r_peaks is not None or not win.is_phase_index(sequence.index_unit):
        return False
    return window_s is None or rr_s is None


def phase_volume_problem(volume: np.ndarray) -> str | None:
    """What makes one phase volume (K, J, I) unusable, in words continuing "Phase n ...", or None when it holds an
    image: non-finite voxels (counted), all zero, or one value everywhere."""
    finite = np.isfinite(volume)
    if not finite.all():
        bad = int(volume.size - np.count_nonzero(finite))
        return f"holds {bad} non-finite voxel(s) (NaN or infinite) of {volume.size}: the reconstruction is damaged"
    low, high = float(volume.min()), float(volume.max())
    if low == high:
        seen = "is all zero" if low == 0 else f"has the same value ({low:g}) in every voxel"
        return f"{seen}: it holds no image (a failed reconstruction or export)"
    return None


def _phase_label(sequence: VolumeSequence, index: int) -> str:
    """'Phase 2 of 6 (66 %)': the 1-based position of a phase volume and its index value."""
    value = sequence.index_values[index]
    shown = f"{value:g} {sequence.index_unit}".strip() if sequence.index_unit else f"{sequence.index_name} {value:g}"
    return f"Phase {index + 1} of {len(sequence)} ({shown})"


def check_phase_volumes(sequence: VolumeSequence) -> np.ndarray:
    """The frames as float32 (T, K, J, I; exact for the integer HU of CT, half the memory of float64: 1 GB for
    four 512 x 512 x 250 phase volumes), checked before any computation: InputError for fewer than 2 phase
    volumes, or naming the first phase volume (1-based, with its index value) that holds non-finite voxels, only
    zeros or one constant value, and how many others are unusable."""
    if len(sequence) < 2:
        raise InputError(f"Motion-artifact correction needs at least 2 phase volumes, got {len(sequence)}.",
                         "Load the phase sequence of a multi-phase (ECG-gated) reconstruction.")
    frames = np.asarray(sequence.frames, dtype=np.float32)
    problems = [(t, phase_volume_problem(frames[t])) for t in range(frames.shape[0])]
    problems = [(t, problem) for t, problem in problems if problem]
    if problems:
        first, problem = problems[0]
        others = f"; phase(s) {', '.join(str(t + 1) for t, _ in problems[1:])} are unusable too" \
            if len(problems) > 1 else ""
        raise InputError(f"{_phase_label(sequence, first)} {problem}{others}.",
                         "Re-export the phase volumes from the reconstruction, or leave the unusable ones out.")
    return frames


def select_phases(windows: Sequence[PhaseWindow], count: int, selection: str, image_amplitude: np.ndarray,
                  ecg_amplitude: np.ndarray | None, threshold: float | None = None, first: int | None = None
                  ) -> list[int]:
    """Indices of ``count`` phase volumes by ``selection`` (one of :data:`SELECTIONS`), in index order.

    "successive" starts at the ``first``-th window in time order, or, when ``first`` is None, where the ``count``
    successive windows have the least summed image motion amplitude (ECG amplitude when given). The "-below"
    modes keep the ``count`` smallest among those under ``threshold`` (an error when fewer are).
    """
    if selection not in SELECTIONS:
        raise InputError(f"Unknown selection '{selection}'.", f"Choose one of {', '.join(SELECTIONS)}.")
    if count > len(windows):
        raise InputError(f"{count} phase volumes are needed but the phase sequence has only {len(windows)}.",
                         "Reconstruct more phases (windows) of the scan, or choose a method that needs fewer.")
    if selection == "successive":
        if first is None:
            amplitude = image_amplitude if ecg_amplitude is None else ecg_amplitude
            in_time = np.argsort([w.mid_s for w in windows], kind="stable")
            sums = np.convolve(amplitude[in_time], np.ones(count), mode="valid")
            first = int(np.argmin(sums))
        return sorted(win.select_successive(windows, count, first))
    amplitude = image_amplitude
    if selection.startswith("ecg"):
        if ecg_amplitude is None:
            raise InputError("ECG-based selection needs an ECG or R-peak table.",
                             "Load the ECG recorded during the scan, or choose an image-based selection.")
        amplitude = ecg_amplitude
    if selection.endswith("below"):
        if threshold is None:
            raise InputError("The '-below' selections need an amplitude threshold.",
                             "Give the threshold, or select the N smallest amplitudes instead.")
        below = win.select_below(amplitude, threshold, minimum=count)
        return sorted(sorted(below, key=lambda i: amplitude[i])[:count])
    return sorted(win.select_smallest(amplitude, count))


@dataclass(frozen=True)
class NetworkOutcome:
    """What :func:`run_network_or_fallback` did: the (M, K, J, I) volumes, the method used ("network" or
    "registration-fusion"), why it fell back (None when it did not) and the network's uncertainty (NaN when it
    did not run or had nothing to correct)."""

    volumes: np.ndarray
    method: str
    fallback_reason: str | None
    uncertainty: float


def run_network_or_fallback(phases: np.ndarray, phase_pct: Sequence[float], spacing_mm: Sequence[float], corrector,
                            progress: Progress | None = None) -> NetworkOutcome:
    """The network's guarded correction of ranked (N, K, J, I) phase volumes, or registration fusion (its
    classical twin) when the input lies outside the network's training ranges or its correction is uncertain
    (:mod:`scanai.artifact_correction.guard`); a fallback is announced by a ``UserWarning`` naming the reason.

    spacing_mm: (i, j, k) voxel size in mm; phase_pct: (N,) phases (%).
    """
    from scanai.artifact_correction import baselines as baselines
    from scanai.artifact_correction import guard

    progress = Progress.ensure(progress)
    pixel_mm = (float(spacing_mm[1]), float(spacing_mm[0]))
    # once: the training-range check and the guard (which works in float32) both measure the phases' disagreement
    noise = guard.noise_map_hu(np.asarray(phases, dtype=np.float32))
    problems = guard.out_of_distribution(guard.input_features(phases, pixel_mm, noise), corrector.training_ranges)
    uncertainty = float("nan")
    if not problems:
        guarded = corrector.correct_guarded(phases, phase_pct, pixel_mm, progress.sub(0.0, 0.5), noise)
        uncertainty = guarded.uncertainty
        if not uncertainty > guard.MAX_UNCERTAINTY:
            progress(1.0, "Motion artifacts corrected by the network")
            return NetworkOutcome(guarded.output, "network", None, uncertainty)
        problems = [f"the network's correction is uncertain (its flipped variants differ by {uncertainty:.0%} of "
                    f"the correction; at most {guard.MAX_UNCERTAINTY:.0%} is trusted)"]
    else:
        problems = ["the input lies outside what the network was trained on: " + "; ".join(problems)]
    reason = problems[0]
    warnings.warn(f"Registration fusion was used instead of the network: {reason}.", UserWarning, stacklevel=2)
    progress(0.5, "Falling back to registration fusion")
    fused = baselines.registration_fusion(phases, spacing_mm, progress.sub(0.5, 1.0))[None]
    return NetworkOutcome(np.repeat(fused, corrector.n_outputs, axis=0), "registration-fusion", reason, uncertainty)


def _run_method(method: str, phases: np.ndarray, phase_pct: list[float], spacing_mm: tuple[float, ...],
                corrector, roi: np.ndarray | None, progress: Progress) -> NetworkOutcome:
    """The corrected (M, K, J, I) volumes of ranked (N, K, J, I) phase volumes, with the method used
    (``corrector``: the network, for method "network"; ``roi``: for best-phase)."""
    if method == "network":
        return run_network_or_fallback(phases, phase_pct, spacing_mm, corrector, progress)
    return NetworkOutcome(_classical(method, phases, spacing_mm, roi, progress), method, None, float("nan"))


def _classical(method: str, phases: np.ndarray, spacing_mm: tuple[float, ...], roi: np.ndarray | None,
               progress: Progress) -> np.ndarray:
    """(1, K, J, I) volume of a classical method from ranked (N, K, J, I) phase volumes."""
    from scanai.artifact_correction import baselines as baselines

    if method == "registration-fusion":
        return baselines.registration_fusion(phases, spacing_mm, progress)[None]
    if method == "halfway" and phases.shape[0] % 2 == 0:
        middle = phases.shape[0] // 2
        return baselines.halfway_warp(phases[middle - 1], phases[middle], spacing_mm, progress)[None]
    if method == "best-phase":
        return baselines.best_phase(phases, roi)[1][None]
    return baselines.plain_mean(phases)[None]  # also "halfway" with an odd count: the middle phase


def _like_input(volumes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``volumes`` in the input's scalar type (rounded and clipped for integer types)."""
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        return np.clip(np.rint(volumes), limits.min, limits.max).astype(dtype)
    return volumes.astype(dtype)


def correct_phase_sequence(sequence: VolumeSequence, windows: Sequence[PhaseWindow], method: str = DEFAULT_METHOD,
                           selection: str = "successive", count: int | None = None, first: int | None = None,
                           threshold: float | None = None, r_peaks: RPeaks | None = None,
                           roi: np.ndarray | None = None, descending: bool = False, device: str = "auto",
                           progress: Progress | None = None) -> ArtifactCorrection:
    """Correct the motion artifacts of a phase sequence (process 500, see the module docstring).

    sequence: (T, K, J, I) phase volumes (any scalar type, e.g. HU), one per window of ``windows``.
    count: the number N of phase volumes to combine (the network fixes it; default 4 for the other methods).
    roi: optional (K, J, I) bool mask limiting the image-based motion amplitude (e.g. the heart).
    descending: rank in descending order (the network was trained on ascending order).
    """
    progress = Progress.ensure(progress)
    if method not in METHODS:
        raise InputError(f"Unknown method '{method}'.", f"Choose one of {', '.join(METHODS)}.")
    frames = check_phase_volumes(sequence)
    windows = list(windows)
    if len(windows) != len(sequence):
        raise InputError(f"{len(windows)} windows were given for {len(sequence)} phase volumes.",
                         "Give one acquisition window per phase volume.")
    n_outputs, corrector = 1, None
    if method == "network":
        from scanai.artifact_correction.network import load_artifact_corrector

        corrector = load_artifact_corrector(device)
        if count not in (None, corrector.n_inputs):
            raise InputError(f"The network was trained for {corrector.n_inputs} phase volumes, not {count}.",
                             f"Select {corrector.n_inputs} phase volumes, or use a classical method.")
        count, n_outputs = corrector.n_inputs, corrector.n_outputs
    count = min(DEFAULT_COUNT, len(sequence)) if count is None else int(count)
    if count < 2:
        raise InputError(f"At least 2 phase volumes must be combined, got {count}.")
    progress(0.02, "Measuring the motion of every phase volume")
    mask = None if roi is None else np.broadcast_to(np.asarray(roi, dtype=bool), frames.shape[1:])
    image_amplitude = win.image_motion_amplitude(frames, mask)
    ecg_amplitude = None if r_peaks is None else win.ecg_motion_amplitude(windows, r_peaks)
    chosen = select_phases(windows, count, selection, image_amplitude, ecg_amplitude, threshold, first)
    order = win.rank_windows([windows[i] for i in chosen], descending)
    ranked = [chosen[i] for i in order]
    ranked_windows = [windows[i] for i in ranked]
    if not win.same_cycle(ranked_windows):
        if r_peaks is None:
            raise InputError("The selected phase volumes come from different heart cycles.",
                             "Give the ECG / R-peak table so that their phases can be compared.")
        ranked_windows = win.to_one_cycle(ranked_windows, r_peaks, ranked_windows[0].cycle_index or 0)
    chronological = sorted(ranked_windows, key=lambda w: w.mid_s)
    outputs = win.output_windows(chronological, n_outputs)
    phase_pct = [w.phase_pct if w.phase_pct is not None else np.nan for w in ranked_windows]
    if method == "network" and not np.isfinite(phase_pct).all():
        raise InputError("The network needs the cardiac phase of every phase volume, but the scan timing is missing.",
                         "Give the R-R interval or an ECG / R-peak table, or index the phase sequence by phase (%).")
    progress(0.1, f"Correcting with the {METHOD_LABELS[method]}")
    start = time.perf_counter()
    outcome = _run_method(method, frames[ranked], phase_pct, sequence.geometry.spacing_mm, corrector, mask,
                          progress.sub(0.1, 0.98))
    seconds = time.perf_counter() - start
    corrected = outcome.volumes
    index = [w.phase_pct if w.phase_pct is not None else w.mid_s for w in outputs]
    unit = "%" if all(w.phase_pct is not None for w in outputs) else "s"
    result = VolumeSequence(_like_input(corrected, sequence.frames.dtype), sequence.geometry, tuple(index),
                            "phase" if unit == "%" else "time", unit)
    progress(1.0, "Motion-artifact correction done")
    return ArtifactCorrection(result, outputs, windows, image_amplitude, ecg_amplitude, ranked, outcome.method,
                              seconds, method, outcome.fallback_reason, outcome.uncertainty)
