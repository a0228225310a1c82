"""``scanai chest INPUT --out DIR``: read a chest radiograph, normalise it, write ``normalised.nrrd``.

Also the ChestQC part of ``scanai demo`` (:func:`demo`).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scanai.chest.io import Radiograph, read_radiograph
from scanai.chest.preprocess import normalise, percentile_window

REAL_DICOM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
FAKE_MONOCHROME1 = "Fake_MONOHR1.dcm"
WINGSPAN_DEMO_COUNT = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``scanai chest``: INPUT (DICOM/PNG/JPEG/TIFF radiograph) and ``--out DIR``."""
    parser.add_argument("input", type=Path, help="chest radiograph: DICOM (.dcm), PNG, JPEG or TIFF")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--low-percentile", type=float, default=5.0,
                        help="x1 of the patent's Eq. (1), in percent (default 5)")
    parser.add_argument("--high-percentile", type=float, default=95.0,
                        help="x2 of the patent's Eq. (1), in percent (default 95)")
    parser.add_argument("--clip", action="store_true",
                        help="clip Eq. (1) to [0, 1] before standardising (not in the patent)")


def _spacing_line(radiograph: Radiograph) -> str:
    rows_mm, cols_mm = radiograph.spacing_mm
    source = radiograph.metadata.get("spacing_source", "unknown")
    if radiograph.spacing_known:
        return f"Pixel spacing: {rows_mm:g} mm (rows) x {cols_mm:g} mm (columns), from {source}."
    return ("WARNING: the file does not give the pixel size; 1 mm was assumed. Lengths in mm will be wrong; "
            "ratios (e.g. cardiothoracic ratio) are unaffected.")


def run(args: Any) -> int:
    """Read ``args.input``, normalise it (Eq. 1 + Eq. 2), write ``args.out/normalised.nrrd``; returns 0.

    Errors are raised as :class:`scanai.core.errors.ScanAIError` for the dispatcher to print.
    """
    from scanai.io.sitk_image import write_image

    radiograph = read_radiograph(args.input)
    normalised = normalise(radiograph.image, getattr(args, "low_percentile", 5.0),
                           getattr(args, "high_percentile", 95.0), clip=getattr(args, "clip", False))
    out_dir = Path(args.out)
    path = write_image(normalised, out_dir / "normalised.nrrd")
    rows, cols = radiograph.image.array.shape[1:]
    meta = radiograph.metadata
    print(f"Read {args.input} ({meta.get('format')}, {rows} x {cols} pixels, "
          f"{meta.get('photometric_interpretation', '')}{', inverted' if meta.get('inverted') else ''}).")
    print(_spacing_line(radiograph))
    print(f"Wrote {path}")
    return 0


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


def demo(out_dir: Path, data_dir: Path | None) -> str:
    """Run the ChestQC reading + normalisation demo; write NRRD and PNG figures into ``out_dir``.

    Returns a Markdown section whose image links are ``chest/<file>.png`` (``out_dir`` is ``report/chest``).
    """
    from scanai.chest.figures import save_normalisation_figure
    from scanai.core.progress import tqdm_progress
    from scanai.io.sitk_image import write_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    normalised: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="scanai-chest-") as tmp:
        cases, facts = _demo_cases(Path(tmp), data_dir)
        with tqdm_progress("ChestQC demo") as progress:
            for _, case in progress.iterate(cases, "Normalising radiograph"):
                radiograph = read_radiograph(case.path)
                result = normalise(radiograph.image)
                p5, p95 = percentile_window(radiograph.image)
                save_normalisation_figure(radiograph.image, result, out_dir / f"{case.key}.png", case.label)
                if case.write_nrrd:
                    write_image(result, out_dir / f"{case.key}_normalised.nrrd")
                raw[case.key], normalised[case.key] = radiograph.image.array, result.array
                rows.append({"case": case, "radiograph": radiograph, "p5": p5, "p95": p95,
                             "mean": float(result.array.mean()), "std": float(result.array.std())})
    return _markdown(rows, raw, normalised, facts)


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
