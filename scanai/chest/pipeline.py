"""ChestQC end to end: a radiograph -> checks -> detection -> the patent's quality grade and findings.

:func:`analyse_file` / :func:`analyse_radiograph` are what the batch command (``scanai chest``) and the Slicer
module call. The steps:

1. **Check the image** (:func:`~scanai.chest.detection.check_radiograph_array`): one 2-D grey image of at least
   64 x 64 pixels, finite, not blank; a 3-D volume or a colour picture is refused with :class:`InputError`
   (colour pictures are refused while reading, see :func:`scanai.chest.io.to_grey`).
2. **View position** from the header (DICOM ViewPosition, :func:`view_check`): the patent's tests are defined on a
   frontal film, so a lateral, oblique or decubitus view gives a "not assessable" result without detection. PA,
   AP and an absent view position proceed (an unrecognised value proceeds with a warning).
3. **Intensity warnings** (:func:`intensity_warnings`). An image that looks inverted (the lungs brighter than the
   mediastinum) after the reader applied a MONOCHROME1 inversion has a wrong label (the file stores MONOCHROME2
   pixels, like ``Fake_MONOHR1.dcm``): the inversion is undone (:func:`undo_inversion`) and the image graded, with a
   warning; two independent clues agree there. Any other image that looks inverted is not assessable by default,
   since the anatomy would be found in the wrong places. A saturated image or one with very few grey levels is
   graded with a warning.
4. **Thresholds**: those given, else the profile for the view, the patient's age and sex
   (:func:`scanai.chest.metrics.thresholds_for`, ¶0108-0109), with optional overrides.
5. **Detection** by the chosen backend (:func:`detector_by_name`: ``network`` or ``classical``; any object with a
   ``name`` and ``detect(image, progress)`` plugs in).
6. **Validated or withheld**: unless ``Thresholds.experimental`` is on, the objects not validated on real
   radiographs (:data:`~scanai.chest.detection.EXPERIMENTAL`) are dropped from the detections, so no output,
   overlay, segment or finding shows them.
7. **Assessment** (:func:`scanai.chest.metrics.assess`) with the pixel spacing when the file gives it (widths in
   mm); when the lungs are not found the metric engine returns "not assessable", never a grade.

Geometry: images and masks are (rows, cols), row 0 at the head, column 0 on the image left (patient's right).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from scanai.chest.abnormal import counted_only
from scanai.chest.assessment import NOT_ASSESSABLE, Assessment, not_assessable
from scanai.chest.detection import ABNORMAL, EXPERIMENTAL, Box, Detections, Detector, check_radiograph_array
from scanai.chest.io import Radiograph, read_radiograph
from scanai.chest.measurements import spine_centreline
from scanai.chest.metrics import assess
from scanai.chest.thresholds import Thresholds, age_in_years, thresholds_for
from scanai.core.errors import InputError, ModelError
from scanai.core.image import Geometry, Volume
from scanai.core.progress import Progress

#: Detection backends by name (``network``: the shipped U-Net; ``classical``: thresholds and morphology).
BACKENDS = ("network", "classical")

#: DICOM ViewPosition values (and common spellings) that are not a frontal film, with what they are.
NON_FRONTAL_VIEWS = {
    "LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral", "LLAT": "lateral", "RLAT": "lateral",
    "LEFT LATERAL": "lateral", "RIGHT LATERAL": "lateral",
    "RLO": "oblique", "LLO": "oblique", "RAO": "oblique", "LAO": "oblique", "RPO": "oblique", "LPO": "oblique",
    "OBL": "oblique", "OBLIQUE": "oblique",
    "RLD": "decubitus", "LLD": "decubitus", "DECUBITUS": "decubitus",
}
#: Frontal views, graded.
FRONTAL_VIEWS = ("PA", "AP")

#: The inversion score (:func:`inversion_score`) below which an image is taken as inverted. Measured: 0.046 to
#: 0.83 on 263 correctly displayed real radiographs (259 Wingspan, 2 NIH PNGs, the NIH CR DICOM), 0.53 on the
#: phantom, -0.43 on the NIH image read as its negative (Fake_MONOHR1.dcm).
INVERTED_BELOW = -0.10
#: More than this fraction of the pixels at the image's maximum value: saturated (real radiographs: < 0.1 %).
SATURATED_HIGH = 0.05
#: More than this fraction at the minimum: saturated (real radiographs: up to 14 %, from black borders).
SATURATED_LOW = 0.35
#: Fewer grey levels than this: very low dynamic range (real radiographs: 64 or more).
FEW_GREY_LEVELS = 32

#: Object name -> (Slicer segment name, (r, g, b) in 0..1): the standard names and colours of the outputs.
#: Foreign objects are ``ForeignObject_1``, ``ForeignObject_2``, ... in :data:`FOREIGN_COLOUR`.
SEGMENT_STYLE: dict[str, tuple[str, tuple[float, float, float]]] = {
    "lung_right": ("Lung_Right", (0.35, 0.65, 0.95)),
    "lung_left": ("Lung_Left", (0.20, 0.45, 0.85)),
    "heart": ("Heart", (0.90, 0.20, 0.20)),
    "spine": ("Spine", (0.95, 0.85, 0.30)),
    "scapula_right": ("Scapula_Right", (0.45, 0.85, 0.45)),
    "scapula_left": ("Scapula_Left", (0.25, 0.65, 0.30)),
    "clavicle_right": ("Clavicle_Right", (1.00, 0.60, 0.20)),
    "clavicle_left": ("Clavicle_Left", (0.85, 0.45, 0.10)),
    "pneumothorax": ("AbnormalPart_Pneumothorax", (0.00, 0.90, 0.90)),
    "effusion": ("AbnormalPart_Effusion", (0.60, 0.30, 0.90)),
}
FOREIGN_COLOUR = (1.0, 0.0, 1.0)


def foreign_segment_name(index: int) -> str:
    """Segment name of the ``index``-th (0-based) foreign object: ``ForeignObject_1`` ..."""
    return f"ForeignObject_{index + 1}"


# ---------------------------------------------------------------------------------------------- backends


def detector_by_name(name: str = "network", device: str = "auto") -> Detector:
    """The detection backend called ``name``: ``"network"`` (the shipped network, on ``device``: auto, cpu or
    cuda) or ``"classical"`` (no learned weights). InputError for another name; ModelError when the network
    cannot be loaded (PyTorch or its weights missing)."""
    key = str(name).strip().lower()
    if key == "network":
        try:
            from scanai.chest.network import load_chest_detector
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise ModelError(f"The chest detection network cannot be loaded ({error}).",
                             "Install PyTorch (Slicer: the PyTorch extension), or choose the classical backend."
                             ) from error
        return load_chest_detector(device)
    if key == "classical":
        from scanai.chest.classical import ClassicalDetector

        return ClassicalDetector()
    raise InputError(f"Unknown detection backend {name!r}.", f"Choose one of: {', '.join(BACKENDS)}.")


# ---------------------------------------------------------------------------------------------- header facts


def view_check(view_position: str) -> tuple[str | None, str | None, str | None]:
    """(view for the threshold profile, reason the image is not assessable, warning) from a DICOM ViewPosition.

    ``"PA"``/``"AP"`` -> (view, None, None); empty -> (None, None, None); lateral, oblique and decubitus views ->
    (None, reason, None); anything else -> (None, None, warning) (assessed as a frontal film).
    """
    text = re.sub(r"\s+", " ", str(view_position or "").strip().upper())
    if not text:
        return None, None, None
    if text in FRONTAL_VIEWS:
        return text, None, None
    kind = NON_FRONTAL_VIEWS.get(text)
    if kind is not None:
        return None, (f"{kind} view (ViewPosition {text}): the quality tests and findings are defined on a frontal "
                      "(PA or AP) chest radiograph only. Assess the frontal image of the study."), None
    return None, None, f"view position '{text}' is not recognised; the image was assessed as a frontal film"


def patient_age_years(text: str | float | None) -> float | None:
    """Age in years from a DICOM Age String (``"045Y"``, ``"006M"``, ``"010W"``, ``"003D"``) or a number of years;
    None when absent or not understood (an unreadable age must not stop the analysis: the default profile applies).
    """
    try:
        return age_in_years(text)
    except (InputError, TypeError, ValueError):
        return None


def patient_sex(text: str | None) -> str | None:
    """``"M"``, ``"F"`` or ``"O"`` from a DICOM PatientSex value; None when absent or unknown."""
    value = str(text or "").strip().upper()[:1]
    return value if value in ("M", "F", "O") else None


# ---------------------------------------------------------------------------------------------- intensity checks


def _band(image: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    height, width = image.shape
    return image[int(rows[0] * height):int(rows[1] * height), int(cols[0] * width):int(cols[1] * width)].ravel()


def inversion_score(image: np.ndarray) -> float:
    """How much brighter the mediastinum is than the lung fields, in units of the image's 1-99 % range.

    image: (rows, cols). Mediastinum = the central strip (columns 45-55 %, rows 25-75 %: spine, heart, great
    vessels, dense); lung fields = columns 20-35 % and 65-80 %, rows 25-60 % (air, dark). The score is
    (median(mediastinum) - median(lung fields)) / (p99 - p1): positive on a correctly displayed frontal film
    (bright = dense), negative when the grey scale is inverted. It is a fixed-region heuristic: it assumes a
    roughly centred frontal chest film.
    """
    array = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(array, [1.0, 99.0])
    if not high > low:
        return 0.0
    mediastinum = _band(array, (0.25, 0.75), (0.45, 0.55))
    lungs = np.concatenate([_band(array, (0.25, 0.60), (0.20, 0.35)), _band(array, (0.25, 0.60), (0.65, 0.80))])
    return float((np.median(mediastinum) - np.median(lungs)) / (high - low))


def intensity_warnings(radiograph: Radiograph) -> list[str]:
    """Warnings when the radiograph's intensities look wrong; [] when they look like a usable film.

    - inverted: :func:`inversion_score` below :data:`INVERTED_BELOW` (lungs brighter than the mediastinum; e.g. a
      MONOCHROME1 image labelled MONOCHROME2, or a negative exported as a picture);
    - saturated: more than :data:`SATURATED_HIGH` of the pixels at the maximum value, or more than
      :data:`SATURATED_LOW` at the minimum (black borders of up to 14 % are normal);
    - very low dynamic range: fewer than :data:`FEW_GREY_LEVELS` grey levels, or the 1-99 % range covering less
      than 2 % of the value range (of the stored bit depth for DICOM).
    The first warning of an inverted image starts with "looks inverted".
    """
    image = check_radiograph_array(radiograph.image.array)
    warnings = []
    if inversion_score(image) < INVERTED_BELOW:
        warnings.append("looks inverted: the lung fields are brighter than the mediastinum (is the photometric "
                        "interpretation, MONOCHROME1 or MONOCHROME2, right?)")
    low_value, high_value = float(image.min()), float(image.max())
    at_high, at_low = float(np.mean(image == high_value)), float(np.mean(image == low_value))
    if at_high > SATURATED_HIGH:
        warnings.append(f"saturated: {100 * at_high:.0f} % of the pixels are at the maximum value (overexposed or "
                        "clipped)")
    if at_low > SATURATED_LOW:
        warnings.append(f"saturated: {100 * at_low:.0f} % of the pixels are at the minimum value (clipped, or a "
                        "large blank border)")
    levels = int(np.unique(image).size)
    p1, p99 = np.percentile(image, [1.0, 99.0])
    bits = radiograph.metadata.get("bits_stored")
    value_range = float(2 ** int(bits) - 1) if bits else high_value - low_value
    if levels < FEW_GREY_LEVELS:
        warnings.append(f"very low dynamic range: only {levels} grey levels")
    elif value_range > 0 and (p99 - p1) < 0.02 * value_range:
        warnings.append(f"very low dynamic range: 98 % of the pixels lie within {100 * (p99 - p1) / value_range:.1f} "
                        "% of the value range")
    return warnings


# ---------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ChestResult:
    """One analysed radiograph.

    radiograph: what was read (image (1, rows, cols), spacing, metadata).
    detections: what the detector found, or None when the image was not assessable before detection (lateral
                view, inverted grey scale).
    assessment: the quality level with its reasons, the tests, findings and width lines (or "not assessable").
    warnings:   notes about the input (intensities, unknown pixel size, unrecognised view).
    backend:    the detector's name ("" when none ran). seconds: wall time of detection + assessment.
    """

    radiograph: Radiograph
    detections: Detections | None
    assessment: Assessment
    warnings: tuple[str, ...] = ()
    backend: str = ""
    seconds: float = 0.0

    @property
    def assessable(self) -> bool:
        """False when the result is "not assessable"."""
        return self.assessment.level != NOT_ASSESSABLE

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the input, what was detected (boxes, confidences, pixel counts), the assessment."""
        radiograph = self.radiograph
        meta = radiograph.metadata
        rows, cols = radiograph.image.array.shape[1:]
        return {
            "source": str(meta.get("source", "")),
            "format": meta.get("format", ""),
            "shape": [int(rows), int(cols)],
            "spacing_mm": [float(v) for v in radiograph.spacing_mm] if radiograph.spacing_known else None,
            "spacing_source": meta.get("spacing_source", "unknown"),
            "view_position": meta.get("view_position", ""),
            "photometric_interpretation": meta.get("photometric_interpretation", ""),
            "backend": self.backend,
            "seconds": round(float(self.seconds), 4),
            "warnings": list(self.warnings),
            "detections": detections_summary(self.detections) if self.detections is not None else None,
            "assessment": self.assessment.as_dict(),
        }


def detections_summary(detections: Detections) -> dict[str, Any]:
    """Each found object's box (top, left, bottom, right; exclusive ends), confidence and pixel count."""

    def entry(found) -> dict[str, Any]:
        return {"box": [int(v) for v in found.box], "confidence": round(float(found.confidence), 4),
                "pixels": int(np.count_nonzero(found.mask))}

    return {"backend": detections.backend,
            "objects": {name: entry(found) for name, found in detections.objects.items()},
            "foreign_objects": [entry(found) for found in detections.foreign_objects]}


# ---------------------------------------------------------------------------------------------- analysis


def _thresholds(thresholds: Thresholds | None, view: str | None, metadata: Mapping[str, Any],
                overrides: Mapping[str, Any] | None) -> Thresholds:
    base = thresholds if thresholds is not None else thresholds_for(
        view, patient_age_years(metadata.get("patient_age")), patient_sex(metadata.get("patient_sex")))
    return apply_overrides(base, overrides) if overrides else base


def apply_overrides(thresholds: Thresholds, overrides: Mapping[str, Any]) -> Thresholds:
    """A copy of ``thresholds`` with the settings in ``overrides`` replaced (:meth:`Thresholds.from_dict`: keys
    starting with "_" are comments); InputError naming the valid settings when one is unknown or a value is bad."""
    return Thresholds.from_dict(dict(overrides), thresholds)


def analyse_radiograph(radiograph: Radiograph, detector: Detector | str, thresholds: Thresholds | None = None,
                       progress: Progress | None = None, overrides: Mapping[str, Any] | None = None,
                       refuse_inverted: bool = True, device: str = "auto") -> ChestResult:
    """Grade one radiograph (steps in the module docstring).

    detector: a :class:`Detector`, or a backend name for :func:`detector_by_name` (loaded on ``device``), which
    lets a worker process load the network itself.
    thresholds: used as given; None = :func:`thresholds_for` (view, age, sex from the header). overrides: fields of
    :class:`Thresholds` to replace (e.g. ``{"weighted": False}``), applied to either. refuse_inverted: an image
    that looks inverted (and is not a mislabelled MONOCHROME1 file, which is corrected) is "not assessable" (True,
    the default) or graded as it is with a warning (False). The result's ``radiograph`` is the image that was
    graded (the corrected one when an inversion was undone).
    Raises InputError for an image that is not one 2-D grey radiograph (3-D, too small, blank, NaN).
    """
    progress = Progress.ensure(progress)
    started = time.perf_counter()
    image = check_radiograph_array(radiograph.image.array)
    meta = radiograph.metadata
    view, not_frontal, view_warning = view_check(meta.get("view_position", ""))
    warnings = intensity_warnings(radiograph)
    if view_warning:
        warnings.append(view_warning)
    if not radiograph.spacing_known:
        warnings.append("pixel size not in the file: widths are given in pixels, not mm (ratios are unaffected)")
    if not_frontal is not None:
        return ChestResult(radiograph, None, not_assessable(not_frontal), tuple(warnings), "",
                           time.perf_counter() - started)
    if warnings and warnings[0].startswith("looks inverted") and meta.get("inverted"):
        radiograph = undo_inversion(radiograph)
        image = check_radiograph_array(radiograph.image.array)
        warnings[0] = ("mislabelled photometric interpretation: the file says MONOCHROME1, but read that way the lung "
                       "fields are brighter than the mediastinum; the image was assessed as MONOCHROME2 (inversion "
                       "undone). Check how this file was exported")
    elif refuse_inverted and warnings and warnings[0].startswith("looks inverted"):
        reason = ("the grey scale looks inverted (the lung fields are brighter than the mediastinum), so the anatomy "
                  "cannot be located reliably. Check the photometric interpretation (MONOCHROME1/2) or export the "
                  "original image.")
        return ChestResult(radiograph, None, not_assessable(reason), tuple(warnings), "",
                           time.perf_counter() - started)
    chosen = _thresholds(thresholds, view, meta, overrides)
    if isinstance(detector, str):
        progress(0.01, f"Loading the {detector} detector")
        detector = detector_by_name(detector, device)
    progress(0.02, f"Detecting anatomy ({detector.name})")
    detections = detector.detect(image, progress.sub(0.02, 0.9))
    if not chosen.experimental:
        detections = detections.without(EXPERIMENTAL)
    progress(0.9, "Assessing quality and findings")
    spacing = tuple(float(v) for v in radiograph.spacing_mm) if radiograph.spacing_known else None
    assessment = assess(detections, chosen, spacing)
    if chosen.experimental:  # show only the abnormal regions the findings rest on
        detections = counted_only(detections, chosen)
    progress(1.0, "Done")
    return ChestResult(radiograph, detections, assessment, (*warnings, *detections.notes), detector.name,
                       time.perf_counter() - started)


def undo_inversion(radiograph: Radiograph) -> Radiograph:
    """The radiograph with its grey scale flipped back: (min + max) - values, on the same grid; metadata records
    ``inversion_undone`` and ``photometric_interpretation`` "MONOCHROME2". For a MONOCHROME1 file this equals its
    stored pixels up to a constant offset, which the normalisation and the detectors ignore."""
    values = np.asarray(radiograph.image.array, dtype=np.float64)
    flipped = (float(values.min()) + float(values.max())) - values
    metadata = {**radiograph.metadata, "inversion_undone": True, "inverted": False,
                "photometric_interpretation": "MONOCHROME2",
                "photometric_interpretation_in_file": radiograph.metadata.get("photometric_interpretation", "")}
    return Radiograph(radiograph.image.with_array(flipped.astype(np.float32)), radiograph.spacing_known, metadata)


def analyse_file(path: str | Path, detector: Detector, thresholds: Thresholds | None = None,
                 progress: Progress | None = None, overrides: Mapping[str, Any] | None = None,
                 refuse_inverted: bool = True, pixel_size_mm: float | None = None) -> ChestResult:
    """Read ``path`` (:func:`scanai.chest.io.read_radiograph`) and :func:`analyse_radiograph` it; ``pixel_size_mm``
    is the pixel size of a picture whose file has none (:func:`with_pixel_size`).

    Raises FileFormatError (missing, empty, truncated, unsupported file) or InputError (colour picture, 3-D
    volume, multi-frame DICOM) before any detection.
    """
    progress = Progress.ensure(progress)
    progress(0.0, "Reading the radiograph")
    radiograph = with_pixel_size(read_radiograph(path), pixel_size_mm)
    return analyse_radiograph(radiograph, detector, thresholds, progress.sub(0.05, 1.0), overrides, refuse_inverted)


def with_pixel_size(radiograph: Radiograph, pixel_size_mm: float | None) -> Radiograph:
    """``radiograph`` with square pixels of ``pixel_size_mm`` when its file gave no pixel size (a PNG, JPEG or
    TIFF picture); unchanged when the file has its own (DICOM, NRRD), which wins, or when ``pixel_size_mm`` is None."""
    if pixel_size_mm is None or radiograph.spacing_known:
        return radiograph
    if not math.isfinite(pixel_size_mm) or not 0.01 <= pixel_size_mm <= 5.0:
        raise InputError(f"A pixel size of {pixel_size_mm} mm is not a radiograph's.",
                         "Give the detector pixel size in mm, e.g. 0.143 or 0.2 (typical 0.1-0.2 mm).")
    geometry = replace(radiograph.image.geometry, spacing_mm=(pixel_size_mm, pixel_size_mm,
                                                             radiograph.image.geometry.spacing_mm[2]))
    metadata = {**radiograph.metadata, "spacing_source": "given by the user"}
    return Radiograph(Volume(radiograph.image.array, geometry), True, metadata)


# ---------------------------------------------------------------------------------------------- geometry of the outputs


def spine_line(detections: Detections) -> tuple[float, float, float, float] | None:
    """(row_top, col_top, row_bottom, col_bottom) of the spine's centreline in pixel index units, or None.

    A straight line col = a * row + b fitted (least squares) to the spine centre of each row that has spine pixels
    (:func:`scanai.chest.metrics.spine_centreline`, the points C6 averages), drawn from the first to the last row.
    """
    rows, x_edge = spine_centreline(detections)
    if rows.size == 0:
        return None
    centres = np.asarray(x_edge, dtype=np.float64) - 0.5  # pixel-edge -> pixel-index units
    if rows.size >= 2 and rows[-1] > rows[0]:
        slope, intercept = np.polyfit(rows.astype(np.float64), centres, 1)
    else:
        slope, intercept = 0.0, float(centres.mean())
    top, bottom = float(rows[0]), float(rows[-1])
    return top, float(slope * top + intercept), bottom, float(slope * bottom + intercept)


def centre_line(shape: Sequence[int]) -> tuple[float, float, float, float]:
    """(row_top, col, row_bottom, col) of the image's vertical centreline (the patent's C6 reference line)."""
    rows, cols = int(shape[0]), int(shape[1])
    centre = (cols - 1) / 2.0
    return 0.0, centre, float(rows - 1), centre


def ras_of_pixel(geometry: Geometry, row: float, col: float) -> np.ndarray:
    """(3,) RAS mm of the pixel position (row, col) (pixel-index units, may be fractional) of a (1, rows, cols)
    radiograph volume: IJK = (col, row, 0) through the volume's IJK-to-RAS."""
    return geometry.ras_of_ijk(np.array([float(col), float(row), 0.0]))


def box_in_ras(geometry: Geometry, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """(centre RAS (3,), edge lengths (3,) in mm along the image's column, row and slice axes) of a pixel box
    (exclusive ends: it covers whole pixels, so its edges lie half a pixel outside the extreme pixel centres)."""
    top, left, bottom, right = box
    centre = ras_of_pixel(geometry, (top + bottom - 1) / 2.0, (left + right - 1) / 2.0)
    spacing = geometry.spacing_mm
    return centre, np.array([(right - left) * spacing[0], (bottom - top) * spacing[1], spacing[2]])


def width_line_indices(line) -> tuple[float, float, float]:
    """(row, col_start, col_end) of a :class:`~scanai.chest.metrics.WidthLine` in pixel-index units (pixel centres
    at integers): the line spans the outer edges of the mask's extreme columns, so its length is the width."""
    return line.row - 0.5, line.col_start - 0.5, line.col_end - 0.5


def finding(assessment: Assessment, name: str):
    """The :class:`~scanai.chest.metrics.Finding` called ``name`` of an assessment, or None."""
    return next((item for item in assessment.findings if item.name == name), None)


# ---------------------------------------------------------------------------------------------- reports


def _number(value: Any) -> float | str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return round(number, 6) if math.isfinite(number) else ""


def summary_row(result: ChestResult, file: str = "") -> dict[str, Any]:
    """One flat row (the batch report's CSV row): file, level, rule, reasons, findings, every test value
    (column = the test id, and ``<id>_pass``), backend and warnings; ``error`` is "" here."""
    assessment = result.assessment
    row: dict[str, Any] = {
        "file": file or str(result.radiograph.metadata.get("source", "")),
        "level": assessment.level,
        "rule": assessment.rule,
        "reasons": " | ".join(assessment.reasons),
        "disposition": assessment.disposition,
    }
    ctr = finding(assessment, "cardiothoracic_ratio")
    row["CTR"] = _number(ctr.value) if ctr is not None else ""
    row["cardiomegaly"] = ("yes" if ctr.present else "no") if ctr is not None else ""
    withheld = assessment.usable and not (assessment.thresholds and assessment.thresholds.experimental)
    for name in ABNORMAL:
        item = finding(assessment, name)
        row[f"{name}_ratio"] = _number(item.value) if item is not None else ""
        row[f"{name}_severity"] = item.severity if item is not None else ("not assessed (experimental)"
                                                                          if withheld else "")
    for test in assessment.tests:
        row[test.id] = _number(test.value)
        row[f"{test.id}_pass"] = "yes" if test.passed else "no"
    row.update({"backend": result.backend, "warnings": " | ".join(result.warnings), "error": ""})
    return row


def error_row(file: str, error: BaseException, backend: str = "") -> dict[str, Any]:
    """The batch report's row for a file that could not be analysed (level "ERROR", the message in ``error``)."""
    return {"file": file, "level": "ERROR", "rule": "", "reasons": "", "disposition": "", "backend": backend,
            "warnings": "", "error": str(error) or type(error).__name__}


def table_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Rows of dicts (e.g. :meth:`Assessment.table_rows`) as columns: numeric when every value is a number or
    missing (missing -> NaN), else text (booleans "true"/"false", numbers to 6 significant digits, missing "").
    Column order = first seen."""
    names: list[str] = []
    for row in rows:
        names += [key for key in row if key not in names]
    columns: dict[str, list] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        numeric = all(value is None or (isinstance(value, int | float) and not isinstance(value, bool))
                      for value in values)
        if numeric:
            columns[name] = [float("nan") if value is None else float(value) for value in values]
        else:
            columns[name] = [_text(value) for value in values]
    return columns


def _text(value: Any) -> str:
    """A table cell as text: booleans "true"/"false", numbers with 6 significant digits, NaN and None empty."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | float | np.number):
        return f"{float(value):.6g}" if math.isfinite(float(value)) else ""
    return str(value)
