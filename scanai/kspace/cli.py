"""``scanai kspace INPUT --out DIR``: find and remove spikes in raw k-space; corrected and original images.

Writes ``original.nrrd``, ``corrected.nrrd``, ``difference.nrrd`` (RSS images), ``log_kspace.nrrd`` with
``spike_mask.nrrd`` (its segmentation overlay), ``spikes.csv``, ``slices.csv`` and ``spikes.png`` (before/after).
Also :func:`demo`, the k-space section of ``scanai demo``.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scanai.core.image import Volume
from scanai.core.progress import Progress, tqdm_progress
from scanai.io.sitk_image import write_image
from scanai.kspace.correct import DEFAULT_METHOD, METHODS
from scanai.kspace.data import KSpaceData
from scanai.kspace.io import read_kspace
from scanai.kspace.metrics import point_metrics, psnr, ssim
from scanai.kspace.phantom import make_phantom
from scanai.kspace.pipeline import DEFAULT_SENSITIVITY, DETECTORS, TABLE_COLUMNS, CalibrationResult
from scanai.kspace.pipeline import run as run_pipeline
from scanai.kspace.readers.layout import AXES_HELP
from scanai.kspace.recon import KSpaceImages, image_stats, noise_sigma, reconstruct, rss
from scanai.kspace.simulate import inject_spikes

# Real raw data used by the demo when the shared data folder is present: (file, short name, description).
DEMO_FILES = (
    ("kspace/gre.dat", "gre", "Siemens GRE, phantom, Skyra 3 T"),
    ("kspace/2024-02-06-160052.dat", "phantom16", "Pulseq GRE, 16-coil phantom"),
    ("kspace/2024-02-06-164120.dat", "head", "Pulseq GRE, in-vivo head"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai kspace INPUT --out DIR``."""
    parser.add_argument("input", type=Path,
                        help="raw k-space: Siemens twix .dat, ISMRMRD/MRD or fastMRI .h5, BART .cfl/.hdr, or complex "
                             ".npy/.npz/.mat ((ky, kx), (coils, ky, kx) or (coils, slices, ky, kx); other layouts: "
                             "--axes)")
    parser.add_argument("--out", type=Path, default=Path("kspace_output"), metavar="DIR",
                        help="output folder (default ./kspace_output)")
    parser.add_argument("--detector", choices=DETECTORS, default="classical",
                        help="spike detector: classical statistics (default), the trained patch network, or "
                             "combined (classical levels set by the network's patch probabilities; needs torch)")
    parser.add_argument("--sensitivity", type=float, default=DEFAULT_SENSITIVITY,
                        help=f"detection sensitivity in (0, 1] (default {DEFAULT_SENSITIVITY}; higher finds weaker "
                             "spikes and risks false detections)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                        help=f"correction of the flagged samples (default {DEFAULT_METHOD})")
    parser.add_argument("--detect-only", action="store_true", help="find and report spikes, change nothing")
    parser.add_argument("--prewhiten", action="store_true",
                        help="decorrelate the coils before detection, with the noise of --noise or of the file's own "
                             "noise scans")
    parser.add_argument("--noise", type=Path, metavar="FILE",
                        help="the coils' noise: a noise covariance (coils x coils .npy) or a noise scan of the same "
                             "coils (any k-space file, or a .npy of complex noise samples (coils, samples)); used by "
                             "--prewhiten and recorded as each coil's noise level")
    parser.add_argument("--axes", metavar="NAMES",
                        help=f"what the axes of an array file (.npy, .npz, .mat, .cfl) hold: {AXES_HELP}; e.g. "
                             "--axes ky,kx,coil for a MATLAB array with the coils last, or --axes x,ky,kz,coil for "
                             "BART readout-transformed data (default: the format's convention)")
    parser.add_argument("--allow-epi", action="store_true",
                        help="read EPI twix data anyway (reflected lines flipped; no ramp-sampling or ghost "
                             "correction, so the image shows N/2 ghosts)")


def write_tables(result: CalibrationResult, out: Path) -> tuple[Path, Path]:
    """``spikes.csv`` (one row per flagged sample) and ``slices.csv`` (per-slice summary) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    spikes, slices = out / "spikes.csv", out / "slices.csv"
    with spikes.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLE_COLUMNS))
        writer.writeheader()
        writer.writerows(result.detection.table)
    with slices.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slice", "spikes", "target_patches", "max_score"])
        writer.writeheader()
        writer.writerows(result.detection.slices)
    return spikes, slices


def save_spike_figure(result: CalibrationResult, title: str, path: Path, reference: np.ndarray | None = None,
                      slice_index: int | None = None) -> Path:
    """Before/after figure of one slice: log k-space with the detected spikes, original, corrected, difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = slice_index if slice_index is not None else int(np.argmax([s["spikes"] for s in result.detection.slices]))
    before, after = result.original.array[index], result.corrected_image.array[index]
    top = float(np.percentile(reference[index] if reference is not None else after, 99.5)) or None
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    axes[0].imshow(result.log_kspace.array[index], cmap="gray", aspect="auto", interpolation="nearest")
    ys, xs = np.nonzero(result.detection.mask[index])
    axes[0].scatter(xs, ys, s=28, facecolors="none", edgecolors="red", linewidths=0.9)
    axes[0].set_title(f"log k-space, {len(ys)} spike(s) detected")
    axes[0].set_xlabel("kx (readout)")
    axes[0].set_ylabel("ky (phase encoding)")
    for axis, image, name in ((axes[1], before, "original"), (axes[2], after, f"corrected ({result.method})")):
        axis.imshow(image, cmap="gray", vmin=0, vmax=top, interpolation="nearest")
        axis.set_title(name)
        axis.set_axis_off()
    difference = before - after
    limit = float(np.abs(difference).max()) or 1.0
    axes[3].imshow(difference, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
    axes[3].set_title("original - corrected")
    axes[3].set_axis_off()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def run(args: argparse.Namespace) -> int:
    """Read ``args.input``, detect and correct spikes, and write the images, tables and figure into ``args.out``."""
    with tqdm_progress("k-space") as progress:
        kspace = read_kspace(args.input, allow_epi=args.allow_epi, prewhiten=args.prewhiten,
                             axes=getattr(args, "axes", None), noise=getattr(args, "noise", None),
                             progress=progress.sub(0, 0.3))
        result = run_pipeline(kspace, detector=getattr(args, "detector", "classical"),
                              sensitivity=getattr(args, "sensitivity", DEFAULT_SENSITIVITY),
                              method=getattr(args, "method", DEFAULT_METHOD),
                              detect_only=getattr(args, "detect_only", False), progress=progress.sub(0.3, 1.0))
    out = Path(args.out)
    paths = {
        "original": write_image(result.original, out / "original.nrrd"),
        "corrected": write_image(result.corrected_image, out / "corrected.nrrd"),
        "difference": write_image(result.difference, out / "difference.nrrd"),
        "log_kspace": write_image(result.log_kspace, out / "log_kspace.nrrd"),
        "spike_mask": write_image(Volume(result.detection.mask.astype(np.uint8), result.log_kspace.geometry),
                                  out / "spike_mask.nrrd"),
    }
    spikes, slices = write_tables(result, out)
    figure = save_spike_figure(result, f"{kspace.source}: {result.detection.detector} detector",
                               out / "spikes.png")
    coils, n_slices, ky, kx = kspace.data.shape
    print(f"{kspace.source}: {coils} coil(s), {n_slices} slice(s), k-space {ky} x {kx}, readout oversampling "
          f"{kspace.readout_oversampling}, pixel spacing {_spacing_text(kspace)}")
    if kspace.metadata.get("note"):
        print(f"{kspace.source}: {kspace.metadata['note']} (axes {', '.join(kspace.metadata['axes'])})")
    if kspace.noise_covariance is not None:
        origin = kspace.metadata.get("noise_file") or "the file's noise scans"
        whitened = "; the coils were pre-whitened with it" if kspace.metadata.get("prewhitened") else ""
        sigma = noise_sigma(kspace.noise_covariance)
        print(f"noise level per coil (from {origin}, data as stored): {', '.join(f'{s:.3g}' for s in sigma)}"
              f"{whitened}")
    print(f"{result.detection.count} spike sample(s) detected ({result.detection.detector} detector, sensitivity "
          f"{result.detection.sensitivity:g}); correction: {result.method}")
    for name, path in paths.items():
        print(f"{name + ':':12s} {path}")
    print(f"{'spikes:':12s} {spikes}\n{'slices:':12s} {slices}\n{'figure:':12s} {figure}")
    return 0


# ------------------------------------------------------------------------------------------------------ demo


@dataclass(frozen=True)
class _DemoRow:
    name: str
    description: str
    kspace: KSpaceData
    images: KSpaceImages
    figure: str
    extra: str = ""


def _spacing_text(kspace: KSpaceData) -> str:
    text = " x ".join(f"{s:.3g}" for s in kspace.spacing_mm) + " mm"
    return text if kspace.spacing_from_header else text + " (assumed)"


def _peak_offset(kspace: KSpaceData) -> float:
    """Distance (in samples) of the largest combined k-space magnitude from the k-space centre (slice 0)."""
    magnitude = rss(kspace.data[:, 0], axis=0)
    peak = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
    centre = (magnitude.shape[0] // 2, magnitude.shape[1] // 2)
    return float(np.hypot(peak[0] - centre[0], peak[1] - centre[1]))


def _save_figure(images: KSpaceImages, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4.2))
    left.imshow(images.log_kspace.array[0], cmap="gray", aspect="auto", interpolation="nearest")
    left.set_title("log(1 + |k| / median), RSS over coils")
    left.set_xlabel("kx (readout sample)")
    left.set_ylabel("ky (phase-encoding line)")
    image = images.rss.array[0]
    right.imshow(image, cmap="gray", vmin=0, vmax=float(np.percentile(image, 99.5)) or None,
                 interpolation="nearest")
    right.set_title("root-sum-of-squares image")
    right.set_axis_off()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _process(name: str, description: str, kspace: KSpaceData, out_dir: Path, progress: Progress,
             extra: str = "") -> _DemoRow:
    images = reconstruct(kspace, progress=progress)
    write_image(images.rss, out_dir / f"{name}_rss.nrrd")
    write_image(images.log_kspace, out_dir / f"{name}_log_kspace.nrrd")
    _save_figure(images, f"{description} ({kspace.source})", out_dir / f"{name}.png")
    return _DemoRow(name, description, kspace, images, f"{name}.png", extra)


SPIKE_DEMO = ("phantom", "gre", "phantom16")  # demo rows that also get simulated spikes


def spike_demo(name: str, description: str, kspace: KSpaceData, out_dir: Path, progress: Progress,
               seed: int = 7) -> str:
    """Inject 20 seeded spike events (0.005-1 x max|k|) into ``kspace``, detect and correct them, write
    ``<name>_spikes.png`` and return one Markdown table row of numbers."""
    corrupted, truth = inject_spikes(kspace.data, n_events=20, amplitude_range=(0.005, 1.0), seed=seed)
    spiked = replace(kspace, data=corrupted, source=f"{kspace.source} + simulated spikes")
    started = time.perf_counter()
    result = run_pipeline(spiked, progress=progress)
    elapsed = time.perf_counter() - started
    reference = reconstruct(kspace).rss.array
    acquired = np.any(kspace.data != 0, axis=0)
    scores = point_metrics(truth.mask(acquired.shape), result.detection.mask, acquired)
    slice_index = int(np.bincount(truth.slice, minlength=kspace.n_slices).argmax()) if len(truth) else 0
    save_spike_figure(result, f"{description}: {len(truth)} simulated spike samples", out_dir / f"{name}_spikes.png",
                      reference=reference, slice_index=slice_index)
    return (f"| {description} | {len(truth)} | {int(scores['tp'])} | {int(scores['fp'])} | "
            f"{scores['sensitivity']:.3f} | {scores['specificity']:.5f} | "
            f"{psnr(reference, result.original.array):.1f} -> {psnr(reference, result.corrected_image.array):.1f} | "
            f"{ssim(reference, result.original.array):.3f} -> {ssim(reference, result.corrected_image.array):.4f} | "
            f"{elapsed:.2f} |")


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Reconstruct the generated phantom (always) and the real twix files (when ``data_dir`` is given).

    Writes ``<name>_rss.nrrd``, ``<name>_log_kspace.nrrd`` and ``<name>.png`` (log k-space beside the RSS image)
    into ``out_dir`` and returns a Markdown section whose image links are ``kspace/<name>.png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[_DemoRow] = []
    notes: list[str] = []
    spike_rows: list[tuple[str, str]] = []
    available = [(data_dir / relative, name, text) for relative, name, text in DEMO_FILES] if data_dir else []
    steps = 1 + len(available)
    with tqdm_progress("k-space demo") as progress:
        phantom = make_phantom(size=128, n_coils=8, readout_oversampling=2, noise_std=0.002, seed=1)
        truth = rss(phantom.coil_images, axis=0)
        row = _process("phantom", "Shepp-Logan phantom, 8 simulated coils", phantom.kspace, out_dir,
                       progress.sub(0, 1 / steps))
        error = float(np.abs(row.images.rss.array[0] - truth).max() / truth.max())
        rows.append(replace(row, extra=f"max. deviation from the true coil-combined image {100 * error:.2f} % "
                                       "of its maximum (noise std 0.2 % of the skull intensity)"))
        spike_rows.append(("phantom", spike_demo("phantom", "Shepp-Logan phantom, 8 coils", phantom.kspace, out_dir,
                                                 Progress())))
        for number, (path, name, text) in enumerate(available, start=1):
            if not path.is_file():
                notes.append(f"{path.name} is not in the data folder; skipped.")
                continue
            sub = progress.sub(number / steps, (number + 1) / steps)
            kspace = read_kspace(path, progress=sub.sub(0, 0.4))
            rows.append(_process(name, text, kspace, out_dir, sub.sub(0.4, 0.6)))
            if name in SPIKE_DEMO:
                spike_rows.append((name, spike_demo(name, text, kspace, out_dir, sub.sub(0.6, 1.0))))

    lines = [
        "## K-space: raw multi-coil data to image",
        "",
        "Raw Cartesian k-space (Siemens twix via twixtools, or complex NumPy/MATLAB arrays) is assembled into "
        "(coils, slices, ky, kx) from the imaging lines' counters (noise and reference scans left out), then each "
        "coil is reconstructed by a centred 2-D inverse FFT, the 2x readout oversampling is cropped, and the coils "
        "are combined by root-sum-of-squares (RSS). The log-magnitude k-space, log(1 + |k| / median |k|) over "
        "coils, is what the spike detector will look at. *Object/background* is the mean RSS intensity above "
        "Otsu's threshold over the mean below it; *peak offset* is the distance (samples) of the largest k-space "
        "magnitude from the k-space centre (0-2 for a well-centred acquisition).",
        "",
        "| data | file | coils | k-space ky x kx | readout OS | image ny x nx | pixel (mm) | peak offset | "
        "object/background |",
        "|---|---|---:|---|---:|---|---|---:|---:|",
    ]
    for row in rows:
        coils, _, ky, kx = row.kspace.data.shape
        _, ny, nx = row.images.rss.array.shape
        stats = image_stats(row.images.rss.array)
        lines.append(f"| {row.description} | `{row.kspace.source}` | {coils} | {ky} x {kx} | "
                     f"{row.kspace.readout_oversampling} | {ny} x {nx} | {_spacing_text(row.kspace)} | "
                     f"{_peak_offset(row.kspace):.1f} | {stats['object_background_ratio']:.1f} |")
    lines.append("")
    for row in rows:
        if row.extra:
            lines.append(f"- {row.description}: {row.extra}.")
    if data_dir is None:
        lines.append("- The real raw-data files were not run: the shared data folder is absent.")
    lines.extend(f"- {note}" for note in notes)
    lines.append("")
    for row in rows:
        lines.append(f"![{row.description}: log k-space and RSS image](kspace/{row.figure})")
        lines.append("")
    lines += [
        "### Spike detection and correction (simulated spikes)",
        "",
        "Twenty seeded spike events (isolated points, near-centre points, 2-4 point clusters, 2-5 sample readout "
        "runs; 0.005-1 x the slice's max |k|, the same sample in every coil with random complex gains) are added "
        "to the clean k-space; the classical detector finds them and the flagged samples are re-estimated from "
        f"their neighbours in all coils ({DEFAULT_METHOD}). PSNR/SSIM: RSS image against the clean one.",
        "",
        "| data | spike samples | true detections | false detections | sensitivity | specificity | "
        "PSNR dB before -> after | SSIM before -> after | time (s) |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    lines += [row for _, row in spike_rows]
    lines.append("")
    for name, _ in spike_rows:
        lines.append(f"![{name}: spikes detected and corrected](kspace/{name}_spikes.png)")
        lines.append("")
    return "\n".join(lines)
