"""Cine (time-resolved) image sequences: DICOM cine MR folders and 4-D NRRD/NIfTI files.

DICOM geometry is in LPS; :class:`~scanai.core.image.Geometry` is RAS (the first two axes change sign).
A DICOM cine folder holds, for each slice location, one image per cardiac phase; a
:class:`~scanai.core.image.VolumeSequence` holds one location's phases, ordered by TriggerTime, with index
"time" in seconds.

Sequence files written here are Slicer sequence NRRDs (``*.seq.nrrd``): the first axis is the frame list,
with the index name, unit and values in the header, so Slicer's *Add data* loads them as a volume sequence.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, GeometryError, InputError
from scanai.core.image import Geometry, VolumeSequence

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


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

_NRRD_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int16): "short",
               np.dtype(np.uint16): "ushort", np.dtype(np.uint8): "uchar", np.dtype(np.int32): "int"}


def _vector_text(values: Sequence[float]) -> str:
    return "(" + ",".join(f"{float(v):.17g}" for v in values) + ")"


def write_sequence_nrrd(sequence: VolumeSequence, path: str | Path) -> Path:
    """Write a Slicer sequence NRRD (``.seq.nrrd``): axes (frame, i, j, k), LPS space, gzip.

    The header keeps the index name, unit and values, so Slicer loads the file as a volume sequence and
    :func:`read_sequence` restores the same :class:`VolumeSequence` (float64 is kept, other types as is).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(sequence.frames)
    if frames.dtype not in _NRRD_TYPES:
        frames = frames.astype(np.float32)
    geometry = sequence.geometry
    axes = LPS_TO_RAS @ np.asarray(geometry.directions) * np.asarray(geometry.spacing_mm)  # columns: i, j, k
    data = np.ascontiguousarray(frames.transpose(1, 2, 3, 0))  # (k, j, i, t): t varies fastest on disk
    count, k_size, j_size, i_size = frames.shape
    header = [
        "NRRD0004",
        f"type: {_NRRD_TYPES[frames.dtype]}",
        "dimension: 4",
        "space: left-posterior-superior",
        f"sizes: {count} {i_size} {j_size} {k_size}",
        "space directions: none " + " ".join(_vector_text(axes[:, c]) for c in range(3)),
        "kinds: list domain domain domain",
        "endian: little",
        "encoding: gzip",
        "space origin: " + _vector_text(LPS_TO_RAS @ np.asarray(geometry.origin_mm)),
        "DataNodeClassName:=vtkMRMLScalarVolumeNode",
        "axis 0 index type:=numeric",
        f"axis 0 index values:={' '.join(f'{v:.17g}' for v in sequence.index_values)}",
        f"axis 0 quantity:={sequence.index_name}",
        f"axis 0 unit:={sequence.index_unit}",
    ]
    little = data.astype(data.dtype.newbyteorder("<"), copy=False)
    with open(path, "wb") as stream:
        stream.write(("\n".join(header) + "\n\n").encode("ascii"))
        stream.write(gzip.compress(little.tobytes(), compresslevel=1))
    return path


def read_sequence(path: str | Path) -> VolumeSequence:
    """Read a volume sequence from a file.

    - Slicer sequence NRRD (first axis a "list" of frames, e.g. written by :func:`write_sequence_nrrd`):
      index name, unit and values are taken from the header.
    - 4-D NRRD/NIfTI/MHA whose last axis is time: index values are origin + n * spacing of that axis,
      taken as seconds (index "time", unit "s").
    Returns frames (T, K, J, I) with RAS geometry; raises :class:`FileFormatError` for unreadable files.
    """
    import SimpleITK as sitk

    from scanai.io.sitk_image import geometry_of_sitk

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The file {path} does not exist.", "Check the path.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise FileFormatError(f"{path.name} could not be read as an image sequence.",
                              "Use a 4-D NRRD/NIfTI or a Slicer .seq.nrrd file.") from error
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1 and image.GetDimension() in (2, 3):
        frames = np.moveaxis(array, -1, 0)  # a list axis comes back as pixel components
        if image.GetDimension() == 2:
            frames = frames[:, np.newaxis]
        keys = set(image.GetMetaDataKeys())
        count = frames.shape[0]

        def meta(name: str, default: str) -> str:
            return image.GetMetaData(name).strip() if name in keys else default

        values_text = meta("axis 0 index values", "")
        values = tuple(float(v) for v in values_text.split()) if values_text else tuple(range(count))
        if len(values) != count:
            raise FileFormatError(f"{path.name} lists {len(values)} index values for {count} frames.")
        return VolumeSequence(frames, geometry_of_sitk(image), values, meta("axis 0 quantity", "time"),
                              meta("axis 0 unit", "s"))
    if image.GetDimension() != 4 or image.GetNumberOfComponentsPerPixel() != 1:
        raise FileFormatError(f"{path.name} is not a time sequence (it has {image.GetDimension()} dimensions and "
                              f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel).",
                              "Use a 4-D image whose last axis is time, or a Slicer .seq.nrrd file.")
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    direction = np.asarray(image.GetDirection()).reshape(4, 4)
    directions = LPS_TO_RAS @ direction[:3, :3]
    geometry = Geometry(tuple(spacing[:3]), tuple(LPS_TO_RAS @ np.asarray(origin[:3])), tuple(map(tuple, directions)))
    times = tuple(origin[3] + n * spacing[3] for n in range(array.shape[0]))
    return VolumeSequence(array, geometry, times, "time", "s")
