"""``scanai chest INPUT --out DIR``: the ChestQC grade, reasons and findings of one radiograph or a folder of them.

INPUT is a radiograph file (DICOM, PNG, JPEG, TIFF, BMP, single-slice NRRD/MHA/NIfTI) or a folder: every
radiograph file in it (sorted by name; ``--recursive`` for sub-folders) is analysed; other files (notes, CSV, ...)
are skipped with a note. For each image (``NAME`` = the file name without its extension, made unique):

- one row of ``DIR/report.csv``: file, level, rule, reasons, disposition, CTR, cardiomegaly, pneumothorax and
  effusion ratio + severity, every quality test's value (column = the test id) and pass flag (``<id>_pass``),
  backend, warnings, and ``error`` (the message when the image could not be analysed; its level is ``ERROR``);
- ``DIR/overlays/NAME.png``: the radiograph with the detected objects, boxes, width lines, spine and centre lines;
- ``DIR/json/NAME.json``: everything (input, detections, tests, findings, report text);
- with ``--normalised``: ``DIR/normalised/NAME.nrrd``, the patent's Eq. (1) + Eq. (2) normalised image;
- with ``--masks nrrd|png``: ``DIR/masks/NAME/OBJECT.nrrd`` (or ``.png``), each detected object's mask.

``--pixel-size-mm`` gives the pixel size of pictures (PNG, JPEG, TIFF carry none), so that widths are in mm.

Thresholds: by default the profile for each image's view, patient age and sex (from the DICOM header);
``--profile NAME`` fixes one profile; ``--thresholds JSON`` replaces single values (a JSON file or inline text
holding ``{"name": value, ...}``, or ``{"thresholds": {...}}``), e.g. ``'{"weighted": false}'``.
``--experimental`` also detects and reports the objects not validated on real radiographs (scapulae, clavicles,
foreign objects, pneumothorax, effusion), each labelled experimental; without it they are not assessed.

Exit status: 0 when every image was analysed (whatever its grade, "not assessable" included); 1 when at least one
image of a folder could not be read or analysed (its row has level ERROR and the message; the others are reported);
2 when the command itself cannot run (INPUT missing or, for one file, unreadable; no radiograph in the folder;
unknown profile or threshold; backend not available), with nothing written.

Also the ChestQC part of ``scanai demo`` (:func:`demo`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanai.chest.io import DICOM_SUFFIXES, PICTURE_SUFFIXES, VOLUME_SUFFIXES, Radiograph, read_radiograph
from scanai.chest.preprocess import normalise, percentile_window
from scanai.core.errors import Cancelled, FileFormatError, InputError

REAL_DICOM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
FAKE_MONOCHROME1 = "Fake_MONOHR1.dcm"
WINGSPAN_DEMO_COUNT = 3
#: Columns that lead every report row (test columns follow in the order first met, then the trailing ones).
LEADING_COLUMNS = ("file", "level", "rule", "reasons", "disposition", "CTR", "cardiomegaly", "pneumothorax_ratio",
                   "pneumothorax_severity", "effusion_ratio", "effusion_severity")
TRAILING_COLUMNS = ("backend", "warnings", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai chest`` (see the module docstring)."""
    from scanai.chest.pipeline import BACKENDS
    from scanai.chest.thresholds import THRESHOLD_PROFILES

    parser.add_argument("input", type=Path,
                        help="chest radiograph (DICOM, PNG, JPEG, TIFF) or a folder of them")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing): report.csv, overlays/, json/")
    parser.add_argument("--backend", choices=BACKENDS, default="network",
                        help="detector: network (the shipped network, default) or classical (no learned weights)")
    parser.add_argument("--profile", choices=sorted(THRESHOLD_PROFILES), default=None,
                        help="threshold profile for every image (default: chosen per image from the view, age and "
                             "sex in the header)")
    parser.add_argument("--thresholds", default=None, metavar="JSON",
                        help="threshold values to replace: a JSON file or inline JSON, e.g. '{\"weighted\": false}'")
    parser.add_argument("--experimental", action="store_true",
                        help="also detect and report the objects not validated on real radiographs (scapulae, "
                             "clavicles, foreign objects, pneumothorax, effusion), labelled experimental (default: not "
                             "assessed)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (default auto)")
    parser.add_argument("--recursive", action="store_true", help="also analyse radiographs in sub-folders")
    parser.add_argument("--keep-inverted", action="store_true",
                        help="grade images that look inverted (default: 'not assessable' with a warning)")
    parser.add_argument("--normalised", action="store_true",
                        help="also write each image normalised as the patent's Eq. (1) + Eq. (2) (NRRD)")
    parser.add_argument("--low-percentile", type=float, default=5.0,
                        help="x1 of the patent's Eq. (1), in percent (default 5; with --normalised)")
    parser.add_argument("--high-percentile", type=float, default=95.0,
                        help="x2 of the patent's Eq. (1), in percent (default 95; with --normalised)")
    parser.add_argument("--masks", choices=("nrrd", "png"), default=None,
                        help="also write each detected object's mask: masks/NAME/OBJECT.nrrd (label map on the "
                             "radiograph's grid, for Slicer) or .png (0/255)")
    parser.add_argument("--pixel-size-mm", type=float, default=None, metavar="MM",
                        help="pixel size of pictures (PNG, JPEG, TIFF) whose file has none, so that widths are in "
                             "mm; a DICOM's or NRRD's own pixel size is kept")
    parser.add_argument("--clip", action="store_true",
                        help="clip Eq. (1) to [0, 1] before standardising (not in the patent; with --normalised)")


# ---------------------------------------------------------------------------------------------- inputs


def is_radiograph_file(path: Path) -> bool:
    """Whether ``path`` looks like a radiograph file: a known extension, or no extension with the DICOM marker."""
    from scanai.chest.io import _suffix
    from scanai.io.dicom import is_dicom_file

    suffix = _suffix(path)
    if suffix in DICOM_SUFFIXES + PICTURE_SUFFIXES + VOLUME_SUFFIXES:
        return True
    return suffix == "" and is_dicom_file(path)


def radiograph_files(folder: Path, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """(radiograph files, other files) in ``folder``, each sorted by path; hidden files are ignored."""
    candidates = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    radiographs = [p for p in candidates if is_radiograph_file(p)]
    return radiographs, [p for p in candidates if p not in set(radiographs)]


def output_names(paths: Sequence[Path], root: Path | None = None) -> list[str]:
    """A unique file-name stem per input: the path relative to ``root`` without its extension ('/' -> '__');
    a repeated stem gets its extension appended (``a.dcm``, ``a.png`` -> ``a_dcm``, ``a_png``)."""
    from scanai.chest.io import _suffix

    def stem(path: Path) -> str:
        relative = path.relative_to(root) if root is not None else Path(path.name)
        text = str(relative)[: len(str(relative)) - len(_suffix(path))] if _suffix(path) else str(relative)
        return text.replace("/", "__").replace("\\", "__") or "image"

    stems = [stem(p) for p in paths]
    names = []
    for path, name in zip(paths, stems, strict=True):
        if stems.count(name) > 1:
            name = f"{name}_{_suffix(path).lstrip('.').replace('.', '_')}"
        while name in names:
            name += "_"
        names.append(name)
    return names


def load_thresholds(profile: str | None = None, thresholds_json: str | None = None):
    """(Thresholds or None, overrides): the named profile (None = per image from the header) and the values of a
    JSON file or inline JSON text (``{"name": value}`` or ``{"thresholds": {...}}``). InputError for an unknown
    profile, unreadable JSON or unknown threshold names."""
    from scanai.chest.pipeline import apply_overrides
    from scanai.chest.thresholds import THRESHOLD_PROFILES, thresholds_for

    thresholds = None
    if profile is not None:
        if profile not in THRESHOLD_PROFILES:
            raise InputError(f"Unknown threshold profile {profile!r}.",
                             f"Choose one of: {', '.join(sorted(THRESHOLD_PROFILES))}.")
        thresholds = THRESHOLD_PROFILES[profile]
    overrides: dict[str, Any] = {}
    if thresholds_json:
        text = str(thresholds_json).strip()
        if not text.startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise FileFormatError(f"The thresholds file {path} does not exist.",
                                      "Give a JSON file, or inline JSON such as '{\"weighted\": false}'.")
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"The thresholds are not valid JSON ({error.msg}, line {error.lineno}).",
                             "Write them as {\"name\": value, ...}.") from error
        if isinstance(data, dict) and isinstance(data.get("thresholds"), dict):
            data = data["thresholds"]
        if not isinstance(data, dict):
            raise InputError("The thresholds JSON must be an object of name: value pairs.",
                             "Write them as {\"name\": value, ...}.")
        overrides = data
        apply_overrides(thresholds if thresholds is not None else thresholds_for(), overrides)  # check the names
    return thresholds, overrides


# ---------------------------------------------------------------------------------------------- batch


@dataclass(frozen=True)
class BatchOptions:
    """How ``scanai chest`` analyses each image and what it writes beside the report.

    thresholds / overrides: the threshold profile (None: per image) and single values replaced in it.
    refuse_inverted:        grade images that look inverted as "not assessable" (``--keep-inverted`` turns it off).
    normalised:             the patent's Eq. (1) options when the normalised image is written, else None.
    pixel_size_mm:          the pixel size of pictures whose file has none (PNG, JPEG, TIFF), else None.
    masks:                  "nrrd" or "png" to write each object's mask, else None.
    keep_going:             a failing image gets an error row and the batch goes on (False: its error is raised).
    """

    thresholds: Any = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    refuse_inverted: bool = True
    normalised: Mapping[str, Any] | None = None
    pixel_size_mm: float | None = None
    masks: str | None = None
    keep_going: bool = True


def write_image_outputs(result, name: str, out_dir: Path, masks: str | None = None) -> dict[str, Path]:
    """The overlay PNG and the JSON of one analysed image (and its masks, :func:`write_masks`); returns their
    paths."""
    from scanai.chest.figures import save_overlay

    radiograph = result.radiograph
    spacing = radiograph.spacing_mm if radiograph.spacing_known else None
    overlay = save_overlay(radiograph.image.array[0], result.detections, result.assessment,
                           out_dir / "overlays" / f"{name}.png", title=Path(str(radiograph.metadata.get(
                               "source", name))).name, spacing_mm=spacing)
    record = {**result.as_dict(), "report_text": result.assessment.report_text()}
    json_path = out_dir / "json" / f"{name}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2, default=_json_default))
    written = {"overlay": overlay, "json": json_path}
    if masks is not None and result.detections is not None:
        written.update(write_masks(result, out_dir / "masks" / name, masks))
    return written


def write_masks(result, folder: Path, file_format: str = "nrrd") -> dict[str, Path]:
    """Each detected object's mask as ``folder/OBJECT.nrrd`` (uint8 0/1 on the radiograph's grid, pixel size and
    position included, opens in Slicer as a label map) or ``OBJECT.png`` (0/255); the body mask too, and all
    foreign objects together as ``foreign_object``. Objects that were not detected get no file."""
    from PIL import Image

    from scanai.chest.detection import FOREIGN
    from scanai.core.image import Volume
    from scanai.io.sitk_image import write_image

    detections = result.detections
    masks = {name: found.mask for name, found in detections.objects.items()}
    if detections.foreign_objects:
        masks[FOREIGN] = detections.mask(FOREIGN)
    if detections.body is not None:
        masks["body"] = detections.body
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, mask in masks.items():
        path = folder / f"{name}.{file_format}"
        if file_format == "png":
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        else:
            write_image(Volume(mask[np.newaxis].astype(np.uint8), result.radiograph.image.geometry), path)
        written[f"mask_{name}"] = path
    return written


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def analyse_batch(paths: Sequence[Path], detector, out_dir: Path, options: BatchOptions = BatchOptions(),
                  names: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                  progress=None) -> list[dict[str, Any]]:
    """Analyse each file, write its overlay and JSON (and what ``options`` asks for: normalised image, masks) and
    return one report row per file (``labels``: the file names shown; ``names``: the output names). A failing file
    gives an error row and the others go on, unless ``options.keep_going`` is False. Cancelled (from ``progress``)
    stops the batch. Memory is released after each image, so a batch runs in constant memory."""
    from scanai.chest.pipeline import analyse_file, error_row, summary_row
    from scanai.core.memory import release_memory
    from scanai.core.progress import Progress

    progress = Progress.ensure(progress)
    names = list(names) if names is not None else output_names(paths)
    labels = list(labels) if labels is not None else [str(p) for p in paths]
    rows = []
    count = max(len(paths), 1)
    for index, (path, name, label) in enumerate(zip(paths, names, labels, strict=True)):
        progress(index / count, f"{Path(path).name} ({index + 1}/{len(paths)})")
        try:
            result = analyse_file(path, detector, options.thresholds, progress.sub(index / count, (index + 1) / count),
                                  options.overrides, options.refuse_inverted, options.pixel_size_mm)
            write_image_outputs(result, name, out_dir, options.masks)
            if options.normalised is not None:
                _write_normalised(result.radiograph, out_dir / "normalised" / f"{name}.nrrd", options.normalised)
            rows.append(summary_row(result, label))
        except Cancelled:
            raise
        except Exception as error:  # one bad image must not stop the batch: it gets an error row
            if not options.keep_going:
                raise
            rows.append(error_row(label, error if _is_user_error(error) else RuntimeError(
                f"internal error ({type(error).__name__}: {error})"), getattr(detector, "name", "")))
        release_memory()
    progress(1.0, "done")
    return rows


def _is_user_error(error: BaseException) -> bool:
    from scanai.core.errors import ScanAIError

    return isinstance(error, ScanAIError)


def _write_normalised(radiograph: Radiograph, path: Path, options: Mapping[str, Any]) -> Path:
    from scanai.io.sitk_image import write_image

    return write_image(normalise(radiograph.image, options.get("low_percentile", 5.0),
                                 options.get("high_percentile", 95.0), clip=options.get("clip", False)), path)


def report_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The CSV header: :data:`LEADING_COLUMNS`, every other column in the order first met, :data:`TRAILING_COLUMNS`."""
    middle: list[str] = []
    for row in rows:
        middle += [key for key in row if key not in LEADING_COLUMNS + TRAILING_COLUMNS and key not in middle]
    return [*LEADING_COLUMNS, *middle, *TRAILING_COLUMNS]


def write_report(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write the rows as CSV (missing values empty); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=report_columns(rows), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(args: Any) -> int:
    """Run ``scanai chest`` (see the module docstring for outputs and exit status)."""
    from scanai.chest.pipeline import detector_by_name
    from scanai.core.progress import tqdm_progress

    source = Path(args.input)
    if source.is_dir():
        paths, skipped = radiograph_files(source, getattr(args, "recursive", False))
        if not paths:
            raise InputError(f"The folder {source} holds no radiograph file (DICOM, PNG, JPEG, TIFF, NRRD).",
                             "Choose a folder with radiographs, or one radiograph file.")
        names, labels = output_names(paths, source), [str(p.relative_to(source)) for p in paths]
    elif source.is_file():
        paths, skipped, names, labels = [source], [], output_names([source]), [source.name]
    else:
        raise FileFormatError(f"The file {source} does not exist.", "Check the path and the file name.")
    thresholds, overrides = load_thresholds(getattr(args, "profile", None), getattr(args, "thresholds", None))
    if getattr(args, "experimental", False):
        overrides = {**overrides, "experimental": True}
    detector = detector_by_name(getattr(args, "backend", "network"), getattr(args, "device", "auto"))
    if skipped:
        shown = ", ".join(p.name for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(f"Note: skipped {len(skipped)} file(s) that are not radiographs: {shown}", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    normalised = None
    if getattr(args, "normalised", False):
        normalised = {"low_percentile": args.low_percentile, "high_percentile": args.high_percentile,
                      "clip": args.clip}
    options = BatchOptions(thresholds, overrides, not getattr(args, "keep_inverted", False), normalised,
                           getattr(args, "pixel_size_mm", None), getattr(args, "masks", None), source.is_dir())
    with tqdm_progress(f"ChestQC ({detector.name})") as progress:
        rows = analyse_batch(paths, detector, out_dir, options, names, labels, progress)
    report = write_report(rows, out_dir / "report.csv")
    for row in rows:
        detail = row["error"] if row["level"] == "ERROR" else (row["reasons"] or row.get("disposition", ""))
        ctr = f", CTR {row['CTR']:.3f}" if isinstance(row.get("CTR"), float) else ""
        ctr += " (cardiomegaly)" if row.get("cardiomegaly") == "yes" else ""
        print(f"{row['file']}: {row['level']}{ctr}" + (f" - {detail}" if detail else ""))
    errors = sum(row["level"] == "ERROR" for row in rows)
    print(f"{len(rows)} image(s), {errors} error(s). Report: {report}; overlays: {out_dir / 'overlays'}; "
          f"details: {out_dir / 'json'}")
    return 1 if errors else 0


@dataclass(frozen=True)
class _Case:
    key: str
    label: str
    path: Path
    write_nrrd: bool = True


def _demo_cases(tmp: Path, data_dir: Path | None) -> tuple[list[_Case], dict[str, Any]]:
    """The images of the demo (phantom always; real chest files when ``data_dir`` is given)."""
    from scanai.chest.phantom import make_chest_phantom, write_monochrome1_copy, write_phantom_dicom

    phantom = make_chest_phantom()
    cases = [
        _Case("phantom_mono2", "Synthetic phantom, DICOM MONOCHROME2", write_phantom_dicom(
            phantom, tmp / "phantom_mono2.dcm", "MONOCHROME2")),
        _Case("phantom_mono1", "Synthetic phantom, DICOM MONOCHROME1", write_phantom_dicom(
            phantom, tmp / "phantom_mono1.dcm", "MONOCHROME1"), write_nrrd=False),
    ]
    facts: dict[str, Any] = {"phantom_spacing_mm": phantom.spacing_mm}
    chest = data_dir / "chest" if data_dir is not None else None
    if chest is not None and (chest / REAL_DICOM).is_file():
        cases.append(_Case("cr_mono2", "NIH/RSNA CR, MONOCHROME2 (original)", chest / REAL_DICOM))
        if (chest / FAKE_MONOCHROME1).is_file():
            cases.append(_Case("cr_fake_mono1", "NIH/RSNA CR, Fake_MONOHR1.dcm (labelled MONOCHROME1)",
                               chest / FAKE_MONOCHROME1, write_nrrd=False))
            facts["fake_same_stored"] = _same_stored_pixels(chest / REAL_DICOM, chest / FAKE_MONOCHROME1)
        cases.append(_Case("cr_true_mono1", "NIH/RSNA CR, re-encoded as true MONOCHROME1 (inverted pixels)",
                           write_monochrome1_copy(chest / REAL_DICOM, tmp / "cr_true_mono1.dcm"), write_nrrd=False))
    if chest is not None and (chest / "wingspan" / "png").is_dir():
        pngs = sorted((chest / "wingspan" / "png").glob("*.png"))[:WINGSPAN_DEMO_COUNT]
        for number, png in enumerate(pngs, start=1):
            cases.append(_Case(f"wingspan_{number}", f"Wingspan PNG {number} (…{png.stem[-12:]})", png))
    return cases, facts


def _same_stored_pixels(first: Path, second: Path) -> bool:
    """True when both DICOM files store identical pixel arrays (whatever their photometric interpretation)."""
    import pydicom

    return bool(np.array_equal(pydicom.dcmread(str(first)).pixel_array, pydicom.dcmread(str(second)).pixel_array))


def _demo_detector():
    """The network when it loads, else the classical detector, else None (the demo must run on any installation:
    without a detector it only reads and normalises)."""
    from scanai.chest.pipeline import detector_by_name
    from scanai.core.errors import ScanAIError

    for backend in ("network", "classical"):
        try:
            return detector_by_name(backend, "auto")
        except (ScanAIError, ImportError, OSError):
            continue
    return None


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Run the ChestQC demo: read + normalise each image (NRRD and PNG figures), then grade it and draw its
    overlay (``<key>_overlay.png``) into ``out_dir``.

    Returns a Markdown section whose image links are ``chest/<file>.png`` (``out_dir`` is ``report/chest``).
    """
    from scanai.chest.figures import save_normalisation_figure, save_overlay
    from scanai.chest.pipeline import analyse_radiograph
    from scanai.core.progress import tqdm_progress
    from scanai.io.sitk_image import write_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    normalised: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    detector = _demo_detector()
    with tempfile.TemporaryDirectory(prefix="scanai-chest-") as tmp:
        cases, facts = _demo_cases(Path(tmp), data_dir)
        with tqdm_progress("ChestQC demo") as progress:
            for _, case in progress.iterate(cases, "Radiograph"):
                radiograph = read_radiograph(case.path)
                result = normalise(radiograph.image)
                p5, p95 = percentile_window(radiograph.image)
                save_normalisation_figure(radiograph.image, result, out_dir / f"{case.key}.png", case.label)
                if case.write_nrrd:
                    write_image(result, out_dir / f"{case.key}_normalised.nrrd")
                raw[case.key], normalised[case.key] = radiograph.image.array, result.array
                rows.append({"case": case, "radiograph": radiograph, "p5": p5, "p95": p95,
                             "mean": float(result.array.mean()), "std": float(result.array.std())})
                if detector is not None:
                    analysis = analyse_radiograph(radiograph, detector)
                    save_overlay(radiograph.image.array[0], analysis.detections, analysis.assessment,
                                 out_dir / f"{case.key}_overlay.png", case.label,
                                 radiograph.spacing_mm if radiograph.spacing_known else None)
                    rows[-1]["analysis"] = analysis
    markdown = _markdown(rows, raw, normalised, facts)
    return markdown + _analysis_markdown(rows, detector.name) if detector is not None else markdown


def _analysis_markdown(rows: list[dict[str, Any]], backend: str) -> str:
    """The demo's grading table and overlay links."""
    from scanai.chest.pipeline import finding

    lines = ["", f"### ChestQC grade and findings ({backend} detector)", "",
             "The patent's quality level with the rule that fired and its reasons, and the cardiothoracic ratio "
             "(findings are reported only for usable images). Overlays: object outlines, foreign-object boxes with "
             "confidence, the heart and lung width lines, the spine line and the image centreline.", "",
             "| image | level | rule | reasons | CTR | warnings | time (s) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        analysis = row["analysis"]
        assessment = analysis.assessment
        ctr = finding(assessment, "cardiothoracic_ratio")
        reasons = "; ".join(assessment.reasons).replace("|", "/") or "-"
        warnings = "; ".join(analysis.warnings).replace("|", "/") or "-"
        lines.append(f"| {row['case'].label} | {assessment.level} | {assessment.rule or '-'} | {reasons} | "
                     f"{f'{ctr.value:.3f}' if ctr is not None else '-'} | {warnings} | {analysis.seconds:.2f} |")
    lines.append("")
    for row in rows:
        lines += [f"![{row['case'].label}: overlay](chest/{row['case'].key}_overlay.png)", ""]
    return "\n".join(lines)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _markdown(rows: list[dict[str, Any]], raw: dict[str, np.ndarray], normalised: dict[str, np.ndarray],
              facts: dict[str, Any]) -> str:
    """The demo's Markdown section."""
    lines = [
        "## ChestQC: reading and normalising chest radiographs",
        "",
        "Each radiograph is read into a single-slice volume (DICOM: Modality LUT applied, MONOCHROME1 inverted, "
        "spacing from PixelSpacing or ImagerPixelSpacing; pictures: 1 mm, flagged unknown), oriented so it shows "
        "upright in Slicer's coronal view, then normalised as the patent's Eq. (1) (5th/95th percentile min-max, "
        "no clipping) followed by Eq. (2) (z-score over all pixels).",
        "",
        "| image | size | spacing (mm) | spacing source | photometric | raw 5th / 95th pct | mean | std |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        radiograph: Radiograph = row["radiograph"]
        meta = radiograph.metadata
        shape = radiograph.image.array.shape
        spacing = f"{radiograph.spacing_mm[0]:g}" if radiograph.spacing_known else "1 (unknown)"
        lines.append(f"| {row['case'].label} | {shape[2]} x {shape[1]} | {spacing} | {meta.get('spacing_source')} | "
                     f"{meta.get('photometric_interpretation', '')} | {row['p5']:.4g} / {row['p95']:.4g} | "
                     f"{row['mean']:.1e} | {row['std']:.4f} |")
    lines += ["", "**MONOCHROME1 handling.**", ""]
    if "phantom_mono1" in normalised:
        same_raw = bool(np.array_equal(raw["phantom_mono1"], raw["phantom_mono2"]))
        difference = _max_abs(normalised["phantom_mono1"], normalised["phantom_mono2"])
        lines.append(f"- Phantom written as MONOCHROME2 and as MONOCHROME1 (inverted stored values): raw values read "
                     f"back identical: {same_raw}; max |difference| of the normalised images {difference:.2e}; "
                     f"pixel size {facts['phantom_spacing_mm']:g} mm.")
    if "cr_fake_mono1" in normalised:
        lines.append(f"- `Fake_MONOHR1.dcm` stores exactly the same pixel values as the MONOCHROME2 original "
                     f"({facts.get('fake_same_stored')}); only PhotometricInterpretation was changed. Read correctly, "
                     "it is therefore the photographic negative of the original: max |normalised(fake) + "
                     f"normalised(original)| = {_max_abs(normalised['cr_fake_mono1'], -normalised['cr_mono2']):.2e}. "
                     "It tests that inversion happens, not that both copies look alike.")
    if "cr_true_mono1" in normalised:
        lines.append(f"- The original re-encoded as a true MONOCHROME1 file (stored values 255 - s) reads back "
                     f"identical: max |raw difference| {_max_abs(raw['cr_true_mono1'], raw['cr_mono2']):.1e}, max "
                     f"|normalised difference| {_max_abs(normalised['cr_true_mono1'], normalised['cr_mono2']):.1e}.")
    lines.append("")
    for row in rows:
        lines.append(f"![{row['case'].label}](chest/{row['case'].key}.png)")
        lines.append("")
    if any(key.startswith("cr_") or key.startswith("wingspan_") for key in normalised):
        lines += [
            "Data: the CR DICOM and its MONOCHROME1 copy come from the TorchXRayVision tests (mlmed/torchxrayvision "
            "@ f4087a0), an NIH ChestX-ray14 image from the RSNA release (Wang et al., CVPR 2017). Wingspan images: "
            "eveningdong/cardiothoracic_ratio_estimation_dataset @ 9fae424, MIT licence, Copyright (c) 2020 "
            "Nanqing Dong (Dong et al., MICCAI 2018 and MICCAI 2019).",
            "",
        ]
    return "\n".join(lines)
