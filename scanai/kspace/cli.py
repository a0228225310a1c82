"""``scanai kspace INPUT --out DIR``: raw k-space to a root-sum-of-squares image and a log-k-space map.

Also :func:`demo`, the k-space section of ``scanai demo``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scanai.core.progress import Progress, tqdm_progress
from scanai.io.sitk_image import write_image
from scanai.kspace.io import KSpaceData, read_kspace
from scanai.kspace.phantom import make_phantom
from scanai.kspace.recon import KSpaceImages, image_stats, reconstruct, rss

# Real raw data used by the demo when the shared data folder is present: (file, short name, description).
DEMO_FILES = (
    ("kspace/gre.dat", "gre", "Siemens GRE, phantom, Skyra 3 T"),
    ("kspace/2024-02-06-160052.dat", "phantom16", "Pulseq GRE, 16-coil phantom"),
    ("kspace/2024-02-06-164120.dat", "head", "Pulseq GRE, in-vivo head"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai kspace INPUT --out DIR``."""
    parser.add_argument("input", type=Path,
                        help="raw k-space: Siemens twix .dat, or complex .npy/.npz/.mat ((ky, kx), (coils, ky, kx) "
                             "or (coils, slices, ky, kx))")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="output folder for rss.nrrd and log_kspace.nrrd (default: current folder)")
    parser.add_argument("--allow-epi", action="store_true",
                        help="read EPI twix data anyway (reflected lines flipped; no ramp-sampling or ghost "
                             "correction, so the image shows N/2 ghosts)")


def run(args: argparse.Namespace) -> int:
    """Read ``args.input``, reconstruct it and write ``rss.nrrd`` and ``log_kspace.nrrd`` into ``args.out``."""
    with tqdm_progress("k-space") as progress:
        kspace = read_kspace(args.input, allow_epi=getattr(args, "allow_epi", False), progress=progress.sub(0, 0.5))
        images = reconstruct(kspace, progress=progress.sub(0.5, 1.0))
    out = Path(args.out)
    rss_path = write_image(images.rss, out / "rss.nrrd")
    log_path = write_image(images.log_kspace, out / "log_kspace.nrrd")
    coils, slices, ky, kx = kspace.data.shape
    print(f"{kspace.source}: {coils} coil(s), {slices} slice(s), k-space {ky} x {kx}, readout oversampling "
          f"{kspace.readout_oversampling}, pixel spacing {_spacing_text(kspace)}")
    print(f"root-sum-of-squares image: {rss_path}")
    print(f"log-magnitude k-space:     {log_path}")
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


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Reconstruct the generated phantom (always) and the real twix files (when ``data_dir`` is given).

    Writes ``<name>_rss.nrrd``, ``<name>_log_kspace.nrrd`` and ``<name>.png`` (log k-space beside the RSS image)
    into ``out_dir`` and returns a Markdown section whose image links are ``kspace/<name>.png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[_DemoRow] = []
    notes: list[str] = []
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
        for number, (path, name, text) in enumerate(available, start=1):
            if not path.is_file():
                notes.append(f"{path.name} is not in the data folder; skipped.")
                continue
            sub = progress.sub(number / steps, (number + 1) / steps)
            kspace = read_kspace(path, progress=sub.sub(0, 0.5))
            rows.append(_process(name, text, kspace, out_dir, sub.sub(0.5, 1.0)))

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
    return "\n".join(lines)
