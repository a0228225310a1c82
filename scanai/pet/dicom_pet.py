"""DICOM PET series (one file per slice, static or dynamic) -> :class:`~scanai.pet.dynamic.DynamicPet`.

**Frames.** Slices (Modality PT) are grouped into frames by, in this order: ImageIndex (0054,1330) with
NumberOfSlices (0054,0081) (frame = (ImageIndex - 1) // NumberOfSlices, as DICOM defines for DYNAMIC series);
else FrameReferenceTime (0054,1300) with ActualFrameDuration (0018,1242); else the acquisition date/time; else
one frame. Slices of a frame are sorted along the slice normal (ImagePositionPatient · normal); every frame must
have the same slice positions and grid (:class:`GeometryError` otherwise). RescaleSlope/Intercept are applied per
slice (they differ from slice to slice in PET).

**Time zero = injection**, from the first RadiopharmaceuticalInformationSequence (0054,0016) item:
RadiopharmaceuticalStartDateTime (0018,1078); else RadiopharmaceuticalStartTime (0018,1072) on the SeriesDate
(then StudyDate, AcquisitionDate), moved back one day when it would fall after the series start (midnight);
the same tags at the top level of the file are accepted (non-conformant writers). Without any, time zero is the
series start (warning). Both tags present but different by more than 1 s -> warning (1078 is used).

**Frame start**, s after injection: (a) the earliest AcquisitionDateTime (0008,002A), else AcquisitionDate
(or SeriesDate) + AcquisitionTime (0008,0032), of the frame's slices, when available for every frame and
increasing; else (b) SeriesDate/SeriesTime + FrameReferenceTime − the decay-weighted offset of the reference time
within the frame (Δt/2 when the half-life is unknown). **Duration**: ActualFrameDuration; when missing, the gap
to the next frame's start (not possible for the last frame: error). When both (a) and (b) exist they are compared
and a difference over ``tolerance_s`` (dcm2niix #521 style errors) is reported in ``warnings``.

**Decay and units.** DecayCorrection (0054,1102): ADMIN = corrected to injection; START = corrected to the series
start, re-referenced here to the injection (× e^{λ t_series}; recorded); NONE = not corrected. Units (0054,1001),
RadionuclideTotalDose (0018,1074, Bq at injection), RadionuclideHalfLife (0018,1075), PatientWeight (0010,1030).

**Several series** in the folder are merged by time only when they share the FrameOfReferenceUID and the grid
(parts of one dynamic acquisition); otherwise :class:`FileFormatError` lists them. Files that are not DICOM (no
``.dcm`` / ``.ima`` name, no DICM marker) and DICOM objects that are not PET images (a report, a DICOMDIR) are
skipped and listed in ``warnings``.

**Nothing lost.** A DICOM file that cannot be read, or whose header or pixel data stop early (a file cut off while
copying), is refused naming the file, never skipped: it would leave a hole in the series. Each series is checked
against its own counts: NumberOfTimeSlices (0054,0101) frames of NumberOfSlices (0054,0081) slices; a missing image
is refused naming its frame and slice (and ImageIndex where the series has it), as is a frame that lacks a slice
the other frames have or a gap inside the slice stack.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings as python_warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, GeometryError, InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.core.progress import Progress
from scanai.io.cine import _geometry_of, _normal_of, _pixels_of
from scanai.io.dicom import GEOMETRY_NUMBERS, HEADER_ERRORS, header_numbers_problem, is_dicom_file
from scanai.pet.dynamic import DynamicPet, settle_decay_reference
from scanai.pet.timing import FrameTiming
from scanai.pet.units import HALF_LIVES_S, decay_weighted_offset_s, normalise_unit, radionuclide_key

#: Acquisition-time starts and FrameReferenceTime-derived starts may differ this much (s) before a warning.
TIMING_TOLERANCE_S = 3.0
_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
_CHOOSE = "Choose a folder that holds a single PET series (or pass series_uid=...), e.g. with the DICOM browser."


# ----------------------------------------------------------------------------------------- DICOM times
def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def parse_dicom_date(text: Any) -> dt.date | None:
    """DA "YYYYMMDD" (or "YYYY.MM.DD") -> date, None when absent/unreadable."""
    value = _text(text).replace(".", "").replace("-", "")
    if len(value) < 8:
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None


def parse_dicom_time(text: Any) -> dt.timedelta | None:
    """TM "HHMMSS.ffffff" (parts may be missing; old "HH:MM:SS" accepted) -> time since midnight."""
    value = _text(text).replace(":", "")
    if not value:
        return None
    whole, _, fraction = value.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        return None
    hours, minutes, seconds = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = float("0." + fraction) if fraction.isdigit() else 0.0
    if hours > 23 or minutes > 59 or seconds > 60:
        return None
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds + micro)


def parse_dicom_datetime(text: Any) -> dt.datetime | None:
    """DT "YYYYMMDDHHMMSS.ffffff&ZZXX" -> naive datetime (the UTC offset is dropped: all times of one study are
    taken in the same zone)."""
    value = _text(text)
    for sign in ("+", "-"):
        if sign in value[8:]:
            value = value[: 8 + value[8:].index(sign)]
    date = parse_dicom_date(value[:8])
    if date is None:
        return None
    time = parse_dicom_time(value[8:]) if len(value) > 8 else dt.timedelta(0)
    if time is None:
        return None
    return dt.datetime.combine(date, dt.time()) + time


def _combine(date: dt.date | None, time: dt.timedelta | None) -> dt.datetime | None:
    if date is None or time is None:
        return None
    return dt.datetime.combine(date, dt.time()) + time


def _series_date(header: Any) -> dt.date | None:
    for keyword in ("SeriesDate", "AcquisitionDate", "StudyDate", "ContentDate"):
        date = parse_dicom_date(header.get(keyword))
        if date is not None:
            return date
    return None


def _series_reference(header: Any) -> dt.datetime | None:
    """SeriesDate/SeriesTime (the PET series reference time)."""
    return _combine(_series_date(header), parse_dicom_time(header.get("SeriesTime")))


def _acquisition_datetime(header: Any) -> dt.datetime | None:
    moment = parse_dicom_datetime(header.get("AcquisitionDateTime"))
    if moment is not None:
        return moment
    date = parse_dicom_date(header.get("AcquisitionDate")) or _series_date(header)
    return _combine(date, parse_dicom_time(header.get("AcquisitionTime")))


def _radiopharmaceutical(header: Any) -> Any:
    sequence = header.get("RadiopharmaceuticalInformationSequence")
    return sequence[0] if sequence else None


def injection_datetime(header: Any, notes: list[str]) -> dt.datetime | None:
    """The injection date/time of a PET header (see the module docstring for the rule order); appends notes."""
    item = _radiopharmaceutical(header)
    sources = ([(item, False)] if item is not None else []) + [(header, True)]
    for source, outside in sources:
        full = parse_dicom_datetime(source.get("RadiopharmaceuticalStartDateTime"))
        time_only = parse_dicom_time(source.get("RadiopharmaceuticalStartTime"))
        if full is None and time_only is None:
            continue
        if outside:
            notes.append("The injection time was found outside the RadiopharmaceuticalInformationSequence "
                         "(non-conformant file).")
        if full is not None:
            if time_only is not None:
                clock = full - dt.datetime.combine(full.date(), dt.time())
                if abs((clock - time_only).total_seconds()) > 1.0:
                    notes.append("RadiopharmaceuticalStartDateTime (0018,1078) and RadiopharmaceuticalStartTime "
                                 "(0018,1072) disagree; the date-time (0018,1078) was used.")
            return full
        date = _series_date(header)
        if date is None:
            notes.append("The injection time (0018,1072) has no date and the series has none either: the "
                         "injection time could not be used.")
            return None
        moment = _combine(date, time_only)
        series = _series_reference(header)
        note = ("RadiopharmaceuticalStartDateTime (0018,1078) is absent: the injection time was taken from "
                "RadiopharmaceuticalStartTime (0018,1072) on the series date.")
        if series is not None and moment > series:
            moment -= dt.timedelta(days=1)
            note += " The injection clock time is after the series start, so the day before was assumed."
        notes.append(note)
        return moment
    return None


def series_uid_of(path: str | Path) -> str:
    """SeriesInstanceUID of one DICOM file (FileFormatError when it is not readable DICOM)."""
    path = Path(path)
    header = _read_header(path)
    if header is None or isinstance(header, _Damaged):
        reason = header.reason if isinstance(header, _Damaged) else "is not a readable DICOM file"
        raise FileFormatError(f"{path.name} {reason}.", "Choose a DICOM PET file or folder.")
    return _text(header.get("SeriesInstanceUID"))


# ---------------------------------------------------------------------------------------------- scan
#: SOP classes of PET images (PET, enhanced PET, legacy converted enhanced PET) and of a DICOMDIR.
_PET_IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130",
                          "1.2.840.10008.5.1.4.1.1.128.1")
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Header numbers of a PET image: keyword -> how many values (None: optional, any count).
_OPTIONAL_NUMBERS = ("ImageIndex", "NumberOfSlices", "NumberOfTimeSlices", "FrameReferenceTime",
                     "ActualFrameDuration", "RescaleSlope", "RescaleIntercept", "NumberOfFrames")
_CUT = "so the file was probably cut off or damaged while copying"


@dataclass(frozen=True)
class _Damaged:
    """A DICOM file that cannot be used: ``reason`` continues its name ("is incomplete: ..."); ``series_uid`` is
    its SeriesInstanceUID when that could still be read ("" otherwise)."""

    reason: str
    series_uid: str = ""


def _sop_class(header: Any) -> str:
    meta = getattr(header, "file_meta", None)
    uid = (meta.get("MediaStorageSOPClassUID") if meta is not None else None) or header.get("SOPClassUID")
    return _text(uid)


def _numbers_problem(header: Any) -> str | None:
    """Words for the first header number of a PET image that is missing, cannot be read or is not finite."""
    for keyword in GEOMETRY_NUMBERS:
        if header.get(keyword) in (None, ""):
            return f"has no {keyword}: its header stops early, {_CUT}"
    return header_numbers_problem(header, _OPTIONAL_NUMBERS)


def _header_problem(header: Any) -> str | None:
    """Why a DICOM header read without error still shows a cut or damaged file, or None. A PET image (Modality PT
    with the PET image SOP class) must hold its geometry and readable numbers; any object must name its Modality
    (a DICOMDIR excepted)."""
    if len(header) == 0:
        return f"is incomplete: it ends right after its file meta information, {_CUT}"
    sop = _sop_class(header)
    if not _text(header.get("Modality")):
        return None if sop == _DICOMDIR_SOP_CLASS else f"has no Modality: its header stops early, {_CUT}"
    if _text(header.get("Modality")).upper() != "PT" or (sop and sop not in _PET_IMAGE_SOP_CLASSES):
        return None
    return _numbers_problem(header)


def _reason(error: Exception) -> str:
    """An exception as short words for a message: its type and the start of its text."""
    text = " ".join(str(error).split())
    return type(error).__name__ + (f": {text[:80]}" if text else "")


def _read_header(path: Path) -> Any | _Damaged | None:
    """The header (no pixels) of ``path``; None when it is no DICOM file at all (no ``.dcm`` / ``.ima`` name and no
    DICM marker: skipped); :class:`_Damaged` for a DICOM file that cannot be read or whose header is cut short."""
    import pydicom

    named_dicom = path.suffix.lower() in (".dcm", ".ima") or is_dicom_file(path)
    try:
        with python_warnings.catch_warnings():
            python_warnings.simplefilter("ignore")
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as error:  # noqa: BLE001 - pydicom raises many kinds on damaged files
        if not named_dicom:
            return None
        return _Damaged(f"could not be read as DICOM ({_reason(error)}): it was probably cut off or damaged while "
                        "copying, or it is no DICOM file")
    try:
        problem = _header_problem(header)
        uid = _text(header.get("SeriesInstanceUID"))
    except HEADER_ERRORS as error:
        return _Damaged(f"is damaged: its header cannot be read ({_reason(error)})")
    return _Damaged(problem, uid) if problem else header


@dataclass
class _Slice:
    path: Path
    header: Any
    series_uid: str
    position_mm: float
    frame_key: tuple


def _float(header: Any, keyword: str) -> float | None:
    value = header.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _frame_key(header: Any, method: str) -> tuple:
    if method == "ImageIndex":
        return (int(header.ImageIndex) - 1) // int(header.NumberOfSlices),
    if method == "FrameReferenceTime":
        return round(_float(header, "FrameReferenceTime") or 0.0, 1), round(_float(header, "ActualFrameDuration")
                                                                            or 0.0, 1)
    if method == "AcquisitionTime":
        return (_acquisition_datetime(header),)
    return (0,)


def _grouping_method(headers: list[Any]) -> str:
    def have(*keywords: str) -> bool:
        return all(all(header.get(k) not in (None, "") for k in keywords) for header in headers)

    if have("ImageIndex", "NumberOfSlices"):
        return "ImageIndex"
    if have("FrameReferenceTime"):
        return "FrameReferenceTime"
    if all(_acquisition_datetime(header) is not None for header in headers):
        return "AcquisitionTime"
    return "single"


def _list_files(paths_or_folder: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(paths_or_folder, (str, Path)):
        folder = Path(paths_or_folder)
        if folder.is_dir():
            return sorted(path for path in folder.rglob("*") if path.is_file())
        if folder.is_file():
            return [folder]
        raise FileFormatError(f"The DICOM folder {folder} does not exist.", "Check the path.")
    files = []
    for item in paths_or_folder:
        item = Path(item)
        if item.is_dir():
            files.extend(sorted(path for path in item.rglob("*") if path.is_file()))
        elif item.is_file():
            files.append(item)
        else:
            raise FileFormatError(f"The file {item} does not exist.", "Check the path.")
    return files


def _summary(names: list[str], limit: int = 5) -> str:
    text = ", ".join(names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _refuse_damaged(damaged: list[tuple[Path, _Damaged]]) -> None:
    """FileFormatError naming the damaged DICOM files (a damaged image would silently leave a hole in the series)."""
    if damaged:
        first, why = damaged[0]
        names = _summary([path.name for path, _ in damaged])
        raise FileFormatError(f"{len(damaged)} DICOM file(s) could not be read: {names}. {first.name} {why.reason}.",
                              "Copy the series again from the scanner or PACS, or remove the damaged files if they do "
                              "not belong to it.")


def _scan(files: list[Path], progress: Progress, notes: list[str], series_uid: str | None) -> list[tuple[Path, Any]]:
    """Headers of the PET image files. Non-DICOM files, DICOM objects that are not PET images and other series are
    skipped with a note; a damaged or cut DICOM file is refused (FileFormatError naming it)."""
    not_dicom, not_pet, no_geometry, damaged, kept = [], [], [], [], []
    for index, path in enumerate(files):
        if index % 16 == 0:
            progress(index / max(len(files), 1), f"Reading DICOM headers {index + 1}/{len(files)}")
        header = _read_header(path)
        if header is None:
            not_dicom.append(path.name)
            continue
        if isinstance(header, _Damaged):
            if series_uid is None or header.series_uid in ("", series_uid):
                damaged.append((path, header))
            continue
        if _text(header.get("Modality")).upper() != "PT":
            not_pet.append(f"{path.name} ({_text(header.get('Modality')) or 'DICOMDIR'})")
            continue
        if series_uid is not None and _text(header.get("SeriesInstanceUID")) != series_uid:
            continue
        if not all(header.get(k) not in (None, "") for k in _GEOMETRY_TAGS):
            no_geometry.append(path.name)
            continue
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise FileFormatError(f"{path.name} is an enhanced (multi-frame) PET object, which this reader does not "
                                  "support.", "Export the series as one file per slice (classic PET image storage).")
        kept.append((path, header))
    progress(1.0, "DICOM headers read")
    _refuse_damaged(damaged)
    if not_dicom:
        notes.append(f"Skipped {len(not_dicom)} file(s) that are not DICOM: {_summary(not_dicom)}.")
    if not_pet:
        notes.append(f"Skipped {len(not_pet)} DICOM file(s) that are not PET images: {_summary(not_pet)}.")
    if no_geometry:
        notes.append(f"Skipped {len(no_geometry)} PET file(s) without image geometry: {_summary(no_geometry)}.")
    if not kept:
        found = f" ({notes[-1]})" if notes else ""
        raise FileFormatError(f"No usable PET DICOM images were found among {len(files)} file(s){found}.",
                              "Choose the folder that holds the PET series (Modality PT).")
    return kept


# ------------------------------------------------------------------------------------------ grouping
def _grid_signature(header: Any) -> tuple:
    orientation = tuple(round(float(v), 3) for v in header.ImageOrientationPatient)
    spacing = tuple(round(float(v), 3) for v in header.PixelSpacing)
    return int(header.Rows), int(header.Columns), spacing, orientation


def _series_label(header: Any, count: int) -> str:
    number = _text(header.get("SeriesNumber")) or "?"
    description = _text(header.get("SeriesDescription")) or "no description"
    return f"series {number} '{description}' ({count} images, {_text(header.get('SeriesInstanceUID'))})"


def _group_series(kept: list[tuple[Path, Any]]) -> dict[str, list[tuple[Path, Any]]]:
    series: dict[str, list[tuple[Path, Any]]] = {}
    for path, header in kept:
        series.setdefault(_text(header.get("SeriesInstanceUID")), []).append((path, header))
    if len(series) > 1:
        firsts = [members[0][1] for members in series.values()]
        same_frame = len({_text(h.get("FrameOfReferenceUID")) for h in firsts}) == 1 and _text(
            firsts[0].get("FrameOfReferenceUID"))
        same_grid = len({_grid_signature(h) for members in series.values() for _, h in members}) == 1
        if not (same_frame and same_grid):
            labels = "; ".join(_series_label(members[0][1], len(members)) for members in series.values())
            raise FileFormatError(f"The folder holds {len(series)} PET series that are not parts of one dynamic "
                                  f"acquisition (different frame of reference or grid): {labels}.", _CHOOSE)
    return series


def _frames_of_series(members: list[tuple[Path, Any]], series_uid: str, notes: list[str]) -> list[list[_Slice]]:
    headers = [header for _, header in members]
    method = _grouping_method(headers)
    normal = _normal_of([float(v) for v in headers[0].ImageOrientationPatient])
    groups: dict[tuple, list[_Slice]] = {}
    for path, header in members:
        position = float(np.dot(np.asarray(header.ImagePositionPatient, dtype=float), normal))
        key = _frame_key(header, method)
        groups.setdefault(key, []).append(_Slice(path, header, series_uid, position, key))
    frames = []
    for key in sorted(groups, key=lambda k: tuple(v if v is not None else dt.datetime.min for v in k)):
        slices = sorted(groups[key], key=lambda s: s.position_mm)
        positions = np.array([s.position_mm for s in slices])
        if np.any(np.diff(positions) < 1e-3):
            first = int(np.flatnonzero(np.diff(positions) < 1e-3)[0])
            raise GeometryError(f"Two images of one frame lie at the same slice position ({slices[first].path.name} "
                                f"and {slices[first + 1].path.name}); the frames cannot be separated.",
                                "Check that the folder holds one PET series, without duplicated files.")
        frames.append(slices)
    _check_counts(frames, method, headers[0], _series_label(headers[0], len(members)), notes)
    return frames


# ------------------------------------------------------------------------------------------ counts
#: Slice positions closer than this (mm) are the same slice.
_SAME_POSITION_MM = 0.01
#: At most this many incomplete frames are listed in a message.
_LISTED = 6


def _ranges(numbers: Sequence[int]) -> str:
    """Sorted integers as compact ranges: [1, 2, 3, 7] -> "1-3, 7"."""
    parts: list[str] = []
    for number in sorted(numbers):
        if parts and number == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{number}"
        else:
            parts.append(str(number))
    return ", ".join(parts)


def _gap(frame: int, slices: Sequence[int], per_frame: int | None, image_indices: Sequence[int] = ()) -> str:
    """One missing-images item: "frame 2 slice(s) 3 (ImageIndex 7)" or "frame 3 (all 4 slices, ImageIndex 9-12)"."""
    index = f"ImageIndex {_ranges(image_indices)}" if image_indices else ""
    if per_frame is not None and len(slices) == per_frame:
        return f"frame {frame} (all {per_frame} slices{', ' + index if index else ''})"
    return f"frame {frame} slice(s) {_ranges(slices)}" + (f" ({index})" if index else "")


def _missing_by_image_index(frames: list[list[_Slice]], per_frame: int, announced: int | None) -> list[str]:
    """Missing images of an ImageIndex-numbered series: frame = (ImageIndex - 1) // NumberOfSlices + 1, slice =
    (ImageIndex - 1) % NumberOfSlices + 1 (1-based), up to the announced frame count (else the last frame found)."""
    present = {int(item.header.ImageIndex) for slices in frames for item in slices}
    count = max(announced or 0, max((index - 1) // per_frame for index in present) + 1)
    gaps = []
    for frame in range(count):
        missing = [i for i in range(frame * per_frame + 1, (frame + 1) * per_frame + 1) if i not in present]
        if missing:
            gaps.append(_gap(frame + 1, [(i - 1) % per_frame + 1 for i in missing], per_frame, missing))
    return gaps


def _distinct_positions(frames: list[list[_Slice]]) -> np.ndarray:
    """The distinct slice positions (mm along the normal, increasing) found in any frame of the series."""
    found = np.sort(np.array([item.position_mm for slices in frames for item in slices]))
    return found[np.concatenate([[True], np.diff(found) > _SAME_POSITION_MM])]


def _slice_grid(distinct: np.ndarray) -> np.ndarray:
    """Every slice position of the series: the ``distinct`` ones found, plus the interior gaps of an evenly stepped
    stack (a slice missing from every frame)."""
    if distinct.size < 2:
        return distinct
    step = float(np.min(np.diff(distinct)))
    count = int(round((distinct[-1] - distinct[0]) / step)) + 1
    grid = distinct[0] + step * np.arange(count)
    on_grid = all(np.min(np.abs(grid - value)) <= max(_SAME_POSITION_MM, 0.01 * step) for value in distinct)
    return grid if on_grid and count <= 4 * distinct.size else distinct


def _missing_by_position(frames: list[list[_Slice]], per_frame: int | None) -> list[str]:
    """Missing images of a series without ImageIndex: slice positions of the series (:func:`_slice_grid`) a frame
    lacks, numbered 1.. along the slice normal, for a frame with fewer slices than another frame or than
    ``per_frame``, or for a gap inside the stack (frames of equal size on other positions are left to
    :func:`_check_grids`); a frame short of ``per_frame`` with no position to name is counted."""
    distinct = _distinct_positions(frames)
    grid = _slice_grid(distinct)
    tolerance = max(_SAME_POSITION_MM, 0.01 * float(np.min(np.diff(grid)))) if grid.size > 1 else _SAME_POSITION_MM
    most = max(len(slices) for slices in frames)
    gaps = []
    for number, slices in enumerate(frames, start=1):
        positions = np.array([item.position_mm for item in slices])
        missing = [k + 1 for k, value in enumerate(grid) if np.min(np.abs(positions - value)) > tolerance]
        short = len(slices) < most or (per_frame is not None and len(slices) < per_frame) or grid.size > distinct.size
        if missing and short:
            gaps.append(_gap(number, missing, per_frame))
        elif per_frame is not None and len(slices) < per_frame:
            gaps.append(f"frame {number} ({per_frame - len(slices)} of its {per_frame} slices, at the ends of the "
                        "stack)")
    return gaps


def _check_counts(frames: list[list[_Slice]], method: str, header: Any, label: str, notes: list[str]) -> None:
    """FileFormatError when images of the series are missing: fewer frames than NumberOfTimeSlices (0054,0101),
    fewer slices in a frame than NumberOfSlices (0054,0081) or than the other frames have, or a gap in the slice
    stack; the message names the frames and slices (and ImageIndex values) that are missing. More frames than
    announced is only noted."""
    announced = _float(header, "NumberOfTimeSlices")
    announced = int(announced) if announced is not None and announced >= 1 else None
    per_frame = _float(header, "NumberOfSlices")
    per_frame = int(per_frame) if per_frame is not None and per_frame >= 1 else None
    if method == "ImageIndex" and per_frame is not None:
        gaps = _missing_by_image_index(frames, per_frame, announced)
    else:
        gaps = _missing_by_position(frames, per_frame)
        if announced is not None and len(frames) < announced:
            gaps.insert(0, f"{announced - len(frames)} whole frame(s) (only {len(frames)} of {announced} were found; "
                           "which ones cannot be told without ImageIndex)")
    found = sum(len(slices) for slices in frames)
    if gaps:
        if announced is not None and per_frame is not None:
            expected = (f"its headers announce {announced} frames x {per_frame} slices = {announced * per_frame} "
                        f"images (NumberOfTimeSlices, NumberOfSlices) but {found} were found")
        elif per_frame is not None:
            expected = (f"its headers announce {per_frame} slices per frame (NumberOfSlices); {found} images in "
                        f"{len(frames)} frame(s) were found")
        else:
            expected = f"its {len(frames)} frame(s) ({found} images) do not all have the same slices"
        more = f" and {len(gaps) - _LISTED} more frame(s)" if len(gaps) > _LISTED else ""
        raise FileFormatError(f"The PET {label} is incomplete: {expected}; missing: {'; '.join(gaps[:_LISTED])}"
                              f"{more}.",
                              "Copy the whole series again from the scanner or PACS; a dynamic PET with missing "
                              "images cannot be analysed.")
    if announced is not None and len(frames) > announced:
        notes.append(f"The PET {label} holds {len(frames)} frames but its headers announce {announced} "
                     "(NumberOfTimeSlices); all frames found were used.")


def _check_grids(frames: list[list[_Slice]]) -> np.ndarray:
    """Slice positions (K,) shared by every frame; GeometryError naming the first frame that differs."""
    reference = np.array([s.position_mm for s in frames[0]])
    signature = _grid_signature(frames[0][0].header)
    for number, slices in enumerate(frames, start=1):
        positions = np.array([s.position_mm for s in slices])
        if positions.size != reference.size:
            raise GeometryError(f"Frame {number} has {positions.size} slices but frame 1 has {reference.size}.",
                                "Check that no files are missing and that the folder holds one PET series.")
        if not np.allclose(positions, reference, atol=0.01):
            raise GeometryError(f"Frame {number} covers other slice positions than frame 1.",
                                "Check that the folder holds one PET series (one bed position).")
        if any(_grid_signature(s.header) != signature for s in slices):
            raise GeometryError(f"Frame {number} has images of another size, pixel spacing or orientation than "
                                "frame 1 (mixed grids).", "Keep one PET series per folder.")
    if reference.size > 1:
        steps = np.diff(reference)
        if np.ptp(steps) > 0.01 * max(float(np.mean(steps)), 1e-6) + 1e-3:
            raise GeometryError("The PET slices are not evenly spaced (missing slices?).",
                                "Check that no files of the series are missing.")
    return reference


def _geometry(frames: list[list[_Slice]], positions: np.ndarray) -> Geometry:
    """RAS geometry: in-plane from the first slice (scanai.io.cine), slice spacing from the positions."""
    base = _geometry_of(frames[0][0].header)
    spacing_k = float(np.mean(np.diff(positions))) if positions.size > 1 else base.spacing_mm[2]
    return Geometry((base.spacing_mm[0], base.spacing_mm[1], spacing_k), base.origin_mm, base.directions)


# -------------------------------------------------------------------------------------------- timing
@dataclass
class _FrameTimes:
    acquisition_s: float | None
    reference_s: float | None  # FrameReferenceTime on the injection clock
    duration_s: float | None
    series_start_s: float | None


def _frame_times(slices: list[_Slice], injection: dt.datetime) -> _FrameTimes:
    header = slices[0].header
    moments = [_acquisition_datetime(s.header) for s in slices]
    acquisition = None if any(m is None for m in moments) else (min(moments) - injection).total_seconds()
    series = _series_reference(header)
    series_s = None if series is None else (series - injection).total_seconds()
    frt = _float(header, "FrameReferenceTime")
    reference = None if frt is None or series_s is None else series_s + frt / 1000.0
    duration = _float(header, "ActualFrameDuration")
    return _FrameTimes(acquisition, reference, None if duration is None else duration / 1000.0, series_s)


def _timing(times: list[_FrameTimes], half_life: float | None, tolerance_s: float, notes: list[str]) -> FrameTiming:
    count = len(times)
    durations = np.array([t.duration_s if t.duration_s is not None else np.nan for t in times])
    acquisition = np.array([t.acquisition_s if t.acquisition_s is not None else np.nan for t in times])
    references = np.array([t.reference_s if t.reference_s is not None else np.nan for t in times])
    from_reference = np.full(count, np.nan)
    known = np.isfinite(references) & np.isfinite(durations)
    if known.any():
        offsets = (decay_weighted_offset_s(durations[known], half_life) if half_life is not None
                   else durations[known] / 2.0)
        from_reference[known] = references[known] - offsets
    acquisition_ok = bool(np.all(np.isfinite(acquisition)) and np.all(np.diff(acquisition) > 0))
    if acquisition_ok:
        start = acquisition
    elif np.all(np.isfinite(from_reference)):
        start = from_reference
        why = ("missing" if not np.all(np.isfinite(acquisition)) else "not increasing from frame to frame")
        notes.append(f"The acquisition times are {why}: frame starts were computed from SeriesTime + "
                     "FrameReferenceTime (0054,1300) minus the reference offset within each frame.")
    else:
        raise InputError("The PET series has missing frame timing: neither acquisition times nor "
                         "FrameReferenceTime with ActualFrameDuration give the start of every frame.",
                         "Give the frame timing in a CSV (start_s,duration_s) or a BIDS sidecar with a 4-D image.")
    if acquisition_ok and np.all(np.isfinite(from_reference)) and count:
        difference = np.abs(acquisition - from_reference)
        worst = int(np.argmax(difference))
        if difference[worst] > tolerance_s:
            notes.append(f"Frame timing check: the starts from the acquisition times and from FrameReferenceTime/"
                         f"ActualFrameDuration differ by up to {difference[worst]:.1f} s (frame {worst + 1}: "
                         f"{acquisition[worst]:.1f} s vs {from_reference[worst]:.1f} s). The acquisition times were "
                         "used; check the frame timing.")
    if acquisition_ok and not np.all(np.isfinite(from_reference)):
        notes.append("FrameReferenceTime (0054,1300) (or ActualFrameDuration, or SeriesTime) is missing: frame "
                     "starts come from the acquisition times alone and could not be cross-checked.")
    missing = np.flatnonzero(~np.isfinite(durations))
    if missing.size:
        if missing[-1] == count - 1:
            raise InputError("The PET series has missing frame timing: the last frame has no ActualFrameDuration "
                             "(0018,1242).", "Give the frame timing in a CSV (start_s,duration_s).")
        durations = durations.copy()
        durations[missing] = start[missing + 1] - start[missing]
        notes.append(f"ActualFrameDuration is missing for {missing.size} frame(s); their duration was taken as the "
                     "time to the next frame's start (contiguous frames assumed).")
    if start[0] < 0 and start[0] > -tolerance_s:
        notes.append(f"The first frame starts {-start[0]:.1f} s before the recorded injection; its start was set "
                     "to 0 s.")
        start = start.copy()
        start[0] = 0.0
    return FrameTiming(start, durations)


# ------------------------------------------------------------------------------------------ metadata
def _metadata(header: Any, notes: list[str]) -> dict[str, Any]:
    item = _radiopharmaceutical(header)
    radionuclide, half_life, dose = "", None, None
    if item is not None:
        codes = item.get("RadionuclideCodeSequence")
        if codes:
            radionuclide = _text(codes[0].get("CodeMeaning")) or _text(codes[0].get("CodeValue"))
        if not radionuclide:
            radionuclide = _text(item.get("Radiopharmaceutical"))
        half_life = _float(item, "RadionuclideHalfLife")
        dose = _float(item, "RadionuclideTotalDose")
    key = radionuclide_key(radionuclide)
    if half_life is None and key:
        half_life = HALF_LIVES_S[key]
        notes.append(f"RadionuclideHalfLife (0018,1075) is missing: the {key} half-life {half_life:g} s was used.")
    if half_life is not None and key and abs(half_life - HALF_LIVES_S[key]) > 0.01 * HALF_LIVES_S[key]:
        notes.append(f"RadionuclideHalfLife {half_life:g} s differs from the {key} half-life "
                     f"{HALF_LIVES_S[key]:g} s; the file's value was used.")
    if half_life is None:
        notes.append("The radionuclide and its half-life are unknown: decay correction is not possible.")
    units_text = _text(header.get("Units"))
    unit = normalise_unit(units_text)
    if not unit:
        notes.append(f"The pixel unit (0054,1001) is {units_text or 'missing'}, not a calibrated activity "
                     "concentration or SUV: the unit is unknown.")
    weight = _float(header, "PatientWeight")
    if weight is not None and weight <= 0:
        weight = None
    if dose is not None and dose <= 0:
        dose = None
    return {"radionuclide": key or radionuclide, "half_life_s": half_life, "unit": unit,
            "weight_kg": weight, "dose_bq": dose}


# ------------------------------------------------------------------------------------------ the reader
def _pet_pixels(path: Path) -> np.ndarray:
    """Rescaled pixels (rows, columns) float32 of one PET slice; FileFormatError naming a cut or damaged file."""
    try:
        pixels, _ = _pixels_of(path)
    except FileFormatError as error:
        raise FileFormatError(error.problem, "Copy the PET series again from the scanner or PACS; a dynamic PET with "
                                             "a damaged image cannot be analysed.") from error
    return pixels


def read_pet_dicom_series(paths_or_folder: str | Path | Sequence[str | Path], progress: Progress | None = None,
                          series_uid: str | None = None, tolerance_s: float = TIMING_TOLERANCE_S) -> DynamicPet:
    """Read a PET DICOM series (static or dynamic) as a :class:`DynamicPet` (see the module docstring for rules).

    paths_or_folder: a folder (searched recursively) or a list of files/folders.
    series_uid:      read only this SeriesInstanceUID (when the folder holds several series).
    tolerance_s:     allowed difference between the two ways of computing frame starts before a warning.
    Frames are (T, K, rows, cols) float32 in the file's unit (decay re-referenced to the injection for START).
    """
    progress = Progress.ensure(progress)
    notes: list[str] = []
    files = _list_files(paths_or_folder)
    if not files:
        raise FileFormatError(f"No files were found in {paths_or_folder}.", "Choose the folder of the PET series.")
    kept = _scan(files, progress.sub(0.0, 0.3), notes, series_uid)
    series = _group_series(kept)
    first = kept[0][1]
    injection = injection_datetime(first, notes)
    frames: list[list[_Slice]] = []
    for uid, members in series.items():
        frames.extend(_frames_of_series(members, uid, notes))
    if injection is None:
        starts = [_series_reference(s[0].header) or _acquisition_datetime(s[0].header) for s in frames]
        starts = [moment for moment in starts if moment is not None]
        if not starts:
            raise InputError("The PET series has missing frame timing: no injection, series or acquisition time.",
                             "Give the frame timing in a CSV (start_s,duration_s).")
        injection = min(starts)
        notes.append("The injection time (0018,1078/0018,1072) is missing: times are relative to the series start, "
                     "which assumes the scan started at the injection.")
    meta = _metadata(first, notes)
    times = [_frame_times(slices, injection) for slices in frames]
    order = np.argsort([t.acquisition_s if t.acquisition_s is not None else
                        (t.reference_s if t.reference_s is not None else 0.0) for t in times], kind="stable")
    frames = [frames[i] for i in order]
    times = [times[i] for i in order]
    try:
        timing = _timing(times, meta["half_life_s"], tolerance_s, notes)
    except InputError as error:
        if len(series) > 1:
            labels = "; ".join(_series_label(m[0][1], len(m)) for m in series.values())
            raise FileFormatError(f"The {len(series)} PET series in the folder cannot be merged into one dynamic "
                                  f"acquisition ({error.problem}): {labels}.", _CHOOSE) from error
        raise
    positions = _check_grids(frames)
    geometry = _geometry(frames, positions)

    decay_kinds = {_text(m[0][1].get("DecayCorrection")).upper() for m in series.values()}
    if len(decay_kinds) > 1:
        raise FileFormatError(f"The PET series differ in decay correction ({', '.join(sorted(decay_kinds))}).",
                              _CHOOSE)
    decay = decay_kinds.pop()
    reference: float | np.ndarray | None = None
    if decay == "ADMIN":
        decay_corrected, reference = True, 0.0
    elif decay == "START":
        decay_corrected = True
        reference = np.array([t.series_start_s if t.series_start_s is not None else np.nan for t in times])
        if not np.all(np.isfinite(reference)):
            reference = None
            decay_corrected = None
            notes.append("DecayCorrection is START but the series time is missing: the decay reference is unknown.")
    elif decay == "NONE":
        decay_corrected = False
    else:
        decay_corrected = None
        notes.append(f"DecayCorrection (0054,1102) is {decay or 'missing'}: the decay correction is unknown.")

    reader = progress.sub(0.3, 0.98)
    total = sum(len(slices) for slices in frames)
    rows, columns = int(first.Rows), int(first.Columns)
    data = np.empty((len(frames), positions.size, rows, columns), dtype=np.float32)
    done = 0
    for f, slices in enumerate(frames):
        for k, item in enumerate(slices):
            if k == 0 or done % 8 == 0:
                reader(done / total, f"Reading PET frame {f + 1}/{len(frames)}")
            pixels = _pet_pixels(item.path)
            if pixels.shape != (rows, columns):
                raise GeometryError(f"{item.path.name} has {pixels.shape} pixels instead of {(rows, columns)}.",
                                    "Keep one PET series per folder.")
            data[f, k] = pixels
            done += 1
    data, decay_corrected, reference_s = settle_decay_reference(data, timing, decay_corrected, reference,
                                                                meta["half_life_s"], notes)
    progress(1.0, "PET series read")
    source = str(paths_or_folder) if isinstance(paths_or_folder, (str, Path)) else f"{len(files)} DICOM files"
    return DynamicPet(VolumeSequence(data, geometry, tuple(timing.mid_s)), timing, meta["unit"], decay_corrected,
                      meta["radionuclide"], meta["half_life_s"], meta["weight_kg"], meta["dose_bq"], source,
                      tuple(notes), reference_s)
