"""Cine (time-resolved) DICOM series: a cardiac cine MR folder -> :class:`~scanai.core.image.VolumeSequence`.

DICOM geometry is in LPS; :class:`~scanai.core.image.Geometry` is RAS (the first two axes change sign).
A DICOM cine folder holds, for each slice location, one image per cardiac phase; a
:class:`~scanai.core.image.VolumeSequence` holds one location's phases, ordered by TriggerTime, with index
"time" in seconds.

Sequence files (Slicer ``.seq.nrrd``, 4-D NRRD/NIfTI) are read and written by :mod:`scanai.io.sequence_file`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, GeometryError, InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.io.sitk_image import LPS_TO_RAS


@dataclass(frozen=True)
class CineSlice:
    """One slice location of a DICOM cine folder.

    position_mm: signed distance of the slice along its normal (LPS ImagePositionPatient . normal), in mm.
    files:       the slice's files, ordered by TriggerTime (then InstanceNumber).
    trigger_times_s: TriggerTime of each file in s (None when absent).
    """

    position_mm: float
    files: tuple[Path, ...]
    trigger_times_s: tuple[float, ...] | None


def _read_header(path: Path):
    """The DICOM header of ``path`` (no pixels), or None when it is not a DICOM image file."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError):
        return None
    needed = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
    if not all(name in dataset for name in needed):
        return None
    return dataset


def _normal_of(orientation: Sequence[float]) -> np.ndarray:
    row, column = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:6], dtype=float)
    return np.cross(row, column)


def list_cine_slices(folder: str | Path) -> list[CineSlice]:
    """Group the DICOM images of ``folder`` by slice location (files read recursively, headers only).

    Slices are listed in acquisition order (by their lowest InstanceNumber); for Sunnybrook files ``N.dcm``
    slice ``s`` holds files ``20 s + 1 .. 20 s + 20``. Raises :class:`FileFormatError` when the folder is
    missing or has no DICOM images with pixel geometry.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileFormatError(f"The DICOM folder {folder} does not exist.", "Check the path.")
    headers = [(path, _read_header(path)) for path in sorted(folder.rglob("*")) if path.is_file()]
    headers = [(path, header) for path, header in headers if header is not None]
    if not headers:
        raise FileFormatError(f"No DICOM images were found in {folder}.",
                              "Choose the folder that holds the cine's .dcm files.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about non-conformant UIDs, common in research data
        return _group_slices(headers)


def _group_slices(headers: list) -> list[CineSlice]:
    """Group ``(path, header)`` pairs by (series, orientation, position) and order each group in time."""
    groups: dict[tuple, list] = {}
    for path, header in headers:
        orientation = tuple(round(float(v), 4) for v in header.ImageOrientationPatient)
        position = float(np.dot(np.asarray(header.ImagePositionPatient, dtype=float), _normal_of(orientation)))
        key = (str(header.get("SeriesInstanceUID", "")), orientation, round(position, 2))
        groups.setdefault(key, []).append((path, header))
    slices = []
    for key, members in groups.items():
        has_time = all("TriggerTime" in header for _, header in members)
        members.sort(key=lambda item: (float(item[1].TriggerTime) if has_time else 0.0,
                                       int(item[1].get("InstanceNumber", 0) or 0)))
        times = tuple(float(header.TriggerTime) / 1000.0 for _, header in members) if has_time else None
        first_instance = min(int(header.get("InstanceNumber", 0) or 0) for _, header in members)
        slices.append((first_instance, CineSlice(key[2], tuple(path for path, _ in members), times)))
    slices.sort(key=lambda item: (item[0], item[1].position_mm))
    return [cine_slice for _, cine_slice in slices]


def _geometry_of(dataset) -> Geometry:
    """RAS geometry of one DICOM image (slice thickness as the third spacing)."""
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    row, column = orientation[:3], orientation[3:6]
    directions = np.column_stack([row, column, np.cross(row, column)])
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    thickness = float(dataset.get("SliceThickness", 0) or dataset.get("SpacingBetweenSlices", 0) or 1.0)
    return Geometry((column_spacing, row_spacing, abs(thickness)),
                    tuple(LPS_TO_RAS @ np.asarray(dataset.ImagePositionPatient, dtype=float)),
                    tuple(map(tuple, LPS_TO_RAS @ directions)))


def _pixels_of(path: Path) -> tuple[np.ndarray, object]:
    """Rescaled pixels (rows, columns) float32 and the full dataset of one DICOM file."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path)
        if "PixelData" not in dataset:
            raise FileFormatError(f"{path.name} has no pixel data.", "Remove non-image files from the folder.")
        if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
            raise FileFormatError(f"{path.name} is a multi-frame (enhanced) DICOM file, which this reader does "
                                  "not support.", "Export the cine as one file per image.")
        try:
            pixels = dataset.pixel_array.astype(np.float32)
        except Exception as error:  # pydicom raises many kinds for undecodable pixel data
            raise FileFormatError(f"The pixel data of {path.name} could not be decoded ({error}).",
                                  "Convert the series to uncompressed DICOM.") from error
    if pixels.ndim != 2:
        raise FileFormatError(f"{path.name} is not a grey-scale image (pixel array shape {pixels.shape}).")
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    return pixels * slope + intercept, dataset


def read_dicom_series(folder: str | Path, slice_index: int | None = None) -> VolumeSequence:
    """Read one slice location of a DICOM cine folder as a sequence of single-slice frames.

    folder:      a folder of DICOM files (searched recursively; non-DICOM files are skipped).
    slice_index: which slice location, 0-based in acquisition order (see :func:`list_cine_slices`); may be
                 omitted when the folder holds a single location.
    Returns frames (T, 1, rows, columns) float32 with rescale slope/intercept applied, RAS geometry from
    ImagePositionPatient / ImageOrientationPatient / PixelSpacing, and index "time" in s from TriggerTime
    (frames ordered by it). Without TriggerTime the frames follow InstanceNumber with index "frame" (no unit).
    """
    slices = list_cine_slices(folder)
    if slice_index is None:
        if len(slices) > 1:
            raise InputError(f"The folder holds {len(slices)} slice locations; say which one to read "
                             f"(0 to {len(slices) - 1}).")
        slice_index = 0
    if not 0 <= slice_index < len(slices):
        raise InputError(f"Slice {slice_index} does not exist: the cine has {len(slices)} slice locations "
                         f"(0 to {len(slices) - 1}).")
    chosen = slices[slice_index]
    images, geometries = [], []
    for path in chosen.files:
        pixels, dataset = _pixels_of(path)
        images.append(pixels)
        geometries.append(_geometry_of(dataset))
    for number, (image, geometry) in enumerate(zip(images, geometries, strict=True)):
        if image.shape != images[0].shape or not geometry.is_close(geometries[0]):
            raise GeometryError(f"Phase {number + 1} of slice {slice_index} ({chosen.files[number].name}) lies on a "
                                "different grid than the first phase.",
                                "Check that the folder holds a single cine series.")
    frames = np.stack(images)[:, np.newaxis]
    if chosen.trigger_times_s is None:
        return VolumeSequence(frames, geometries[0], tuple(range(len(images))), "frame", "")
    times = np.asarray(chosen.trigger_times_s)
    if np.any(np.diff(times) <= 0):
        raise InputError(f"Slice {slice_index} has several images with the same trigger time; the folder may mix "
                         "series or repeated acquisitions.", "Keep one cine series per folder.")
    return VolumeSequence(frames, geometries[0], tuple(times), "time", "s")


def read_sunnybrook_cine(dicom_dir: str | Path, slice_index: int | None = None) -> VolumeSequence:
    """One slice of a Sunnybrook Cardiac Data short-axis cine (``N.dcm`` files, 20 phases per slice).

    slice_index: 0-based slice location in acquisition order; None picks the middle slice
    (mid-ventricular in the Sunnybrook stacks). Returns (20, 1, 256, 256) frames, index "time" in s.
    """
    if slice_index is None:
        slice_index = len(list_cine_slices(dicom_dir)) // 2
    return read_dicom_series(dicom_dir, slice_index)


# ------------------------------------------------------------------------------------ sequence NRRD files
