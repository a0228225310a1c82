"""``scanai motion-correct``: multi-phase cardiac motion-artifact correction (seed 000), and its demo.

Input: a phase sequence (a Slicer ``.seq.nrrd`` whose index is the cardiac phase in % or the window centre in s,
or a 4-D NRRD/NIfTI whose last axis is time), or several phase volumes (NRRD/NIfTI/MHA) with ``--phases``.
Timing: ``--window`` (acquisition window length, s) with ``--rr`` (a regular R-R interval, s) or ``--ecg`` (a
CSV/TSV with ``time_s, ecg_mV`` or ``r_peak_time_s``), or ``--timing`` (a table with ``item, window_start_s,
window_end_s``). A sequence indexed by phase (%) needs none of them (they cannot change its result) unless an ECG
is given. Output folder:

- ``corrected.nrrd`` (one output) or ``corrected.seq.nrrd`` (several): on the input grid, same scalar type;
- ``phases.csv``: per input phase volume the window, cycle, phase, motion amplitudes, whether it was selected and
  its rank; ``summary.json``: the method asked for and the method actually used (the network falls back to
  registration fusion, with the reason, on inputs unlike its training data or an uncertain correction), whether
  that method is experimental, the model (name, sha256), the input phases, the output window(s) and the seconds.

The default method is registration fusion: the trained network is validated on simulated CT only, so it runs only
when asked for (``--method network``) and its output is labelled experimental.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import VolumeSequence
from scanai.core.progress import tqdm_progress


def _phase_list(text: str) -> list[float]:
    """``69,72,75,78`` as floats (argparse reports anything else as a usage error)."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers (e.g. 69,72,75,78)")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai motion-correct``."""
    from scanai.artifact_correction.pipeline import DEFAULT_METHOD, METHOD_LABELS, METHODS, SELECTIONS

    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                        help="a phase sequence (.seq.nrrd, 4-D NRRD/NIfTI), or several phase volumes with --phases")
    parser.add_argument("--phases", type=_phase_list, default=None, metavar="P1,P2,...",
                        help="cardiac phase (%% of R-R) of each phase volume, when several volumes are given")
    parser.add_argument("--window", type=float, default=None, metavar="S",
                        help="acquisition window of each phase volume in s: for a fan-beam half-scan, (180 deg + "
                             "fan angle) / 360 x rotation time, e.g. (180 + 50) / 360 x 0.28 s = 0.179 s. Needed for "
                             "a sequence indexed by time or with --ecg; not for one indexed by phase (%%)")
    parser.add_argument("--rr", type=float, default=None, metavar="S",
                        help="regular R-R interval in s (places the windows in time; not needed for a sequence "
                             "indexed by phase (%%))")
    parser.add_argument("--ecg", type=Path, default=None, metavar="TABLE",
                        help="ECG table (time_s, ecg_mV) or R-peak table (r_peak_time_s), CSV/TSV")
    parser.add_argument("--timing", type=Path, default=None, metavar="TABLE",
                        help="timing table: item, window_start_s, window_end_s (optional cycle_index, phase_pct)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                        help="; ".join(f"{m} = {label}" for m, label in METHOD_LABELS.items())
                        + f" (default {DEFAULT_METHOD}; the network is validated on simulated CT only)")
    parser.add_argument("--selection", choices=SELECTIONS, default="successive",
                        help="how the phase volumes are chosen (¶55-¶57; default successive: the N consecutive "
                             "windows with the least motion, or from --first)")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="phase volumes to combine (the network fixes it; default 4)")
    parser.add_argument("--first", type=int, default=None, metavar="K",
                        help="successive selection: start at the K-th window in time order (0-based)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="amplitude threshold of the '-below' selections")
    parser.add_argument("--roi", type=Path, default=None, metavar="LABELMAP",
                        help="mask on the phase volumes' grid (e.g. the heart) for the image motion amplitude")
    parser.add_argument("--descending", action="store_true", help="rank in descending order (¶63)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="network device")
    parser.add_argument("--out", type=Path, default=Path("motion_correct_output"), metavar="DIR",
                        help="output folder (default ./motion_correct_output)")


def load_phase_sequence(inputs: list[Path], phases: list[float] | None) -> VolumeSequence:
    """One phase sequence from a sequence file, or from several volume files with their phases (%)."""
    from scanai.io.sequence_file import read_sequence
    from scanai.io.sitk_image import read_image

    if len(inputs) == 1:
        if phases is not None:
            raise InputError("--phases goes with several phase-volume files, not with one sequence file.",
                             "Leave --phases out (the sequence carries its phases), or give one file per phase.")
        return read_sequence(inputs[0])
    if phases is None or len(phases) != len(inputs):
        raise InputError(f"{len(inputs)} phase volumes were given with "
                         f"{0 if phases is None else len(phases)} phases.",
                         "Give --phases with one cardiac phase (%) per file, e.g. --phases 69,72,75,78.")
    return VolumeSequence.from_volumes([read_image(path) for path in inputs], phases, "phase", "%")


def run(args: argparse.Namespace) -> int:
    """Run ``scanai motion-correct``; prints a summary and the written paths, returns 0."""
    from scanai.artifact_correction.pipeline import (
        EXPERIMENTAL_NOTE,
        METHOD_LABELS,
        check_phase_volumes,
        correct_phase_sequence,
        phase_windows,
        timing_is_nominal,
    )
    from scanai.artifact_correction.tables import read_ecg_table, read_timing_table
    from scanai.io.sequence_file import write_sequence
    from scanai.io.sitk_image import read_image, write_image
    from scanai.motion.export import write_table

    sequence = load_phase_sequence(list(args.inputs), args.phases)
    check_phase_volumes(sequence)  # before the timing tables and any computation
    r_peaks = read_ecg_table(args.ecg) if args.ecg is not None else None
    timing = read_timing_table(args.timing) if args.timing is not None else None
    windows = phase_windows(sequence, args.window, r_peaks, args.rr, timing)
    roi = None
    if args.roi is not None:
        from scanai.core.image import mask_on_grid

        roi = mask_on_grid(read_image(args.roi), sequence.frames.shape[1:], sequence.geometry, "ROI")
    with tqdm_progress(f"Motion-artifact correction ({args.method})") as progress:
        result = correct_phase_sequence(sequence, windows, args.method, args.selection, args.count, args.first,
                                        args.threshold, r_peaks, roi, args.descending, args.device, progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corrected = result.corrected
    path = (write_image(corrected.frame(0), out / "corrected.nrrd") if len(corrected) == 1
            else write_sequence(corrected, out / "corrected.seq.nrrd"))
    table = write_table(result.table_rows(), out / "phases.csv")
    nominal = timing_is_nominal(sequence, args.window, r_peaks, args.rr, timing)
    summary = run_summary(result, sequence, nominal)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    shown = ", ".join(("" if nominal else f"{w.start_s:.3f}-{w.end_s:.3f} s ")
                      + (f"({w.phase_pct:.1f} %)" if w.phase_pct is not None else "") for w in result.output_windows)
    print(f"{METHOD_LABELS[result.method]}: phase volumes {[i + 1 for i in result.selected]} (ranked) -> output "
          f"window {shown.strip()}, in {result.seconds:.2f} s.")
    if result.fallback_reason:
        print(f"Registration fusion was used instead of the network: {result.fallback_reason}.")
    if result.experimental:
        print(f"Note: {EXPERIMENTAL_NOTE}.")
    print(f"{'corrected:':12s}{path}\n{'phase table:':12s}{table}\n{'summary:':12s}{out / 'summary.json'}")
    return 0


def run_summary(result, sequence: VolumeSequence, nominal: bool) -> dict:
    """summary.json of one run (:class:`~scanai.artifact_correction.pipeline.ArtifactCorrection` ``result`` of
    ``sequence``): the method asked for and used (with the fallback reason, the network's uncertainty and whether the
    method used is experimental), the model (name, sha256) when the network was asked for, the input phases (every
    phase volume's index value, phase and rank), the output window(s) (times null when ``nominal``) and the
    seconds."""
    model = None
    if result.requested_method == "network":
        from scanai.artifact_correction.network import MODEL_NAME
        from scanai.core.catalog import load_card

        model = {"name": MODEL_NAME, "sha256": load_card(MODEL_NAME).sha256}
    uncertainty = result.uncertainty if np.isfinite(result.uncertainty) else None
    phases = [{"item": item + 1, "index_value": float(sequence.index_values[item]), "index_unit": sequence.index_unit,
               "phase_pct": window.phase_pct, "rank": result.selected.index(item) + 1 if item in result.selected
               else None} for item, window in enumerate(result.windows)]
    return {"method": result.method, "requested_method": result.requested_method, "experimental": result.experimental,
            "fallback_reason": result.fallback_reason, "network_uncertainty": uncertainty, "model": model,
            "input_phases": phases, "selected_items": [i + 1 for i in result.selected],
            "timing": "nominal (phase-indexed sequence without scan timing)" if nominal else "scan",
            "output_windows": [{"start_s": None if nominal else w.start_s, "end_s": None if nominal else w.end_s,
                                "phase_pct": w.phase_pct} for w in result.output_windows],
            "seconds": result.seconds}


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Simulated multi-phase cardiac CT: the network and the classical baselines side by side (figure + numbers)."""
    from scanai.artifact_correction.figures import comparison_demo

    return comparison_demo(Path(out_dir))
