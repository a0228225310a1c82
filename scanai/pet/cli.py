"""``scanai pet``: voxelwise Patlak maps from a dynamic PET image, and the module's demo."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import mask_on_grid
from scanai.core.progress import Progress, tqdm_progress
from scanai.pet.input_function import InputFunction
from scanai.pet.patlak import DEFAULT_T_STAR_MIN, PatlakResult, patlak_fit, patlak_maps
from scanai.pet.timing import FrameTiming


def _column_value(text: str) -> tuple[str, str]:
    """``COLUMN=VALUE`` as a pair (argparse reports anything else as a usage error)."""
    column, equals, value = text.partition("=")
    if not equals or not column.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not COLUMN=VALUE (e.g. PET=cgyu_1)")
    return column.strip(), value.strip()


def _unit(text: str) -> str:
    """An activity unit that must be understood (argparse reports another as a usage error)."""
    from scanai.core.errors import InputError
    from scanai.pet.units import parse_unit

    try:
        return parse_unit(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _bound(text: str) -> tuple[str, tuple[float, float]]:
    """``NAME=LOW,HIGH`` as (name, (low, high)) (argparse reports anything else as a usage error)."""
    name, equals, values = text.partition("=")
    parts = values.split(",")
    try:
        low, high = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=LOW,HIGH (e.g. vB=0,0.1)") from None
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=LOW,HIGH (e.g. vB=0,0.1)")
    return name.strip(), (low, high)


#: Weighting schemes the fits compute themselves (``--weights``).
WEIGHT_SCHEMES = ("none", "duration", "counts")


def frame_weights_option(text: str, frames_csv: Path | None, frames: int) -> str | np.ndarray | None:
    """The ``--weights`` option: None, "duration", "counts", or (T,) weights from a CSV file (a ``weights`` column
    or its only numeric column) or from a column of the frames table ``frames_csv``; InputError naming the choices
    otherwise, or when the count is not one per frame (``frames``)."""
    from scanai.pet.tables import read_pet_table

    option = text.strip()
    if option.lower() in WEIGHT_SCHEMES:
        return None if option.lower() == "none" else option.lower()
    path = Path(option)
    if path.is_file():
        columns = {name.strip().lower(): values for name, values in read_pet_table(path, "weights table").items()}
        values = columns.get("weights", columns.get("weight"))
        if values is None and len(columns) == 1:
            values = next(iter(columns.values()))
        if values is None:
            raise InputError(f"The weights table {path.name} has no 'weights' column (columns: "
                             f"{', '.join(columns) or 'none'}).", "Name the column 'weights' or keep only it.")
        source = path.name
    else:
        table = {} if frames_csv is None else read_pet_table(frames_csv, "frame timing")
        found = {name.strip().lower(): values for name, values in table.items()}.get(option.lower())
        if found is None:
            where = f" nor a column of the frames table {frames_csv.name}" if frames_csv is not None else (
                " (and no --frames table was given to take a column from)")
            raise InputError(f"--weights {option!r} is neither {', '.join(WEIGHT_SCHEMES)}, an existing file{where}.",
                             "Give a scheme, a CSV file with one weight per frame, or a column of the --frames table.")
        values, source = found, f"column {option!r} of {frames_csv.name}"
    weights = np.asarray(values, dtype=float)
    if weights.size != frames:
        raise InputError(f"{source} holds {weights.size} weights for {frames} frames.", "Give one weight per frame.")
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai pet``."""
    from scanai.pet.analysis import METHOD_LABELS
    from scanai.pet.reference_cli import REFERENCE_LABELS

    parser.add_argument("image", type=Path,
                        help="dynamic PET: a DICOM folder (or one file of the series), a 4-D NIfTI/NRRD (4th axis = "
                             "frames; timing from a BIDS .json sidecar beside it or --frames), or a Slicer .seq.nrrd")
    parser.add_argument("--sidecar", type=Path, default=None, metavar="JSON",
                        help="BIDS-PET sidecar (FrameTimesStart, FrameDuration) when not named like the image")
    parser.add_argument("--frames", type=Path, default=None, metavar="CSV",
                        help="frame timing table: columns start_s,duration_s (or start_s,end_s), one row per frame")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input-function", type=Path, metavar="CSV",
                        help="blood table: a time column (time_s, or time_min) and a plasma column (Cp, plasma, ...), "
                             "optionally whole blood (whole_blood, Cb, ...), in the image's activity unit")
    source.add_argument("--blood-pool", type=Path, metavar="MASK",
                        help="mask image (on the PET grid) of the aorta or left ventricle: image-derived input")
    source.add_argument("--reference", type=Path, metavar="MASK",
                        help="reference region without specific binding (e.g. cerebellum; a mask on the PET grid) for "
                             "the reference-region methods: srtm, srtm2, mrtm, mrtm2, logan_ref, patlak_ref")
    source.add_argument("--population-from", type=Path, metavar="MASK",
                        help="blood-pool mask: the Feng population input scaled to its frames after 20 min")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE", type=_column_value,
                        help="keep only rows of the blood table whose COLUMN equals VALUE (e.g. PET=cgyu_1)")
    parser.add_argument("--input-unit", default="", metavar="UNIT", type=_unit,
                        help="activity unit of the blood table (Bq/mL, kBq/mL, nCi/mL, SUV, ...); default: the image's")
    parser.add_argument("--image-unit", default="", metavar="UNIT", type=_unit,
                        help="activity unit of the dynamic image, for an image that carries none (a NIfTI with a "
                             "frame CSV); where the image carries one (DICOM Units, a sidecar's Units) it must agree")
    parser.add_argument("--decay-correct-input", action="store_true",
                        help="the blood table is not decay corrected: correct it to the injection with the study's "
                             "radionuclide (frames are always brought to the injection by the readers)")
    parser.add_argument("--feng-fit", action="store_true",
                        help="replace the blood samples by a Feng model fitted to them (sparse samples)")
    parser.add_argument("--method", default="patlak", choices=[*METHOD_LABELS, *REFERENCE_LABELS],
                        help="kinetic method (default patlak); 'network' = short-scan Ki network on late frames "
                             "(experimental: validated on simulated phantoms only); "
                             "srtm, srtm2, mrtm, mrtm2, logan_ref, patlak_ref need --reference, not a blood input")
    parser.add_argument("--k2prime", type=float, default=None, metavar="PER_MIN",
                        help="reference efflux k2' (1/min) for srtm2, mrtm2 and logan_ref (default: the median of a "
                             "first SRTM/MRTM pass; logan_ref without it leaves the C_R/k2' term out)")
    parser.add_argument("--t-star-min", type=float, default=None,
                        help=f"start of the linear phase for Patlak / Logan, min (default {DEFAULT_T_STAR_MIN:g} for "
                             "Patlak, the method's default otherwise)")
    parser.add_argument("--weights", default="none", metavar="SCHEME|FILE|COLUMN",
                        help="frame weights of the fits: none (default), duration, counts, a CSV file with one weight "
                             "per frame (a 'weights' column, or its only column), or the name of a column of the "
                             "--frames table (e.g. Weights); weights >= 0, 0 = frame not fitted")
    parser.add_argument("--refine", action="store_true",
                        help="bound-constrained Levenberg-Marquardt refinement of the voxelwise compartment fits "
                             "(slower, exact; the --regions curves are always refined)")
    parser.add_argument("--bounds", action="append", default=[], metavar="NAME=LOW,HIGH", type=_bound,
                        help="bounds of a refined compartment parameter (K1, k2, k3, k4 in their units, vB), e.g. "
                             "vB=0,0.1; repeat for several; implies --refine")
    delay = parser.add_mutually_exclusive_group()
    delay.add_argument("--delay", type=float, default=None, metavar="SECONDS",
                       help="input delay: the blood curves are shifted later by SECONDS (negative: earlier)")
    delay.add_argument("--fit-delay", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="fit one input delay within LOW..HIGH s (compartment models; on the --regions curves "
                            "together, else on the mean curve of the mask), e.g. -30 30")
    parser.add_argument("--dispersion", type=float, default=0.0, metavar="TAU_S",
                        help="correct the blood table's samples for the sampling line's dispersion (time constant "
                             "in s, e.g. 5; default 0: none)")
    parser.add_argument("--vb", type=float, default=None, help="fixed blood volume fraction (default: fitted)")
    parser.add_argument("--window", type=float, nargs=2, default=(30.0, 50.0), metavar=("START", "END"),
                        help="late window of the network, min after injection (default 30 50)")
    parser.add_argument("--mask", type=Path, default=None,
                        help="optional 3-D mask image on the PET grid; only non-zero voxels are fitted")
    parser.add_argument("--regions", type=Path, default=None,
                        help="optional label image or Slicer segmentation (.seg.nrrd, one layer) on the PET grid: per "
                             "region a statistics row (over the fitted voxels), the mean curve fitted (refined) and "
                             "drawn, written as <method>_region_fits.csv, <method>_region_curves.csv and .png")
    parser.add_argument("--region-names", type=Path, default=None, metavar="CTBL",
                        help="colour table naming the labels (lines 'value name r g b a', Slicer .ctbl or FreeSurfer "
                             "LUT); default: the segment names of a .seg.nrrd, else 'label N'")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where torch computations run (default auto)")
    parser.add_argument("--format", choices=("nrrd", "nii.gz"), default="nrrd", help="map file format")
    parser.add_argument("--out", type=Path, default=Path("scanai-pet"), metavar="DIR",
                        help="output folder (default ./scanai-pet)")


def _unit_source(image: Path) -> str:
    """Where the unit of the dynamic image ``image`` comes from, for messages."""
    from scanai.pet.study import IMAGE_SUFFIXES

    return "its sidecar's Units" if image.name.lower().endswith(IMAGE_SUFFIXES) else "its DICOM Units (0054,1001)"


def _warn(text: str) -> None:
    """A warning paragraph on stderr (nothing for an empty text)."""
    if text:
        print(f"warning: {text}", file=sys.stderr)


def _mask_on(path: Path, sequence) -> np.ndarray:
    """A label image read from ``path`` that must lie on the sequence's grid; returns its (k, j, i) labels."""
    from scanai.io.sitk_image import read_image

    image = read_image(path)
    mask_on_grid(image, sequence.frames.shape[1:], sequence.geometry, what=path.name)
    return np.asarray(image.array)


def blood_curves(args: argparse.Namespace, study) -> tuple[InputFunction, InputFunction | None]:
    """Plasma and whole-blood curves from the ``scanai pet`` options."""
    from scanai.pet.analysis import blood_pool_input, feng_fitted_input
    from scanai.pet.blood import read_blood_table
    from scanai.pet.units import decay_correct_input

    if args.input_function is not None:
        where = dict(args.where) if args.where else None
        curves = read_blood_table(args.input_function, where=where, unit=args.input_unit)
        plasma, whole_blood = curves.plasma, curves.whole_blood
        if args.dispersion:
            from scanai.pet.blood import correct_dispersion

            plasma = correct_dispersion(plasma, args.dispersion)
            whole_blood = None if whole_blood is None else correct_dispersion(whole_blood, args.dispersion)
        if args.decay_correct_input:
            if study.half_life_s is None:
                raise InputError("The study does not name its radionuclide, so the blood table cannot be decay "
                                 "corrected.", "Decay correct the blood table yourself, or give a DICOM/BIDS study.")
            plasma = decay_correct_input(plasma, study.half_life_s)
            whole_blood = None if whole_blood is None else decay_correct_input(whole_blood, study.half_life_s)
        if args.feng_fit:
            plasma = feng_fitted_input(plasma, study.timing)
        return plasma, whole_blood
    pool = _mask_on(args.blood_pool or args.population_from, study.sequence) != 0
    return blood_pool_input(study.sequence, study.timing, pool, args.blood_pool is None, study.unit), None


def write_result(result, out_dir: Path, suffix: str = "nrrd") -> dict[str, Path]:
    """Write every map and quality map of a :class:`~scanai.pet.analysis.ParametricResult`; returns name -> path."""
    from scanai.io.sitk_image import write_image

    out_dir = Path(out_dir)
    volumes = {**result.maps, **result.quality}
    return {name: write_image(volume, out_dir / f"{result.method}_{name}.{suffix}") for name, volume in volumes.items()}


def read_study(args: argparse.Namespace):
    """The dynamic PET of the ``scanai pet`` options, its notes printed, its unit settled with ``--image-unit``
    (:func:`scanai.pet.units.settle_image_unit`: declared where the image carries none, checked where it does)."""
    from scanai.pet.study import read_dynamic_pet
    from scanai.pet.units import settle_image_unit

    study = read_dynamic_pet(args.image, sidecar=args.sidecar, frames_csv=args.frames)
    for note in study.warnings:
        print(f"note: {note}")
    unit = settle_image_unit(study.unit, args.image_unit, _unit_source(Path(args.image)), "--image-unit")
    return study if unit == study.unit else dataclasses.replace(study, unit=unit)


def _summary(result) -> str:
    """One line: voxels analysed and fitted, and the median of each map over the fitted voxels only."""
    from scanai.pet.analysis import fitted_voxels, map_medians

    medians = ", ".join(f"{name} median {value:.4g}" if np.isfinite(value) else f"{name}: no voxel fitted"
                        for name, value in map_medians(result).items())
    return (f"{result.method}: {int(result.mask.sum())} voxels, {int(fitted_voxels(result).sum())} fitted; {medians} "
            "(over the fitted voxels).")


def run(args: argparse.Namespace) -> int:
    """``scanai pet``: parametric maps (NRRD/NIfTI) and a statistics CSV; prints the output paths. Returns 0.

    Every input (image, unit, masks, label map, input function) is read and checked before anything is fitted or
    written; a fit that looks wrong (:func:`scanai.pet.analysis.fit_warning`) gets a warning on stderr."""
    from scanai.pet.analysis import compute_maps, fit_warning, in_frame_unit
    from scanai.pet.reference_cli import REFERENCE_LABELS
    from scanai.pet.regions import region_names
    from scanai.pet.units import check_compatible_units, unit_assumption

    reference_method = args.method in REFERENCE_LABELS
    check_input_source(args, reference_method)
    with tqdm_progress("Parametric PET") as progress:
        progress(0.0, "Reading the dynamic PET")
        study = read_study(args)
        mask = _mask_on(args.mask, study.sequence) if args.mask is not None else None
        labels = _mask_on(args.regions, study.sequence) if args.regions is not None else None
        weights = frame_weights_option(args.weights, args.frames, len(study.timing))
        names = region_names(np.unique(labels[labels != 0]), args.regions, args.region_names) \
            if labels is not None else {}
        if reference_method:
            return _run_reference(args, study, mask, labels, names, weights, progress)
        plasma, whole_blood = blood_curves(args, study)
        _warn(unit_assumption(study.unit, plasma.unit, "state it with --image-unit UNIT"))
        input_unit = plasma.unit
        scale = check_compatible_units(study.unit, plasma.unit)
        if scale != 1.0:
            print(f"note: the input function is converted from {input_unit} to the image's {study.unit} "
                  f"(x{scale:g}).")
        plasma, whole_blood = in_frame_unit(study.unit, plasma, whole_blood)
        bounds = dict(args.bounds) or None
        delay = tuple(args.fit_delay) if args.fit_delay is not None else args.delay
        region_fit = None
        if labels is not None and isinstance(delay, tuple) and args.method in PARAMETERS_OF_COMPARTMENTS:
            region_fit = fit_regions(study, labels, names, plasma, whole_blood, args.method, weights, args, bounds,
                                     delay)  # the delay fitted on the regional curves, then used for the maps
            delay = float(np.nan_to_num(region_fit.delay_s[0]))
        result = compute_maps(study.sequence, study.timing, plasma, args.method, whole_blood=whole_blood, mask=mask,
                              t_star_min=args.t_star_min, weights=weights, refine=args.refine or bool(bounds),
                              vb=args.vb, window_min=tuple(args.window), device=args.device, bounds=bounds,
                              delay_s=delay, progress=progress.sub(0.05, 0.95))
        if labels is not None and region_fit is None and args.method != "network":
            region_fit = fit_regions(study, labels, names, plasma, whole_blood, args.method, weights, args, bounds,
                                     delay)
    warning = fit_warning(result, study.sequence, study.timing, plasma, study.unit, input_unit)
    paths = _write_outputs(args, study, result, labels, names, mask, region_fit, plasma.unit)
    paths["input_function"] = _write_csv(Path(args.out) / "input_function.csv", ["time_s", "plasma"],
                                         [[t, a] for t, a in zip(plasma.t_s, plasma.activity, strict=True)])
    _report(result, paths)
    _warn(warning)
    return 0


def check_input_source(args: argparse.Namespace, reference_method: bool) -> None:
    """InputError unless the input options fit the method: a blood input for the blood-input methods, ``--reference``
    for the reference-region methods."""
    blood = args.input_function or args.blood_pool or args.population_from
    if reference_method and args.reference is None:
        raise InputError(f"The reference-region method {args.method} needs a reference region.",
                         "Give --reference MASK (a region without specific binding, on the PET grid) instead of a "
                         "blood input.")
    if not reference_method and not blood:
        raise InputError(f"The method {args.method} needs an arterial input.",
                         "Give --input-function CSV, --blood-pool MASK or --population-from MASK, or choose a "
                         "reference-region method (srtm, srtm2, mrtm, mrtm2, logan_ref, patlak_ref) with --reference.")


def _run_reference(args: argparse.Namespace, study, mask: np.ndarray | None, labels: np.ndarray | None,
                   names: dict[int, str], weights, progress: Progress) -> int:
    """``scanai pet --method srtm ... --reference MASK``: the reference-region maps, statistics and regional fits."""
    from scanai.pet.reference_cli import reference_analysis, reference_curve

    if isinstance(weights, str) and weights == "counts":
        raise InputError("The reference-region methods take --weights none, duration, a file or a column, not counts.")
    reference = reference_curve(study.sequence, _mask_on(args.reference, study.sequence) != 0)
    regions = {} if labels is None else _regions(labels, names)
    result, fitted = reference_analysis(study, args.method, reference, mask, regions, weights, args.t_star_min,
                                        args.k2prime, progress.sub(0.05, 0.95))
    region_fit = None if fitted is None else RegionFits(*fitted)
    paths = _write_outputs(args, study, result, labels, names, mask, region_fit, study.unit)
    paths["reference"] = _write_csv(Path(args.out) / "reference_curve.csv", ["start_s", "duration_s", "reference"],
                                    [[s, d, a] for s, d, a in zip(study.timing.start_s, study.timing.duration_s,
                                                                  reference, strict=True)])
    _report(result, paths)
    return 0


def _regions(labels: np.ndarray, names: dict[int, str]) -> dict[str, np.ndarray]:
    """Region name -> (k, j, i) bool for each non-zero label."""
    return {names[int(value)]: labels == value for value in np.unique(labels) if value != 0}


def _write_outputs(args: argparse.Namespace, study, result, labels: np.ndarray | None, names: dict[int, str],
                   mask: np.ndarray | None, region_fit, unit: str) -> dict[str, Path]:
    """The maps, ``<method>_statistics.csv``, the regional fits (with ``--regions``) and ``frames.csv``."""
    from scanai.pet.analysis import bound_voxels, fitted_voxels, region_statistics

    paths = write_result(result, args.out, args.format)
    regions = _regions(labels, names) if labels is not None else {
        "mask" if mask is not None else "all voxels": result.mask}
    statistics = region_statistics(result.maps, regions, fitted_voxels(result), bound_voxels(result))
    header = list(statistics)
    rows = [[statistics[name][row] for name in header] for row in range(len(statistics["region"]))]
    paths["statistics"] = _write_csv(Path(args.out) / f"{result.method}_statistics.csv", header, rows)
    if region_fit is not None:
        paths.update(write_region_fits(region_fit, study.timing, Path(args.out), result.method, unit))
    paths["frames"] = study.timing.to_csv(Path(args.out) / "frames.csv")
    return paths


def _report(result, paths: dict[str, Path]) -> None:
    """The summary line, the delay used, a note for an experimental method and the output paths, on stdout."""
    from scanai.pet.analysis import EXPERIMENTAL_METHODS, EXPERIMENTAL_NOTE

    print(_summary(result))
    if result.method in EXPERIMENTAL_METHODS:
        print(f"Note: {EXPERIMENTAL_NOTE}.")
    if result.delay_s:
        print(f"input delay: {result.delay_s:+.2f} s")
    for path in paths.values():
        print(path)


#: Methods fitted with a compartment model (whose input delay can be fitted).
PARAMETERS_OF_COMPARTMENTS = ("1tcm", "2tcm_irreversible", "2tcm")


@dataclasses.dataclass(frozen=True, eq=False)
class RegionFits:
    """The regional mean curves of a label image and their fits: ``names`` (R,), ``tacs`` (R, T), ``fit`` a
    :class:`~scanai.pet.models.TacFit`."""

    names: list[str]
    tacs: np.ndarray
    fit: object

    @property
    def delay_s(self) -> np.ndarray:
        return self.fit.delay_s


def fit_regions(study, labels: np.ndarray, names: dict[int, str], plasma: InputFunction,
                whole_blood: InputFunction | None, method: str, weights, args: argparse.Namespace,
                bounds: dict | None, delay) -> RegionFits:
    """Fit ``method`` to the mean curve of each label (refined compartment fits: the regional optimum)."""
    from scanai.pet.analysis import region_tacs
    from scanai.pet.models import fit_tacs

    curves = region_tacs(study.sequence, _regions(labels, names))
    tacs = np.stack(list(curves.values()))
    compartmental = method in PARAMETERS_OF_COMPARTMENTS
    fit = fit_tacs(tacs, study.timing, plasma, method, t_star_min=args.t_star_min, weights=weights,
                   whole_blood=whole_blood if compartmental else None, vb=args.vb, device=args.device,
                   bounds=bounds if compartmental else None, delay_s=delay)
    return RegionFits(list(curves), tacs, fit)


def write_region_fits(regions: RegionFits, timing: FrameTiming, out_dir: Path, method: str,
                      unit: str) -> dict[str, Path]:
    """``<method>_region_fits.csv`` (one row per region: parameters, R², RMSE, bound hit, delay),
    ``<method>_region_curves.csv`` (per frame: times, each region's measured and fitted mean) and
    ``<method>_region_curves.png`` (the curves drawn). Returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scanai.pet.analysis import METHOD_LABELS
    from scanai.pet.reference_cli import REFERENCE_LABELS

    label = {**METHOD_LABELS, **REFERENCE_LABELS}[method]
    fit = regions.fit
    names = list(fit.parameters)
    rows = [[region, *(f"{float(fit.parameters[n][r]):.6g}" for n in names), f"{float(fit.r2[r]):.6g}",
             f"{float(fit.rmse[r]):.6g}", int(fit.bound_hit[r]), int(fit.skipped[r]),
             f"{float(fit.delay_s[r]):.3f}"] for r, region in enumerate(regions.names)]
    paths = {"region_fits": _write_csv(out_dir / f"{method}_region_fits.csv",
                                       ["region", *names, "r2", "rmse", "bound_hit", "skipped", "delay_s"], rows)}
    header = ["start_s", "duration_s", "mid_min"]
    columns = [timing.start_s, timing.duration_s, timing.mid_min]
    for r, region in enumerate(regions.names):
        header += [f"{region} measured", f"{region} fitted"]
        columns += [regions.tacs[r], fit.predicted[r]]
    paths["region_curves"] = _write_csv(out_dir / f"{method}_region_curves.csv", header,
                                        [[f"{c[i]:.6g}" for c in columns] for i in range(len(timing))])
    fig, ax = plt.subplots(figsize=(8, 5))
    for r, region in enumerate(regions.names):
        ax.plot(timing.mid_min, regions.tacs[r], "o", ms=3, color=f"C{r % 10}", label=f"{region} measured")
        ax.plot(timing.mid_min, fit.predicted[r], "-", color=f"C{r % 10}",
                label=f"{region} {label} (R² {float(fit.r2[r]):.3f})")
    ax.set_xlabel("time after injection (min)")
    ax.set_ylabel(f"activity ({unit or 'image units'})")
    ax.set_title(f"Regional curves and {label} fits", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths["region_figure"] = out_dir / f"{method}_region_curves.png"
    fig.savefig(paths["region_figure"], dpi=110)
    plt.close(fig)
    return paths


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


def _fit_panel(ax, study, tacs: dict[str, np.ndarray], plasma: InputFunction, whole_blood: InputFunction | None,
               methods: tuple[str, ...], title: str, rows: list[list[object]]) -> None:
    """Measured regional TACs and the frame-averaged fits of ``methods`` on ``ax``; appends one row per fit."""
    from scanai.pet.analysis import METHOD_LABELS
    from scanai.pet.models import fit_tacs

    minutes = study.timing.mid_min
    for colour, (region, tac) in enumerate(tacs.items()):
        ax.plot(minutes, tac, "o", ms=3.5, color=f"C{colour}", label=f"{region} measured")
        for style, method in zip(("-", "--", ":"), methods, strict=False):
            fit = fit_tacs(tac, study.timing, plasma, method, whole_blood=whole_blood, refine=True, device="cpu")
            ax.plot(minutes, fit.predicted[0], style, color=f"C{colour}", lw=1.2,
                    label=f"{region} {METHOD_LABELS[method]} (R² {float(fit.r2[0]):.3f})")
            values = {name: float(v[0]) for name, v in fit.parameters.items()}
            rows.append([study.name, region, METHOD_LABELS[method], *(f"{values.get(k, np.nan):.4g}"
                                                                      for k in ("K1", "k2", "k3", "k4", "vB", "Ki",
                                                                                "VT")), f"{float(fit.r2[0]):.4f}"])
    ax.set_xlabel("time after injection (min)")
    ax.set_ylabel(f"activity ({plasma.unit})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)


def _graphical_panel(ax, method: str, study, tacs: dict[str, np.ndarray], plasma: InputFunction, fit,
                     slope_name: str, t_star_min: float, title: str, rows: list[list[object]]) -> None:
    """Patlak or Logan plot of ``tacs`` (frames after 5 min) with the fitted lines; appends one row per region."""
    from scanai.pet.analysis import METHOD_LABELS, graphical_axes

    x, y, x_label, y_label = graphical_axes(method, np.stack(list(tacs.values())), study.timing, plasma)
    shown = study.timing.mid_min >= 5.0
    used = study.timing.mid_min >= t_star_min
    for number, region in enumerate(tacs):
        slope = float(fit.parameters[slope_name][number])
        intercept = float(fit.parameters["V" if method == "patlak" else "b"][number])
        ax.plot(x[number, shown], y[number, shown], "o", ms=3, mfc="none", color=f"C{number}")
        ax.plot(x[number, used], slope * x[number, used] + intercept, "-", color=f"C{number}",
                label=f"{region}: {slope_name} {slope:.4g}, R² {float(fit.r2[number]):.4f}")
        values = {slope_name: f"{slope:.4g}"}
        rows.append([study.name, region, f"{METHOD_LABELS[method]} (t* {t_star_min:g} min)",
                     *(values.get(k, "nan") for k in ("K1", "k2", "k3", "k4", "vB", "Ki", "VT")),
                     f"{float(fit.r2[number]):.4f}"])
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(f"{title} (frames after 5 min; line: fitted frames)", fontsize=9)
    ax.legend(fontsize=7)


def _demo_real(data_dir: Path, out_dir: Path, plt, progress: Progress) -> tuple[list[list[object]], list[str]]:
    """Compartment models, Logan and Patlak on the real regional TACs; returns table rows and file names."""
    from scanai.pet.kmap import load_kmap_mat, load_tac_table
    from scanai.pet.models import fit_tacs

    pet = data_dir / "pet"
    needed = ("demo_2tcm_realdata.mat", "pbr28_tacdata.csv", "pbr28_blooddata.csv")
    if not all((pet / name).is_file() for name in needed):
        return [], []
    from scanai.pet.blood import read_blood_table

    rows: list[list[object]] = []
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    progress(0.0, "Kinetic models on real total-body FDG TACs")
    fdg = load_kmap_mat(pet / "demo_2tcm_realdata.mat")
    _fit_panel(axes[0, 0], fdg, {"GM": fdg.tacs["GM"]}, fdg.input_function, None, ("2tcm", "2tcm_irreversible"),
               "Total-body FDG (KMAP-M), grey matter: 2TCM fits", rows)
    patlak = fit_tacs(np.stack(list(fdg.tacs.values())), fdg.timing, fdg.input_function, "patlak",
                      t_star_min=DEFAULT_T_STAR_MIN)
    _graphical_panel(axes[0, 1], "patlak", fdg, fdg.tacs, fdg.input_function, patlak, "Ki", DEFAULT_T_STAR_MIN,
                     "Total-body FDG (KMAP-M): Patlak plots", rows)
    progress(0.5, "Kinetic models on real [11C]PBR28 TACs")
    scan = {"PET": "cgyu_1"}
    pbr = load_tac_table(pet / "pbr28_tacdata.csv", scan)
    blood = read_blood_table(pet / "pbr28_blooddata.csv", where=scan, unit="nCi/mL")
    _fit_panel(axes[1, 0], pbr, {r: pbr.tacs[r] for r in ("THA", "CBL")}, blood.plasma, blood.whole_blood,
               ("2tcm", "1tcm"), "[11C]PBR28 (kinfitr, arterial plasma + whole blood): 2TCM and 1TCM", rows)
    logan = fit_tacs(np.stack(list(pbr.tacs.values())), pbr.timing, blood.plasma, "logan", t_star_min=30.0)
    _graphical_panel(axes[1, 1], "logan", pbr, pbr.tacs, blood.plasma, logan, "VT", 30.0,
                     "[11C]PBR28: Logan plots", rows)
    fig.tight_layout()
    fig.savefig(out_dir / "models_real.png", dpi=110)
    plt.close(fig)
    _write_csv(out_dir / "models_real.csv",
               ["study", "region", "method", "K1", "k2", "k3", "k4", "vB", "Ki", "VT", "r2"], rows)
    return rows, ["models_real.png", "models_real.csv"]


def _demo_network(out_dir: Path, plt, progress: Progress) -> list[str]:
    """Short-scan network vs voxelwise Patlak on one unseen simulated phantom (30-50 min); Markdown lines."""
    from scanai.core.device import torch_available

    if not torch_available():
        return ["", "_Network part skipped: PyTorch is not installed._"]
    from scanai.core.image import Geometry, VolumeSequence
    from scanai.pet.network import predict_parametric
    from scanai.pet.simulate import make_phantom, noisy_frames, schedule
    from scanai.pet.train import nrmse, ssim

    progress(0.0, "Short-scan network on an unseen phantom")
    phantom = make_phantom(np.random.default_rng(np.random.SeedSequence([20261121, 0])))
    timing = schedule((30.0, 50.0), 2)
    noisy = noisy_frames(phantom, timing, np.random.default_rng(7), cv=0.15, psf_fwhm_mm=5.0)
    sequence = VolumeSequence(noisy.frames[:, None].astype(np.float32), Geometry((4.0, 4.0, 4.0)),
                              tuple(timing.mid_s))
    maps = predict_parametric(sequence, timing, phantom.input_function, mask=phantom.body[None],
                              progress=progress.sub(0.1, 0.9))
    body, truth = phantom.body, phantom.ki_true
    images = {"true Ki": truth, "Patlak, 30-50 min": maps.patlak.ki.array[0], "network, 30-50 min": maps.ki.array[0]}
    scores = {name: (nrmse(image, truth, body), ssim(image, truth, body)) for name, image in list(images.items())[1:]}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    vmax = float(np.percentile(truth[body], 97)) * 1.5  # organs visible; the hottest lesion saturates
    for ax, (name, image) in zip(axes, images.items(), strict=True):
        shown = ax.imshow(np.where(body, image, 0.0), cmap="inferno", vmin=0, vmax=vmax)
        extra = f"\nNRMSE {scores[name][0]:.3f}, SSIM {scores[name][1]:.3f}" if name in scores else ""
        ax.set_title(f"{name} (1/min){extra}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out_dir / "network_ki.png", dpi=110)
    plt.close(fig)
    progress(1.0, "Short-scan network: done")
    link = out_dir.name
    (patlak_nrmse, patlak_ssim), (net_nrmse, net_ssim) = scores.values()
    return ["", f"**Short-scan network** (unseen simulated {phantom.kind} phantom, FDG, two 10-min frames at "
            f"30-50 min, 15 % noise, 5 mm PSF): Ki NRMSE {net_nrmse:.3f} vs {patlak_nrmse:.3f} for voxelwise "
            f"Patlak on the same frames ({100 * (1 - net_nrmse / patlak_nrmse):.0f} % lower), SSIM {net_ssim:.3f} "
            f"vs {patlak_ssim:.3f}.", "", f"![True Ki, Patlak and network Ki maps]({link}/network_ki.png)"]


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
        for name, volume in (("ki", maps.ki), ("intercept", maps.intercept), ("r2", maps.r2)):
            write_image(volume, out_dir / f"phantom_{name}.nrrd")
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

        network_lines = _demo_network(out_dir, plt, progress.sub(0.6, 0.75))
        real_rows, real_files = ([], [])
        if data_dir is not None:
            real_rows, real_files = _demo_real(Path(data_dir), out_dir, plt, progress.sub(0.75, 1.0))
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
    lines += network_lines
    if real_rows:
        lines += [
            "",
            "**Real data**: total-body FDG regional TACs with an image-derived aortic input (KMAP-M, UC Davis, "
            "Bq/mL) and [11C]PBR28 TACs with metabolite-corrected arterial plasma and whole blood (kinfitr, "
            "nCi/mL). Compartment fits are frame-averaged, basis functions + Levenberg-Marquardt; the vB term "
            "uses whole blood where measured.",
            "",
            "| study | region | method | K1 | k2 | k3 | k4 | vB | Ki | VT | R² |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *["| " + " | ".join(str(v) for v in r) + " |" for r in real_rows],
            "",
            f"![Fitted curves and Logan plots of real TACs]({link}/models_real.png)",
        ]
    elif data_dir is None:
        lines += ["", "_Real-data part skipped: the shared data folder was not given._"]
    return "\n".join(lines) + "\n"
