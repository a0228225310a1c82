"""``scanai motion``: dense motion over a cine, with Jacobian maps, label propagation and strain; and the demo.

Input: a cine (see :func:`scanai.io.cine.read_cine`): a DICOM cine folder (``--list`` shows its slice locations,
``--slice N`` chooses one), a multi-frame DICOM file, a Slicer ``.seq.nrrd`` or a 4-D NRRD/NIfTI whose last axis is
time. Optional ``--labels``: a label map drawn on one frame (PNG, ``.npy``, 2-D or 3-D NRRD/NIfTI on the cine's
grid; 0 = background); with ``--myocardium-label`` strain is computed. ``--dims 2d`` (the default) estimates every
slice on its own; ``--dims 3d`` takes the whole stack (or a 3-D+t file) as one volume per frame and follows the
through-plane motion too (method ``svf3d`` by default, see :mod:`scanai.motion.svf3d`; or the experimental
``network-3d``, :mod:`scanai.motion.network3d`, demons or bspline in 3-D).

Frames are numbered from 1 everywhere (``--reference``, ``--labels-frame``, ``motion.csv``'s ``frame``, the summary,
Slicer's sequence browser). The reference is end-diastole, found automatically unless ``--reference`` is given
(:mod:`scanai.motion.end_diastole`). Output folder:

- ``warped.seq.nrrd``: the frames resampled onto the reference (motion-compensated cine);
- ``displacement.seq.nrrd``: the displacement field of every frame as one vector-volume sequence (LPS vectors in
  mm, pull-back convention, zero at the reference); with ``--displacement-folder`` also
  ``displacement/frame_NNN.nrrd`` (NNN = frame, from 001), one ITK displacement field per frame, which Slicer
  loads as a grid transform;
- ``jacobian.seq.nrrd``: det(I + grad u) per frame (<= 0 = folding);
- ``labels.seq.nrrd``: the label map carried to every frame (with ``--labels``);
- ``motion.csv``: per frame time, GCS_pct, GRS_pct, fold_fraction, mean_displacement_mm, mean_residual, the LV
  cavity size and, with AHA segments, segmental strain;
- ``strain_peaks.csv``: peak circumferential and radial strain, global and per AHA segment, with their frames;
- ``strain.png``: global circumferential and radial strain over the cycle (with a myocardium label);
- ``summary.json``: the input, the method and its options (the network's refinement steps and passes), the model
  (name, sha256) for the networks, the reference frame and the rule that chose it, the seconds, the largest folding
  fraction and the peak global strains with their frames.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from scanai.core.image import VolumeSequence
from scanai.core.progress import tqdm_progress

SUNNYBROOK_CASE = Path("cardiac") / "sunnybrook" / "dicoms" / "SCD0000101"
FRAMES_FROM_ONE = "frames are numbered from 1, as in Slicer's sequence browser and motion.csv"


def _ras_point(text: str) -> tuple[float, float, float]:
    """``R,A,S`` in mm as a tuple (argparse reports anything else as a usage error)."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"'{text}' is not R,A,S in mm (e.g. -12.5,30,4)")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai motion``."""
    from scanai.motion.pipeline import DIMS_METHODS, METHOD_LABELS, METHODS

    parser.add_argument("input", type=Path,
                        help="cine: DICOM folder or multi-frame DICOM file, Slicer .seq.nrrd, or 4-D NRRD/NIfTI "
                             "(last axis time)")
    parser.add_argument("--list", action="store_true",
                        help="list the cine's slice locations (slice number for --slice, location, images, phases, "
                             "trigger times) and stop; writes nothing")
    parser.add_argument("--slice", type=int, default=None,
                        help="slice to use, as --list numbers them (from 0): a slice location of a DICOM cine folder, "
                             "or slice k of a 3-D+t file (default: every slice, as a 3-D+t stack)")
    parser.add_argument("--reference", type=int, default=None, metavar="FRAME",
                        help=f"reference frame ({FRAMES_FROM_ONE}); strain is relative to it. Default: end-diastole "
                             "found automatically: the largest LV cavity of --labels (blood pool, or the "
                             "myocardium's hole), else the ECG trigger time nearest the R wave, else frame 1")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="motion estimator: " + "; ".join(f"{m} = {label}" for m, label in METHOD_LABELS.items())
                             + " (default: network in 2-D, svf3d in 3-D)")
    parser.add_argument("--dims", choices=("2d", "3d"), default="2d",
                        help="2d (default) = every slice on its own (in-plane motion; methods "
                             f"{', '.join(DIMS_METHODS['2d'])}); 3d = one volume per frame, through-plane motion "
                             "included (a multi-slice cine or 3-D+t file, at least 4 slices, without --slice; "
                             f"methods {', '.join(DIMS_METHODS['3d'])})")
    parser.add_argument("--scheme", choices=("reference", "consecutive"), default=None,
                        help="image pairs of the network methods: (reference, t) or consecutive (t-1, t) around "
                             "the closed cycle, composed (default reference)")
    parser.add_argument("--refine-steps", type=int, default=None, metavar="N",
                        help="network methods: steps of instance optimisation on this cine after the network "
                             "(default 30, about 0.3 s per 20-frame 256x256 slice; closer strain on phantoms); 0 = the "
                             "network alone, in three passes")
    parser.add_argument("--labels", type=Path, default=None, metavar="LABELMAP",
                        help="label map drawn on one frame of the cine, on its pixel grid: PNG, .npy, 2-D NRRD/NIfTI, "
                             "or a NRRD/NIfTI with the cine's geometry; carried to every frame")
    parser.add_argument("--labels-frame", type=int, default=None, metavar="FRAME",
                        help=f"frame the label map was drawn on ({FRAMES_FROM_ONE}); default: the reference frame. "
                             "Needed with --labels when --reference is left out")
    parser.add_argument("--myocardium-label", type=int, default=None, metavar="N",
                        help="label of the LV myocardium in --labels: enables strain")
    parser.add_argument("--blood-pool-label", type=int, default=None, metavar="N",
                        help="label of the LV blood pool in --labels (its centroid is the LV centre; its size "
                             "finds end-diastole)")
    parser.add_argument("--rv-insertion", type=_ras_point, default=None, metavar="R,A,S",
                        help="anterior RV insertion point in RAS mm: AHA segmental strain (with --level); write "
                             "--rv-insertion=-12,30,4 when the first coordinate is negative")
    parser.add_argument("--level", choices=("basal", "mid", "apical"), default=None,
                        help="short-axis level of the slice, for AHA segments")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network or svf3d runs (default auto: a GPU when present)")
    parser.add_argument("--displacement-folder", action="store_true",
                        help="also write one ITK displacement field per frame (displacement/frame_001.nrrd, ...), "
                             "each loadable in Slicer as a grid transform (default: only displacement.seq.nrrd)")
    parser.add_argument("--out", type=Path, default=Path("motion_output"), metavar="DIR",
                        help="output folder (default ./motion_output)")


def list_slices(path: Path) -> list[str]:
    """``--list``: one line per slice location of the cine (a DICOM folder's locations, or the k slices of a file)."""
    from scanai.io.cine import describe_slice, list_cine_slices, read_cine

    if Path(path).is_dir():
        slices = list_cine_slices(path)
        lines = [describe_slice(cine_slice, number, len(slices)) for number, cine_slice in enumerate(slices)]
        return lines + [f"{len(slices)} slice location(s); choose one with --slice N (N as listed, from 0), or leave "
                        "--slice out to use all of them as one 3-D+t stack."]
    sequence = read_cine(path)
    geometry, count = sequence.geometry, sequence.frames.shape[1]
    normal = np.asarray(geometry.directions)[:, 2]
    times = np.asarray(sequence.index_values)
    unit = f" {sequence.index_unit}" if sequence.index_unit else ""
    lines = [f"slice {k} of {count} (0-based) at {float(normal @ geometry.ras_of_ijk(np.array([0.0, 0.0, k]))):.1f} "
             f"mm along the slice normal: {len(sequence)} frames, {sequence.index_name} {times[0]:.4g}-"
             f"{times[-1]:.4g}{unit}" for k in range(count)]
    return lines + [f"{count} slice(s) in {Path(path).name}; choose one with --slice N."]


def _labels_dtype(labels: np.ndarray) -> np.ndarray:
    """Smallest unsigned type that holds the labels (NRRD-writable)."""
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)


def strain_figure(rows: list[dict[str, float]], sequence: VolumeSequence, path: Path, title: str) -> Path:
    """GCS and GRS (%) against the sequence index as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [row["time"] for row in rows]
    figure, axis = plt.subplots(figsize=(6.0, 3.6))
    axis.axhline(0.0, color="0.6", linewidth=0.8)
    axis.plot(times, [row["GCS_pct"] for row in rows], "o-", label="global circumferential (GCS)")
    axis.plot(times, [row["GRS_pct"] for row in rows], "s-", label="global radial (GRS)")
    unit = f" ({sequence.index_unit})" if sequence.index_unit else ""
    axis.set_xlabel(f"{sequence.index_name}{unit}")
    axis.set_ylabel("strain (%)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.9)  # fixed margins: tight_layout costs 0.2 s
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_outputs(sequence: VolumeSequence, result, out_dir: Path,
                  displacement_folder: bool = False) -> dict[str, Path]:
    """Write a :class:`~scanai.motion.pipeline.CineMotion` into ``out_dir`` (files listed in the module doc).

    Returns the paths: "warped", "displacement", "jacobian", "table", and "displacement_folder", "labels", "peaks"
    and "strain_plot" when written.
    """
    from scanai.io.sequence_file import write_sequence_nrrd
    from scanai.motion.export import write_displacement_field, write_displacement_sequence, write_table
    from scanai.motion.pipeline import peak_strain_rows, strain_rows

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = result.fields

    def like_input(frames: np.ndarray) -> VolumeSequence:
        return VolumeSequence(frames, sequence.geometry, sequence.index_values, sequence.index_name,
                              sequence.index_unit)

    # float sequences uncompressed: gzip would take as long as the whole analysis and save little on float data
    paths = {"warped": write_sequence_nrrd(fields.warped, out_dir / "warped.seq.nrrd", compress=False),
             "displacement": write_displacement_sequence(fields.displacement_mm, sequence,
                                                         out_dir / "displacement.seq.nrrd")}
    if displacement_folder:
        for frame in range(len(sequence)):
            write_displacement_field(fields.displacement_mm[frame], sequence.geometry,
                                     out_dir / "displacement" / f"frame_{frame + 1:03d}.nrrd")
        paths["displacement_folder"] = out_dir / "displacement"
    paths["jacobian"] = write_sequence_nrrd(like_input(result.jacobian), out_dir / "jacobian.seq.nrrd",
                                            compress=False)
    if result.labels is not None:
        paths["labels"] = write_sequence_nrrd(like_input(_labels_dtype(result.labels)), out_dir / "labels.seq.nrrd")
    rows = strain_rows(result, sequence)
    paths["table"] = write_table(rows, out_dir / "motion.csv")
    if result.strain is not None:
        paths["peaks"] = write_table(peak_strain_rows(result), out_dir / "strain_peaks.csv")
        paths["strain_plot"] = strain_figure(rows, sequence, out_dir / "strain.png",
                                             f"Myocardial strain ({fields.method}), relative to frame "
                                             f"{fields.reference_index + 1} (end-diastole)")
    return paths


def _one_based(value: int | None, count: int, what: str, flag: str) -> int | None:
    """A 1-based frame number from the command line as a 0-based index; InputError when out of range."""
    from scanai.core.errors import InputError

    if value is None:
        return None
    if not 1 <= value <= count:
        raise InputError(f"{what.capitalize()} {value} does not exist: the cine has {count} frames, numbered 1 to "
                         f"{count}.", f"Give {flag} between 1 and {count}.")
    return value - 1


def run(args: argparse.Namespace) -> int:
    """Run ``scanai motion``; prints a summary and the written paths, returns 0 (errors raise ScanAIError)."""
    from scanai.core.errors import InputError
    from scanai.io.cine import read_cine_described
    from scanai.io.contours import read_label_map
    from scanai.motion.pipeline import analyse_cine, method_description

    if args.list:
        print("\n".join(list_slices(args.input)))
        return 0
    if args.method is None:
        args.method = "svf3d" if args.dims == "3d" else "network"
    if args.dims == "3d" and args.slice is not None:
        raise InputError("--dims 3d uses every slice as one volume per frame, but --slice picks one.",
                         "Leave --slice out, or use --dims 2d.")
    network = args.method.startswith("network")
    on_torch = network or args.method == "svf3d"  # the methods that take --device
    for given, option in ((args.scheme, "--scheme"), (args.refine_steps, "--refine-steps")):
        if given is not None and not network:
            raise InputError(f"{option} applies to the network methods, not to {args.method}.",
                             f"Leave {option} out or choose --method network.")
    if args.refine_steps is not None and args.refine_steps < 0:
        raise InputError(f"--refine-steps must be 0 or more, got {args.refine_steps}.",
                         "Use 0 for the network alone, or leave it out for the default refinement.")
    if args.labels_frame is not None and args.labels is None:
        raise InputError("--labels-frame was given without --labels.", "Give the label map with --labels.")
    if args.labels is not None and args.reference is None and args.labels_frame is None:
        raise InputError("Say on which frame the label map was drawn: the reference frame is found automatically, so "
                         "it is not known in advance.",
                         f"Add --labels-frame N ({FRAMES_FROM_ONE}), or give --reference N.")
    sequence, described = read_cine_described(args.input, args.slice)
    reference = _one_based(args.reference, len(sequence), "reference frame", "--reference")
    labels_index = _one_based(args.labels_frame, len(sequence), "labels frame", "--labels-frame")
    labels = read_label_map(args.labels) if args.labels is not None else None
    options = {key: value for key, value in (("scheme", args.scheme), ("refine_steps", args.refine_steps))
               if value is not None}
    print(f"Cine: {described}.", flush=True)
    with tqdm_progress(f"Motion ({args.method})") as progress:
        result = analyse_cine(sequence, reference, args.method, labels=labels, labels_index=labels_index,
                              myocardium_label=args.myocardium_label, blood_pool_label=args.blood_pool_label,
                              rv_insertion_ras=np.asarray(args.rv_insertion) if args.rv_insertion else None,
                              level=args.level, progress=progress, device=args.device if on_torch else None,
                              dims=args.dims, **options)
    paths = write_outputs(sequence, result, args.out, args.displacement_folder)
    paths["summary"] = Path(args.out) / "summary.json"
    paths["summary"].write_text(json.dumps(run_summary(result, described, len(sequence)), indent=1, default=str))
    label = f"{method_description(result.fields)}, {'3-D volumes' if args.dims == '3d' else '2-D slice by slice'}"
    for line in summary_lines(result, len(sequence), label):
        print(line)
    names = {"warped": "warped sequence", "displacement": "displacement fields",
             "displacement_folder": "one field per frame", "jacobian": "Jacobian maps", "labels": "propagated labels",
             "table": "per-frame table", "peaks": "peak strain table", "strain_plot": "strain curves",
             "summary": "run summary"}
    for key, path in paths.items():
        shown = f"{path}/frame_NNN.nrrd" if key == "displacement_folder" else str(path)
        print(f"{names[key] + ':':21s}{shown}")
    return 0


def run_summary(result, described: str, count: int) -> dict:
    """summary.json of one run (:class:`~scanai.motion.pipeline.CineMotion` ``result`` of a cine of ``count`` frames,
    ``described`` as :func:`~scanai.io.cine.read_cine_described` says): frames from 1."""
    fields = result.fields
    model = None
    if fields.method.startswith("network"):
        from scanai.core.catalog import load_card
        from scanai.motion.network import MODEL_NAME

        name = fields.options.get("model", MODEL_NAME)  # the 3-D network names itself
        model = {"name": name, "sha256": load_card(name).sha256}
    peaks = None
    if result.strain is not None:
        (gcs, gcs_frame), (grs, grs_frame) = result.strain.peak_circumferential(), result.strain.peak_radial()
        peaks = {"GCS_pct": float(gcs), "GCS_frame": int(gcs_frame) + 1, "GRS_pct": float(grs),
                 "GRS_frame": int(grs_frame) + 1}
    return {"input": described, "frames": count, "method": fields.method, "options": dict(fields.options),
            "model": model, "reference_frame": fields.reference_index + 1, "reference_rule": result.reference_rule,
            "frame_numbering": FRAMES_FROM_ONE, "seconds": result.seconds,
            "max_fold_fraction": float(result.fold_fraction.max()), "peak_global_strain": peaks}


def summary_lines(result, count: int, method_label: str) -> list[str]:
    """The run's summary: reference frame and how it was chosen, time, folding, peak strain (frames from 1)."""
    fields = result.fields
    how = "given" if result.reference_rule == "given" else f"end-diastole by the {result.reference_rule}"
    lines = [f"Reference: frame {fields.reference_index + 1} of {count} ({how}); {FRAMES_FROM_ONE}.",
             f"{method_label}: {count} frames relative to frame {fields.reference_index + 1} in "
             f"{result.seconds:.1f} s; "
             f"folding (det J <= 0) at most {100 * result.fold_fraction.max():.3f} % of "
             f"{'myocardial' if result.myocardium is not None else 'all'} voxels."]
    if result.strain is not None:
        gcs, gcs_frame = result.strain.peak_circumferential()
        grs, grs_frame = result.strain.peak_radial()
        lines.append(f"Peak global circumferential strain {gcs:.1f} % (frame {gcs_frame + 1}), peak global radial "
                     f"strain {grs:.1f} % (frame {grs_frame + 1}).")
    return lines


# ---------------------------------------------------------------------------------------------------- demo


def _endpoint_error_px(estimate_mm: np.ndarray, truth_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """|estimate - truth| per voxel, in pixels of ``spacing_mm``; shapes (..., 3) -> (...)."""
    return np.linalg.norm(estimate_mm - truth_mm, axis=-1) / spacing_mm


def _panel_figure(sequence: VolumeSequence, fields, frame: int, path: Path, title: str,
                  error_px: np.ndarray | None = None) -> Path:
    """Reference, frame, warped frame, |difference| before/after, field quiver (and an error map) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = np.asarray(sequence.frames[fields.reference_index, 0], dtype=float)
    moving = np.asarray(sequence.frames[frame, 0], dtype=float)
    warped = np.asarray(fields.warped.frames[frame, 0], dtype=float)
    low, high = np.percentile(reference, [1, 99.5])
    before, after = np.abs(moving - reference), np.abs(warped - reference)
    difference_max = np.percentile(before, 99.5)
    panels = 7 if error_px is not None else 6
    figure, axes = plt.subplots(1, panels, figsize=(3.0 * panels, 3.4))
    images = [(reference, f"reference (frame {fields.reference_index + 1})", "gray", low, high),
              (moving, f"frame {frame + 1}", "gray", low, high),
              (warped, f"frame {frame + 1} warped", "gray", low, high),
              (before, "|difference| before", "magma", 0, difference_max),
              (after, "|difference| after", "magma", 0, difference_max)]
    for axis, (image, label, colours, vmin, vmax) in zip(axes, images, strict=False):
        axis.imshow(image, cmap=colours, vmin=vmin, vmax=vmax)
        axis.set_title(label, fontsize=9)
    # quiver of the in-plane displacement, in voxel units along columns (i) and rows (j)
    shift = fields.displacement_mm[frame, 0] @ np.linalg.inv(sequence.geometry.ijk_to_ras()[:3, :3]).T
    step = max(1, reference.shape[0] // 24)
    rows, columns = np.mgrid[0:reference.shape[0]:step, 0:reference.shape[1]:step]
    axes[5].imshow(reference, cmap="gray", vmin=low, vmax=high)
    axes[5].quiver(columns, rows, shift[::step, ::step, 0], shift[::step, ::step, 1], color="yellow",
                   angles="xy", scale_units="xy", scale=0.5, width=0.004)
    axes[5].set_title("field u (x2)", fontsize=9)
    if error_px is not None:
        shown = axes[6].imshow(error_px, cmap="viridis", vmin=0, vmax=max(1.0, float(error_px.max())))
        axes[6].set_title("endpoint error (px)", fontsize=9)
        figure.colorbar(shown, ax=axes[6], fraction=0.046)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _demo_methods() -> tuple[str, ...]:
    """The shipped multi-pair network first (when PyTorch is installed), then the two SimpleITK baselines."""
    from scanai.core.device import torch_available

    return ("network", "demons", "bspline") if torch_available() else ("demons", "bspline")


def _phantom_demo(out_dir: Path) -> tuple[list[str], list[dict[str, float]]]:
    """Every method on the phantom: Markdown lines and per-frame rows (endpoint errors in px)."""
    from scanai.motion.export import write_motion_fields
    from scanai.motion.phantom import smooth_motion_phantom
    from scanai.motion.pipeline import estimate_motion

    sequence, truth = smooth_motion_phantom(n_frames=20, shape=(1, 96, 96), amplitude_px=5.0, twist_deg=6.0,
                                            noise=0.01, seed=7)
    spacing = sequence.geometry.spacing_mm[0]
    truth_px = np.linalg.norm(truth, axis=-1) / spacing
    rows = [{"frame": t, "time_s": sequence.index_values[t], "true_mean_px": float(truth_px[t].mean())}
            for t in range(len(sequence))]
    end_systole = int(np.argmax(truth_px.reshape(len(sequence), -1).mean(axis=1)))
    lines = ["**Phantom** (96 x 96 px, 1 mm, 20 frames over 1 s, 5 px endocardial contraction, 6 deg twist, "
             f"noise 0.01; peak motion at frame {end_systole + 1}: mean {truth_px[end_systole].mean():.2f} px, "
             f"max {truth_px[end_systole].max():.2f} px). Endpoint error over the whole image, all moving frames:",
             "", "| method | mean EPE (px) | 95th pct EPE (px) | s per frame |", "|---|---|---|---|"]
    for method in _demo_methods():
        with tqdm_progress(f"Phantom ({method})") as progress:
            fields = estimate_motion(sequence, 0, method, progress=progress)
        error = _endpoint_error_px(fields.displacement_mm, truth, spacing)
        for t in range(len(sequence)):
            rows[t][f"{method}_mean_epe_px"] = float(error[t].mean())
            rows[t][f"{method}_p95_epe_px"] = float(np.percentile(error[t], 95))
        moving = error[1:]
        lines.append(f"| {method} | {moving.mean():.3f} | {np.percentile(moving, 95):.3f} | "
                     f"{fields.seconds_per_frame:.2f} |")
        write_motion_fields(sequence, fields, out_dir / f"phantom_{method}")
        _panel_figure(sequence, fields, end_systole, out_dir / f"phantom_{method}.png",
                      f"Phantom, {method}: frame {end_systole + 1} registered to frame 1", error[end_systole, 0])
    lines += [line for method in _demo_methods() for line in ("", f"![phantom {method}](motion/phantom_{method}.png)")]
    return lines + [""], rows


def _sunnybrook_demo(out_dir: Path, data_dir: Path) -> list[str]:
    """The first of :func:`_demo_methods` (the network when PyTorch is installed) on the middle Sunnybrook slice;
    Markdown lines."""
    from scanai.io.cine import list_cine_slices, read_dicom_series
    from scanai.motion.export import motion_table, write_motion_fields
    from scanai.motion.pipeline import estimate_motion

    folder = Path(data_dir) / SUNNYBROOK_CASE
    if not folder.is_dir():
        return [f"**Sunnybrook cine**: skipped ({SUNNYBROOK_CASE} is not in the data folder).", ""]
    slice_index = len(list_cine_slices(folder)) // 2
    sequence = read_dicom_series(folder, slice_index)
    method = _demo_methods()[0]
    started = time.perf_counter()
    with tqdm_progress(f"Sunnybrook ({method})") as progress:
        fields = estimate_motion(sequence, 0, method, progress=progress)
    elapsed = time.perf_counter() - started
    write_motion_fields(sequence, fields, out_dir / f"sunnybrook_{method}")
    rows = motion_table(sequence, fields)
    before = np.mean([row["mean_abs_difference_before"] for row in rows[1:]])
    after = np.mean([row["mean_abs_difference_after"] for row in rows[1:]])
    peak = int(np.argmax([row["mean_abs_difference_before"] for row in rows]))
    _panel_figure(sequence, fields, peak, out_dir / f"sunnybrook_{method}.png",
                  f"Sunnybrook SCD0000101 slice {slice_index}, {method}: frame {peak + 1} registered to frame 1")
    spacing = sequence.geometry.spacing_mm
    return [f"**Sunnybrook cine** (SCD0000101, short-axis SSFP, slice {slice_index} of "
            f"{len(list_cine_slices(folder))}, {len(sequence)} phases, {sequence.frames.shape[3]} x "
            f"{sequence.frames.shape[2]} px at {spacing[0]:.2f} mm; reference = first phase). The {method} reduced the "
            f"mean absolute intensity difference to the reference from {before:.1f} to {after:.1f} "
            f"({100 * (1 - after / before):.0f} % lower), {fields.seconds_per_frame:.1f} s per frame "
            f"({elapsed:.0f} s in all); mean |u| at the most different frame ({peak + 1}): "
            f"{rows[peak]['mean_displacement_mm']:.2f} mm over the whole image.",
            "", f"![sunnybrook {method}](motion/sunnybrook_{method}.png)", ""]


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Run the motion demo into ``out_dir`` (NRRD, CSV, PNG); returns a Markdown section for the report."""
    from scanai.motion.export import write_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["## Motion estimation (register every frame to a reference)", "",
             "Every frame of a cine is registered to a reference frame by the shipped multi-pair network (with "
             "PyTorch) and by SimpleITK (multi-resolution fast symmetric-forces demons, or a B-spline transform "
             "with LBFGSB). The result is a dense pull-back "
             "displacement field per frame (RAS mm; frame t's point for reference point x is x + u_t(x)) and "
             "the frames warped onto the reference.", ""]
    phantom_lines, rows = _phantom_demo(out_dir)
    write_table(rows, out_dir / "phantom_errors.csv")
    lines += phantom_lines + ["Per-frame errors: `motion/phantom_errors.csv`.", ""]
    if data_dir is not None:
        lines += _sunnybrook_demo(out_dir, Path(data_dir))
    return "\n".join(lines)
