"""``scanai motion``: register every frame of a cine to a reference frame; and the motion demo.

Input: a DICOM cine folder (with ``--slice N`` choosing the slice location) or a 4-D NRRD/NIfTI whose last
axis is time (or a Slicer ``.seq.nrrd``). Output folder (see :mod:`scanai.motion.export`):
``warped.seq.nrrd``, ``displacement/frame_NNN.nrrd`` (one ITK displacement field per frame, LPS vectors in mm,
pull-back convention, zero at the reference) and ``motion.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from scanai.core.image import VolumeSequence
from scanai.core.progress import tqdm_progress

SUNNYBROOK_CASE = Path("cardiac") / "sunnybrook" / "dicoms" / "SCD0000101"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai motion``."""
    parser.add_argument("input", type=Path,
                        help="DICOM cine folder, or a 4-D NRRD/NIfTI (last axis time) / Slicer .seq.nrrd file")
    parser.add_argument("--slice", type=int, default=None,
                        help="slice location to read from a DICOM cine folder (0-based; default: the middle one)")
    parser.add_argument("--reference", type=int, default=0,
                        help="reference frame (0-based), e.g. end-diastole; default 0")
    parser.add_argument("--method", choices=("demons", "bspline"), default="demons",
                        help="registration method (default: demons)")
    parser.add_argument("--out", type=Path, default=Path("motion_output"), help="output folder")


def load_input(path: Path, slice_index: int | None) -> VolumeSequence:
    """A DICOM cine folder (one slice location) or a sequence file, as a :class:`VolumeSequence`."""
    from scanai.io.cine import read_dicom_series, read_sunnybrook_cine
    from scanai.io.sequence_file import read_sequence

    if Path(path).is_dir():
        if slice_index is None:
            return read_sunnybrook_cine(path)  # middle slice when several, the only one otherwise
        return read_dicom_series(path, slice_index)
    return read_sequence(path)


def run(args: argparse.Namespace) -> int:
    """Run ``scanai motion``; prints the written paths and returns 0 (errors raise ScanAIError)."""
    from scanai.motion.export import write_motion_fields
    from scanai.motion.registration import register_to_reference

    sequence = load_input(args.input, args.slice)
    with tqdm_progress(f"Motion ({args.method})") as progress:
        fields = register_to_reference(sequence, args.reference, args.method, progress=progress)
    paths = write_motion_fields(sequence, fields, args.out)
    print(f"Registered {len(sequence)} frames to frame {fields.reference_index} with {args.method} "
          f"({fields.seconds_per_frame:.2f} s per frame).")
    print(f"warped sequence:     {paths['warped']}")
    print(f"displacement fields: {paths['displacement']}/frame_NNN.nrrd")
    print(f"per-frame table:     {paths['table']}")
    return 0


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
    images = [(reference, f"reference (frame {fields.reference_index})", "gray", low, high),
              (moving, f"frame {frame}", "gray", low, high), (warped, f"frame {frame} warped", "gray", low, high),
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


def _phantom_demo(out_dir: Path) -> tuple[list[str], list[dict[str, float]]]:
    """Both methods on the phantom: Markdown lines and per-frame rows (endpoint errors in px)."""
    from scanai.motion.export import write_motion_fields
    from scanai.motion.phantom import smooth_motion_phantom
    from scanai.motion.registration import register_to_reference

    sequence, truth = smooth_motion_phantom(n_frames=20, shape=(1, 96, 96), amplitude_px=5.0, twist_deg=6.0,
                                            noise=0.01, seed=7)
    spacing = sequence.geometry.spacing_mm[0]
    truth_px = np.linalg.norm(truth, axis=-1) / spacing
    rows = [{"frame": t, "time_s": sequence.index_values[t], "true_mean_px": float(truth_px[t].mean())}
            for t in range(len(sequence))]
    end_systole = int(np.argmax(truth_px.reshape(len(sequence), -1).mean(axis=1)))
    lines = ["**Phantom** (96 x 96 px, 1 mm, 20 frames over 1 s, 5 px endocardial contraction, 6 deg twist, "
             f"noise 0.01; peak motion at frame {end_systole}: mean {truth_px[end_systole].mean():.2f} px, "
             f"max {truth_px[end_systole].max():.2f} px). Endpoint error over the whole image, all moving frames:",
             "", "| method | mean EPE (px) | 95th pct EPE (px) | s per frame |", "|---|---|---|---|"]
    for method in ("demons", "bspline"):
        with tqdm_progress(f"Phantom ({method})") as progress:
            fields = register_to_reference(sequence, 0, method, progress=progress)
        error = _endpoint_error_px(fields.displacement_mm, truth, spacing)
        for t in range(len(sequence)):
            rows[t][f"{method}_mean_epe_px"] = float(error[t].mean())
            rows[t][f"{method}_p95_epe_px"] = float(np.percentile(error[t], 95))
        moving = error[1:]
        lines.append(f"| {method} | {moving.mean():.3f} | {np.percentile(moving, 95):.3f} | "
                     f"{fields.seconds_per_frame:.2f} |")
        write_motion_fields(sequence, fields, out_dir / f"phantom_{method}")
        _panel_figure(sequence, fields, end_systole, out_dir / f"phantom_{method}.png",
                      f"Phantom, {method}: frame {end_systole} registered to frame 0", error[end_systole, 0])
    lines += ["", "![phantom demons](motion/phantom_demons.png)", "",
              "![phantom bspline](motion/phantom_bspline.png)", ""]
    return lines, rows


def _sunnybrook_demo(out_dir: Path, data_dir: Path) -> list[str]:
    """Demons on the middle Sunnybrook slice; Markdown lines."""
    from scanai.io.cine import list_cine_slices, read_dicom_series
    from scanai.motion.export import motion_table, write_motion_fields
    from scanai.motion.registration import register_to_reference

    folder = Path(data_dir) / SUNNYBROOK_CASE
    if not folder.is_dir():
        return [f"**Sunnybrook cine**: skipped ({SUNNYBROOK_CASE} is not in the data folder).", ""]
    slice_index = len(list_cine_slices(folder)) // 2
    sequence = read_dicom_series(folder, slice_index)
    started = time.perf_counter()
    with tqdm_progress("Sunnybrook (demons)") as progress:
        fields = register_to_reference(sequence, 0, "demons", progress=progress)
    elapsed = time.perf_counter() - started
    write_motion_fields(sequence, fields, out_dir / "sunnybrook_demons")
    rows = motion_table(sequence, fields)
    before = np.mean([row["mean_abs_difference_before"] for row in rows[1:]])
    after = np.mean([row["mean_abs_difference_after"] for row in rows[1:]])
    peak = int(np.argmax([row["mean_abs_difference_before"] for row in rows]))
    _panel_figure(sequence, fields, peak, out_dir / "sunnybrook_demons.png",
                  f"Sunnybrook SCD0000101 slice {slice_index}, demons: frame {peak} registered to frame 0")
    spacing = sequence.geometry.spacing_mm
    return [f"**Sunnybrook cine** (SCD0000101, short-axis SSFP, slice {slice_index} of "
            f"{len(list_cine_slices(folder))}, {len(sequence)} phases, {sequence.frames.shape[3]} x "
            f"{sequence.frames.shape[2]} px at {spacing[0]:.2f} mm; reference = first phase). Demons reduced the "
            f"mean absolute intensity difference to the reference from {before:.1f} to {after:.1f} "
            f"({100 * (1 - after / before):.0f} % lower), {fields.seconds_per_frame:.1f} s per frame "
            f"({elapsed:.0f} s in all); mean |u| at the most different phase ({peak}): "
            f"{rows[peak]['mean_displacement_mm']:.2f} mm over the whole image.",
            "", "![sunnybrook demons](motion/sunnybrook_demons.png)", ""]


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Run the motion demo into ``out_dir`` (NRRD, CSV, PNG); returns a Markdown section for the report."""
    from scanai.motion.export import write_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["## Motion estimation (register every frame to a reference)", "",
             "Every frame of a cine is registered to a reference frame with SimpleITK (multi-resolution fast "
             "symmetric-forces demons, or a B-spline transform with LBFGSB). The result is a dense pull-back "
             "displacement field per frame (RAS mm; frame t's point for reference point x is x + u_t(x)) and "
             "the frames warped onto the reference.", ""]
    phantom_lines, rows = _phantom_demo(out_dir)
    write_table(rows, out_dir / "phantom_errors.csv")
    lines += phantom_lines + ["Per-frame errors: `motion/phantom_errors.csv`.", ""]
    if data_dir is not None:
        lines += _sunnybrook_demo(out_dir, Path(data_dir))
    return "\n".join(lines)
