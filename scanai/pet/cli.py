"""``scanai pet``: voxelwise Patlak maps from a dynamic PET image, and the module's demo."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.core.progress import Progress, tqdm_progress
from scanai.io.sequence_file import read_sequence
from scanai.pet.input_function import InputFunction
from scanai.pet.patlak import DEFAULT_T_STAR_MIN, PatlakMaps, PatlakResult, patlak_fit, patlak_maps
from scanai.pet.timing import FrameTiming


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai pet``."""
    parser.add_argument("image", type=Path,
                        help="dynamic PET as one 4-D NRRD/NIfTI file (4th axis = frames), or a Slicer .seq.nrrd")
    parser.add_argument("--frames", type=Path, required=True, metavar="CSV",
                        help="frame timing table: columns start_s,duration_s (or start_s,end_s), one row per frame")
    parser.add_argument("--input-function", type=Path, required=True, metavar="CSV",
                        help="plasma input table: a time column (time_s, or time_min) and an activity column "
                             "(activity, Cp, ...), in the image's activity unit")
    parser.add_argument("--t-star-min", type=float, default=DEFAULT_T_STAR_MIN,
                        help=f"Patlak start time t* in min after injection (default {DEFAULT_T_STAR_MIN:g})")
    parser.add_argument("--mask", type=Path, default=None,
                        help="optional 3-D label/mask image on the PET grid; only non-zero voxels are fitted")
    parser.add_argument("--weights", choices=("none", "duration"), default="none",
                        help="fit weights of the Patlak line (default: none)")
    parser.add_argument("--out", type=Path, default=Path("scanai-pet"), metavar="DIR",
                        help="output folder for ki.nrrd, intercept.nrrd and r2.nrrd (default ./scanai-pet)")


def write_maps(maps: PatlakMaps, out_dir: Path, prefix: str = "") -> dict[str, Path]:
    """Write Ki, intercept and R² maps as NRRD files in ``out_dir``; returns ``{name: path}``."""
    from scanai.io.sitk_image import write_image

    out_dir = Path(out_dir)
    return {name: write_image(volume, out_dir / f"{prefix}{name}.nrrd")
            for name, volume in (("ki", maps.ki), ("intercept", maps.intercept), ("r2", maps.r2))}


def run(args: argparse.Namespace) -> int:
    """Compute Patlak maps for ``scanai pet`` and write them; prints the output paths. Returns 0."""
    sequence = read_sequence(args.image)
    timing = FrameTiming.read_csv(args.frames)
    input_function = InputFunction.read_csv(args.input_function)
    mask = None
    if args.mask is not None:
        from scanai.io.sitk_image import read_image

        mask = read_image(args.mask)
        if not mask.geometry.is_close(sequence.geometry):
            raise InputError("The mask does not lie on the PET image grid (spacing, origin or orientation differ).",
                             "Resample the mask onto the PET image first.")
    weights = None if args.weights == "none" else args.weights
    with tqdm_progress("Patlak") as progress:
        maps = patlak_maps(sequence, timing, input_function, t_star_min=args.t_star_min, mask=mask,
                           weights=weights, progress=progress)
    paths = write_maps(maps, args.out)
    inside = maps.ki.array[maps.mask]
    print(f"Patlak fit on {maps.axes.frames.size} frames (t* = {args.t_star_min:g} min), {inside.size} voxels; "
          f"Ki median {np.median(inside):.4g} /min.")
    for path in paths.values():
        print(path)
    return 0


# ------------------------------------------------------------------------------------------------ demo
def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _patlak_plot(ax, timing: FrameTiming, input_function: InputFunction, tac: np.ndarray, fit: PatlakResult,
                 title: str, t_star_min: float) -> None:
    """Patlak plot of every frame after 2 min on ``ax``, fitted frames filled, fitted line drawn."""
    shown = np.flatnonzero(timing.mid_min >= 2.0)
    cp = input_function.mean_over_frames(timing)[shown]
    x = input_function.mean_integral_over_frames(timing)[shown] / cp
    y = tac[shown] / cp
    used = np.isin(shown, fit.axes.frames)
    ax.plot(x[~used], y[~used], "o", mfc="none", color="0.5", label="frames before t*")
    ax.plot(x[used], y[used], "o", color="C0", label=f"fitted frames (t ≥ {t_star_min:g} min)")
    line = np.array([0.0, x.max() * 1.02])
    ki, v = float(fit.ki_per_min), float(fit.intercept)
    ax.plot(line, ki * line + v, "-", color="C3", label=f"Ki = {ki:.4f} /min, V = {v:.3f}, R² = {float(fit.r2):.4f}")
    ax.set_xlabel("∫₀ᵗ Cp dτ / Cp  (min)")
    ax.set_ylabel("C / Cp")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")


def _demo_real(data_dir: Path, out_dir: Path, plt, progress: Progress) -> tuple[list[list[object]], list[str]]:
    """Patlak on the real KMAP-M regional TACs; returns table rows and image file names."""
    from scanai.pet.kmap import load_kmap_mat

    rows: list[list[object]] = []
    cases = [("demo_2tcm_realdata.mat", "GM", "grey matter"), ("demo_liver_realdata.mat", "Liver", "liver")]
    cases = [c for c in cases if (data_dir / "pet" / c[0]).is_file()]
    if not cases:
        return rows, []
    t_star = 20.0
    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 4.2), squeeze=False)
    for number, (file, key, label) in enumerate(cases):
        progress(number / len(cases), f"Patlak on real {label} TAC")
        study = load_kmap_mat(data_dir / "pet" / file)
        tac = study.tacs[key]
        fit = patlak_fit(tac, study.timing, study.input_function, t_star_min=t_star)
        _patlak_plot(axes[0, number], study.timing, study.input_function, tac, fit,
                     f"Real total-body FDG PET: {label} ({file})", t_star)
        rows.append([label, file, t_star, int(fit.axes.frames.size), f"{float(fit.ki_per_min):.5f}",
                     f"{float(fit.intercept):.4f}", f"{float(fit.r2):.5f}"])
    fig.tight_layout()
    fig.savefig(out_dir / "patlak_real.png", dpi=110)
    plt.close(fig)
    _write_csv(out_dir / "patlak_real.csv",
               ["region", "file", "t_star_min", "frames_fitted", "ki_per_min", "intercept", "r2"], rows)
    return rows, ["patlak_real.png", "patlak_real.csv"]


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Run Patlak on the generated phantom (always) and on real regional TACs (when ``data_dir`` is given).

    Writes NRRD maps, CSV tables and PNG figures into ``out_dir``; returns a Markdown section whose image
    links are relative to ``out_dir``'s parent (``<out_dir name>/<file>``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scanai.io.sequence_file import write_sequence
    from scanai.io.sitk_image import write_image
    from scanai.pet.phantom import pet_phantom

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    link = out_dir.name
    t_star = DEFAULT_T_STAR_MIN
    with tqdm_progress("PET demo") as progress:
        progress(0.0, "Building the phantom")
        phantom = pet_phantom((4, 32, 32), counts_per_activity_s=2.0, seed=1)
        write_sequence(phantom.sequence, out_dir / "phantom_dynamic.seq.nrrd")
        phantom.timing.to_csv(out_dir / "phantom_frames.csv")
        body = phantom.labels.array > 0
        maps = patlak_maps(phantom.sequence, phantom.timing, phantom.input_function, t_star_min=t_star, mask=body,
                           progress=progress.sub(0.05, 0.5))
        write_maps(maps, out_dir, prefix="phantom_")
        write_image(phantom.ki_true, out_dir / "phantom_ki_true.nrrd")

        noise_free = pet_phantom((4, 32, 32))
        clean = patlak_maps(noise_free.sequence, noise_free.timing, noise_free.input_function, t_star_min=t_star,
                            mask=noise_free.labels.array > 0)
        clean_error = np.abs(clean.ki.array - noise_free.ki_true.array)[body] / noise_free.ki_true.array[body]

        region_rows: list[list[object]] = []
        for number, (name, params) in enumerate(phantom.regions.items(), start=1):
            inside = phantom.labels.array == number
            truth = float(phantom.ki_true.array[inside][0])
            estimate = maps.ki.array[inside]
            clean_ki = float(clean.ki.array[inside].mean())
            region_rows.append([name, *params, f"{truth:.5f}", f"{clean_ki:.5f}", f"{estimate.mean():.5f}",
                                f"{estimate.std():.5f}", f"{100 * (estimate.mean() / truth - 1):+.2f}",
                                int(inside.sum())])
        _write_csv(out_dir / "phantom_regions.csv",
                   ["region", "K1", "k2", "k3", "k4", "vB", "ki_true_per_min", "ki_noise_free_per_min",
                    "ki_mean_per_min", "ki_sd_per_min", "bias_percent", "voxels"], region_rows)

        progress(0.55, "Drawing the phantom figures")
        ks = 1
        vmax = float(phantom.ki_true.array.max()) * 1.2
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.9))
        for ax, image, title in ((axes[0], phantom.ki_true.array[ks], "true Ki (1/min)"),
                                 (axes[1], maps.ki.array[ks], f"Patlak Ki, noisy phantom (t* = {t_star:g} min)")):
            shown = ax.imshow(image, cmap="inferno", vmin=0, vmax=vmax)
            ax.set_title(title, fontsize=9)
            fig.colorbar(shown, ax=ax, fraction=0.046)
        difference = np.where(body[ks], maps.ki.array[ks] - phantom.ki_true.array[ks], 0.0)
        limit = float(np.abs(difference).max()) or 1.0
        shown = axes[2].imshow(difference, cmap="coolwarm", vmin=-limit, vmax=limit)
        axes[2].set_title("estimate − truth (1/min)", fontsize=9)
        fig.colorbar(shown, ax=axes[2], fraction=0.046)
        for ax in axes[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        lesion = phantom.labels.array == len(phantom.regions)
        tac = phantom.sequence.frames[:, lesion].mean(axis=1)
        fit = patlak_fit(tac, phantom.timing, phantom.input_function, t_star_min=t_star)
        _patlak_plot(axes[3], phantom.timing, phantom.input_function, tac, fit,
                     f"phantom {list(phantom.regions)[-1]}: true Ki {float(phantom.ki_true.array[lesion][0]):.4f}",
                     t_star)
        fig.tight_layout()
        fig.savefig(out_dir / "phantom_ki.png", dpi=110)
        plt.close(fig)

        real_rows, real_files = ([], [])
        if data_dir is not None:
            real_rows, real_files = _demo_real(Path(data_dir), out_dir, plt, progress.sub(0.6, 1.0))
        progress(1.0, "PET demo: done")

    lines = [
        "## ParametricPET — Patlak Ki maps",
        "",
        "Voxelwise Patlak analysis (Ki, intercept V, R²) of a dynamic PET series with a plasma input function "
        "integrated from the injection, frame-averaged on both axes of the plot. "
        f"t* = {t_star:g} min.",
        "",
        f"**Phantom** (4×32×32 voxels, 32 frames over 60 min, Feng FDG input, irreversible 2TCM regions, "
        "Poisson noise). Noise-free Ki error over the body: median "
        f"{100 * np.median(clean_error):.2f} %, max {100 * clean_error.max():.2f} % "
        "(Patlak's own bias at this t*).",
        "",
        "| region | true Ki (1/min) | Patlak Ki, noise-free | mean Ki, noisy | SD | bias % (noisy) |",
        "|---|---|---|---|---|---|",
        *[f"| {r[0]} | {r[6]} | {r[7]} | {r[8]} | {r[9]} | {r[10]} |" for r in region_rows],
        "",
        f"![Phantom Ki: truth, Patlak estimate, difference, Patlak plot]({link}/phantom_ki.png)",
        "",
        f"Files: `{link}/phantom_ki.nrrd`, `{link}/phantom_ki_true.nrrd`, `{link}/phantom_intercept.nrrd`, "
        f"`{link}/phantom_r2.nrrd`, `{link}/phantom_dynamic.nrrd`, `{link}/phantom_regions.csv`.",
    ]
    if real_rows:
        lines += [
            "",
            "**Real data** (KMAP-M total-body FDG, UC Davis; regional TACs with an image-derived aortic input, "
            "Bq/mL, 29 frames over 60 min):",
            "",
            "| region | frames fitted | Ki (1/min) | V | R² |",
            "|---|---|---|---|---|",
            *[f"| {r[0]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} |" for r in real_rows],
            "",
            f"![Patlak plots of real TACs]({link}/patlak_real.png)",
        ]
    elif data_dir is None:
        lines += ["", "_Real-data part skipped: the shared data folder was not given._"]
    return "\n".join(lines) + "\n"
