"""Cine (time-resolved) input for motion estimation -> :class:`~scanai.core.image.VolumeSequence`.

:func:`read_cine` is the one entry point: a folder of DICOM images, a multi-frame DICOM file (echo cine,
enhanced MR) or a sequence file (``.seq.nrrd``, 4-D NRRD/NIfTI, read by :mod:`scanai.io.sequence_file`).

DICOM geometry is in LPS; :class:`~scanai.core.image.Geometry` is RAS (the first two axes change sign).
A DICOM cine folder holds, for each slice location, one image per cardiac phase; a
:class:`~scanai.core.image.VolumeSequence` holds one location's phases (:func:`read_dicom_series`), or every
location as a 3-D+t stack (:func:`read_cine_stack`), ordered by TriggerTime, with index "time" in seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, GeometryError, InputError, ScanAIError
from scanai.core.image import Geometry, VolumeSequence, grid_differences
from scanai.io.sitk_image import LPS_TO_RAS


@dataclass(frozen=True)
class CineSlice:
    """One slice location of a DICOM cine folder.

    position_mm: signed distance of the slice along its normal (LPS ImagePositionPatient . normal), in mm.
    files:       the slice's files, ordered by TriggerTime (then InstanceNumber).
    trigger_times_s: TriggerTime of each file in s (None when absent).
    announced:   the phase count its headers announce (CardiacNumberOfImages; None when absent).
    instance_numbers: InstanceNumber of each file (0 when absent), in the order of ``files``.
    """

    position_mm: float
    files: tuple[Path, ...]
    trigger_times_s: tuple[float, ...] | None
    announced: int | None = None
    instance_numbers: tuple[int, ...] = ()

    def images_text(self) -> str:
        """The slice's images in words: "images 81-100 (81.dcm ... 100.dcm)" (InstanceNumbers, then files)."""
        first, last = self.files[0].name, self.files[-1].name
        files = first if len(self.files) == 1 else f"{first} ... {last}"
        numbers = sorted(n for n in self.instance_numbers if n)
        if not numbers:
            return f"{len(self.files)} images ({files})"
        span = f"{numbers[0]}-{numbers[-1]}" if numbers[-1] - numbers[0] + 1 == len(numbers) == len(self.files) \
            else ", ".join(str(n) for n in numbers)
        return f"images {span} ({files})"

    def times_text(self) -> str:
        """Trigger times in words: "19-731 ms every 37.5 ms", or "no trigger times"."""
        if not self.trigger_times_s:
            return "no trigger times"
        times = 1000.0 * np.asarray(self.trigger_times_s)
        if len(times) == 1:
            return f"{times[0]:.0f} ms"
        return f"{times[0]:.0f}-{times[-1]:.0f} ms every {float(np.median(np.diff(times))):.1f} ms"


@dataclass(frozen=True)
class Damaged:
    """What :func:`_read_header` returns for a DICOM file (``.dcm`` / ``.ima`` or with the DICM marker) that cannot be
    read: ``reason`` continues the file name ("is incomplete: ...")."""

    reason: str


#: Optional header attributes the folder reader converts to numbers.
_OPTIONAL_NUMBERS = ("TriggerTime", "InstanceNumber", "CardiacNumberOfImages", "SliceThickness",
                     "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept")


def _read_header(path: Path):
    """The DICOM header of ``path`` (no pixels); None when it is not a DICOM image file (skipped); :class:`Damaged`
    when a DICOM file (``.dcm`` / ``.ima`` or with the DICM marker) cannot be read, was cut off, or holds header
    numbers that cannot be read."""
    import pydicom

    from scanai.io.dicom import (
        GEOMETRY_NUMBERS,
        dicom_damage,
        header_numbers_problem,
        header_stops_early,
        is_dicom_file,
    )

    named_dicom = path.suffix.lower() in (".dcm", ".ima") or is_dicom_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:
        size = path.stat().st_size
        return Damaged(f"has no DICOM header (it holds {size} bytes): it was cut off, or it is no DICOM file") \
            if named_dicom else None
    except Exception as error:  # pydicom raises many kinds on damaged files
        if not named_dicom:
            return None
        return Damaged(dicom_damage(path) or f"is damaged ({type(error).__name__})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about non-conformant values (UIDs), common in research data
        if not all(name in dataset for name in GEOMETRY_NUMBERS):
            damage = (dicom_damage(path) or header_stops_early(dataset)) if named_dicom else None
            return Damaged(damage) if damage else None  # whole but no image with geometry (e.g. a report): skipped
        problem = header_numbers_problem(dataset, _OPTIONAL_NUMBERS)
    return Damaged(problem) if problem else dataset


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
    unreadable = [(path, header) for path, header in headers if isinstance(header, Damaged)]
    headers = [(path, header) for path, header in headers if header is not None and not isinstance(header, Damaged)]
    if unreadable:  # a damaged image of the cine would silently shorten it
        shown = ", ".join(p.name for p, _ in unreadable[:5]) + (", ..." if len(unreadable) > 5 else "")
        first, damage = unreadable[0]
        raise FileFormatError(f"{len(unreadable)} DICOM file(s) in {folder.name} could not be read: {shown}. "
                              f"{first.name} {damage.reason}.",
                              "Copy the series again, or remove the damaged files if they do not belong to it.")
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
        counts = {int(header.CardiacNumberOfImages) for _, header in members if header.get("CardiacNumberOfImages")}
        announced = max(counts) if counts else None
        numbers = tuple(int(header.get("InstanceNumber", 0) or 0) for _, header in members)
        slices.append((first_instance, CineSlice(key[2], tuple(path for path, _ in members), times, announced,
                                                 numbers)))
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


def _full_dataset(path: Path):
    """The whole pydicom dataset of one DICOM file of a cine folder; FileFormatError saying how it is damaged."""
    import pydicom

    from scanai.io.dicom import dicom_damage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path)
    except Exception as error:  # truncated or corrupt files raise many kinds of errors
        damage = dicom_damage(path) or f"could not be read as DICOM: the file is damaged ({type(error).__name__})"
        raise FileFormatError(f"{path.name} {damage}.", "Export the cine again, or remove the file.") from error


def _pixels_of(path: Path) -> tuple[np.ndarray, object]:
    """Rescaled pixels (rows, columns) float32 and the full dataset of one DICOM file."""
    from scanai.io.dicom import HEADER_ERRORS, damaged_header_error, decoding_error, missing_pixels_error

    dataset = _full_dataset(path)
    if "PixelData" not in dataset:
        raise missing_pixels_error(dataset, path, "cine")
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    except HEADER_ERRORS as error:
        raise damaged_header_error(path, error, "cine") from error
    if frames > 1:
        raise FileFormatError(f"{path.name} is a multi-frame (enhanced) DICOM file, which this reader does not "
                              "support.", "Export the cine as one file per image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = dataset.pixel_array.astype(np.float32)
    except Exception as error:  # pydicom raises many kinds for undecodable pixel data
        raise decoding_error(dataset, path, error, "cine") from error
    if pixels.ndim != 2:
        raise FileFormatError(f"{path.name} is not a grey-scale image (pixel array shape {pixels.shape}).")
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
    return _read_slice(_chosen_slice(slices, slice_index), slice_index)


def _chosen_slice(slices: list[CineSlice], slice_index: int) -> CineSlice:
    """``slices[slice_index]``, or InputError naming the valid range and ``--list``."""
    if isinstance(slice_index, bool) or not 0 <= slice_index < len(slices):
        raise InputError(f"Slice {slice_index} does not exist: the cine has {len(slices)} slice locations "
                         f"(0 to {len(slices) - 1}).", "List them with --list (scanai motion FOLDER --list).")
    return slices[slice_index]


def _read_slice(chosen: CineSlice, slice_index: int) -> VolumeSequence:
    """The phases of one slice location as frames (T, 1, rows, columns); see :func:`read_dicom_series`."""
    if chosen.announced is not None and len(chosen.files) < chosen.announced:
        raise FileFormatError(f"Slice {slice_index} has {len(chosen.files)} phases, but its headers announce "
                              f"{chosen.announced} (CardiacNumberOfImages): {chosen.announced - len(chosen.files)} "
                              "image(s) are missing.", "Copy the whole series again.")
    images, geometries = [], []
    for path in chosen.files:
        pixels, dataset = _pixels_of(path)
        images.append(pixels)
        geometries.append(_geometry_of(dataset))
    for number, (image, geometry) in enumerate(zip(images, geometries, strict=True)):
        differ = grid_differences(image.shape, geometry, images[0].shape, geometries[0])
        if differ:
            raise GeometryError(f"Phase {number + 1} of slice {slice_index} ({chosen.files[number].name}) lies on a "
                                f"different grid than phase 1 ({chosen.files[0].name}): {differ}.",
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



# ------------------------------------------------------------------------------------ one entry point

#: File names read as volume-sequence files by :func:`read_cine` (:func:`scanai.io.sequence_file.read_sequence`).
SEQUENCE_SUFFIXES = (".seq.nrrd", ".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def read_cine(path: str | Path, slice_index: int | None = None) -> VolumeSequence:
    """Read a cine (a time series of images) for motion estimation: :func:`read_cine_described` without the
    description."""
    return read_cine_described(path, slice_index)[0]


def read_cine_described(path: str | Path, slice_index: int | None = None) -> tuple[VolumeSequence, str]:
    """Read a cine (a time series of images) for motion estimation, whatever its container.

    path: - a folder of DICOM images (one file per image): grouped by slice location and ordered by TriggerTime
            (see :func:`read_dicom_series`). ``slice_index`` picks one location -> frames (T, 1, J, I). Without
            it, a single location is read as is, and several are read as one 3-D+t stack (:func:`read_cine_stack`)
            when they are parallel and equally spaced; otherwise :class:`InputError` asks for ``slice_index``.
          - a sequence file (``.seq.nrrd``, ``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``): see
            :func:`scanai.io.sequence_file.read_sequence` (a 4-D NIfTI's times come from pixdim[4] and
            xyzt_units, else frame numbers). ``slice_index`` picks one slice k of a 3-D+t sequence.
          - a multi-frame DICOM file (e.g. an echo cine): :func:`read_multiframe_cine`.
    Returns a :class:`VolumeSequence` (T, K, J, I) with index "time" in s, or "frame" (no unit) when the input
    has no frame times, and one sentence naming what was read (for a DICOM folder: the slice location and its
    images, e.g. "slice 4 of 12 at -78.9 mm: images 81-100 (81.dcm ... 100.dcm), 20 phases, trigger times ...").
    Raises :class:`FileFormatError` (missing, unreadable, not an image),
    :class:`GeometryError` (frames on different grids) or :class:`InputError` (fewer than 2 frames, ...).
    """
    path = Path(path)
    if path.is_dir():
        sequence, described = _read_cine_folder(path, slice_index)
    elif not path.is_file():
        raise FileFormatError(f"The cine {path} does not exist.", "Check the path and the file name.")
    else:
        if path.name.lower().endswith(SEQUENCE_SUFFIXES):
            from scanai.io.sequence_file import read_sequence

            sequence = read_sequence(path)
        else:
            sequence = read_multiframe_cine(path)
        count = sequence.frames.shape[1]
        described = f"{path.name}: {len(sequence)} frames of {_grid_text(sequence.frames.shape[1:])}"
        if slice_index is not None:
            sequence = _slice_of(sequence, slice_index, path.name)
            described = f"{path.name}: slice {slice_index} of {count} (0-based), {len(sequence)} frames of " \
                        f"{_grid_text(sequence.frames.shape[1:])}"
    if len(sequence) < 2:
        raise InputError(f"{path.name} holds a single time frame; motion estimation needs at least 2 frames.",
                         "Load a cine (a series of images of the same slice over the cardiac cycle).")
    return sequence, described


def _grid_text(shape: tuple[int, ...]) -> str:
    """(K, J, I) as "256 x 256 pixels" or "12 slices of 256 x 256 pixels"."""
    plane = f"{shape[1]} x {shape[2]} pixels"
    return plane if shape[0] == 1 else f"{shape[0]} slices of {plane}"


def describe_slice(cine_slice: CineSlice, slice_index: int, count: int) -> str:
    """One slice location in words: index (0-based, as ``--slice``), location, images, phases, trigger times."""
    return (f"slice {slice_index} of {count} (0-based) at {cine_slice.position_mm:.1f} mm along the slice normal: "
            f"{cine_slice.images_text()}, {len(cine_slice.files)} phases, trigger times {cine_slice.times_text()}")


def _read_cine_folder(folder: Path, slice_index: int | None) -> tuple[VolumeSequence, str]:
    """A DICOM folder: one slice location, or the whole stack when none is named (see :func:`read_cine`)."""
    slices = list_cine_slices(folder)
    if slice_index is None and len(slices) > 1:
        positions = [cine_slice.position_mm for cine_slice in slices]
        return _read_stack(slices), (f"{folder.name}: all {len(slices)} slice locations as one 3-D+t stack "
                                     f"({positions[0]:.1f} to {positions[-1]:.1f} mm along the slice normal, "
                                     f"{sum(len(c.files) for c in slices)} images)")
    slice_index = 0 if slice_index is None else slice_index
    chosen = _chosen_slice(slices, slice_index)
    return _read_slice(chosen, slice_index), f"{folder.name}: {describe_slice(chosen, slice_index, len(slices))}"


def _slice_of(sequence: VolumeSequence, slice_index: int, name: str) -> VolumeSequence:
    """Slice ``slice_index`` (k) of a sequence, as frames (T, 1, J, I) with the geometry moved to that slice."""
    count = sequence.frames.shape[1]
    if not 0 <= slice_index < count:
        raise InputError(f"Slice {slice_index} does not exist: {name} has {count} slice(s) (0 to {count - 1}).",
                         "Choose a slice index in that range, or leave it out.")
    geometry = sequence.geometry
    origin = geometry.ras_of_ijk(np.array([0.0, 0.0, float(slice_index)]))
    moved = Geometry(geometry.spacing_mm, tuple(origin), geometry.directions)
    return VolumeSequence(sequence.frames[:, slice_index:slice_index + 1].copy(), moved, sequence.index_values,
                          sequence.index_name, sequence.index_unit)


def read_cine_stack(folder: str | Path) -> VolumeSequence:
    """Every slice location of a DICOM cine folder as one 3-D+t sequence (T, K, J, I) float32.

    Slice k is slice location k of :func:`list_cine_slices` (acquisition order), so ``frames[:, k]`` equals
    ``read_dicom_series(folder, k).frames[:, 0]``; the k axis points from slice 0 to slice 1 (it may make a
    left-handed grid), its spacing is the distance between neighbouring slices. The slices must share the
    in-plane grid and lie parallel and equally spaced along their normal (no in-plane shift), and hold the same
    number of phases; otherwise :class:`InputError` (or :class:`GeometryError`) asks to pick one slice.
    Index "time" in s: the mean over slices of each phase's TriggerTime (slices acquired in different breath
    holds have slightly different RR intervals); "frame" when TriggerTime is missing.
    """
    slices = list_cine_slices(folder)
    if len(slices) == 1:
        return _read_slice(slices[0], 0)
    return _read_stack(slices)


def _not_a_stack(count: int, reason: str) -> InputError:
    return InputError(f"The folder holds {count} slice locations that do not form one 3-D grid: {reason}.",
                      f"Pass slice_index (0 to {count - 1}) to read one slice location.")


def _stack_geometry(geometries: list[Geometry], shapes: list[tuple[int, ...]], names: list[str]) -> Geometry:
    """The 3-D grid of slices with first-phase ``geometries`` (one per slice, in order, from the files ``names``);
    raises when not a stack."""
    count, first = len(geometries), geometries[0]
    for number, (geometry, shape) in enumerate(zip(geometries, shapes, strict=True)):
        which = f"slice {number} ({names[number]})"
        if shape != shapes[0] or not np.allclose(geometry.spacing_mm[:2], first.spacing_mm[:2], rtol=1e-4):
            raise GeometryError(f"The folder holds {count} slice locations; {which} has another image size or pixel "
                                f"spacing than slice 0 ({names[0]}), so they do not form one 3-D grid.",
                                f"Pass slice_index (0 to {count - 1}) to read one slice location.")
        if not np.allclose(np.asarray(geometry.directions)[:, :2], np.asarray(first.directions)[:, :2], atol=1e-3):
            raise _not_a_stack(count, f"{which} is not parallel to slice 0 ({names[0]})")
    origins = np.asarray([g.origin_mm for g in geometries])
    step = (origins[-1] - origins[0]) / (count - 1)
    distance = float(np.linalg.norm(step))
    normal = np.asarray(first.directions)[:, 2]
    tolerance = 0.05 * min(first.spacing_mm[0], first.spacing_mm[1], max(distance, 1e-6))
    if distance < 1e-3:
        raise _not_a_stack(count, "several locations share one position")
    in_plane = step - float(step @ normal) * normal
    if np.linalg.norm(in_plane) > tolerance:
        raise _not_a_stack(count, f"each slice is shifted in its own plane by {np.linalg.norm(in_plane):.2f} mm")
    residual = np.linalg.norm(origins - (origins[0] + np.arange(count)[:, np.newaxis] * step), axis=1)
    if residual.max() > tolerance:
        gaps = np.linalg.norm(np.diff(origins, axis=0), axis=1)
        raise _not_a_stack(count, f"they are not equally spaced in acquisition order (gaps {gaps.min():.2f} to "
                                  f"{gaps.max():.2f} mm)")
    direction_k = normal * np.sign(float(step @ normal))
    directions = np.column_stack([np.asarray(first.directions)[:, 0], np.asarray(first.directions)[:, 1],
                                  direction_k])
    return Geometry((first.spacing_mm[0], first.spacing_mm[1], distance), first.origin_mm,
                    tuple(map(tuple, directions)))


def _read_stack(slices: list[CineSlice]) -> VolumeSequence:
    """Read and stack several slice locations (see :func:`read_cine_stack`)."""
    count = len(slices)
    headers = []
    for cine_slice in slices:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = _read_header(cine_slice.files[0])
        if header is None or isinstance(header, Damaged):
            raise FileFormatError(f"{cine_slice.files[0].name} could not be read again.", "Check the folder.")
        headers.append(header)
    geometries = [_geometry_of(header) for header in headers]
    shapes = [(int(header.Rows), int(header.Columns)) for header in headers]
    geometry = _stack_geometry(geometries, shapes, [cine_slice.files[0].name for cine_slice in slices])
    phases = [len(cine_slice.files) for cine_slice in slices]
    if len(set(phases)) > 1:
        fewest, most = int(np.argmin(phases)), int(np.argmax(phases))
        raise InputError(f"The folder holds {count} slice locations with different numbers of phases: slice {fewest} "
                         f"({slices[fewest].files[0].name}, ...) has {phases[fewest]}, slice {most} has "
                         f"{phases[most]}, so they do not form one 3-D+t sequence.",
                         f"Pass slice_index (0 to {count - 1}) to read one slice location.")
    sequences = [_read_slice(cine_slice, number) for number, cine_slice in enumerate(slices)]
    frames = np.stack([sequence.frames[:, 0] for sequence in sequences], axis=1)
    if any(sequence.index_name != "time" for sequence in sequences):
        return VolumeSequence(frames, geometry, tuple(range(frames.shape[0])), "frame", "")
    times = np.mean([sequence.index_values for sequence in sequences], axis=0)
    return VolumeSequence(frames, geometry, tuple(times), "time", "s")


# ------------------------------------------------------------------------------------ multi-frame DICOM

#: Photometric interpretations whose first channel is the luminance Y = 0.299 R + 0.587 G + 0.114 B.
_LUMA_FIRST = ("YBR_FULL", "YBR_FULL_422")
_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114])


def _read_multiframe_dataset(path: Path):
    """The full pydicom dataset of ``path``; FileFormatError when missing, not DICOM, damaged, cut off or without
    pixels (a cut file is named incomplete, a DICOM object that is no image is named as such)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from scanai.io.dicom import dicom_damage, missing_pixels_error

    if not path.is_file():
        raise FileFormatError(f"The file {path} does not exist.", "Check the path and the file name.")
    formats = "Choose a DICOM cine file, a folder of DICOM images, or a .seq.nrrd / .nrrd / .nii / .nii.gz file."
    again = "Export the cine again from the scanner or PACS."
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = pydicom.dcmread(str(path))
    except InvalidDicomError as error:
        raise FileFormatError(f"{path.name} is neither a DICOM file nor a known sequence file.", formats) from error
    except Exception as error:  # truncated or corrupt files raise many kinds of errors
        damage = dicom_damage(path) or f"could not be read as DICOM: the file is damaged ({type(error).__name__})"
        raise FileFormatError(f"{path.name} {damage}.", again) from error
    if any("end of file" in str(warning.message).lower() for warning in caught):
        damage = dicom_damage(path) or "is incomplete: it ends before its data do"
        raise FileFormatError(f"{path.name} {damage}.", again)
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise missing_pixels_error(dataset, path, "cine")
    return dataset


def _decode_frames(dataset, path: Path) -> tuple[np.ndarray, str]:
    """Stored pixels (T, J, I) or (T, J, I, samples) and their photometric interpretation after decoding."""
    from scanai.io.dicom import _check_decoder, decoding_error

    _check_decoder(dataset, path.name)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                from pydicom.pixels import get_decoder
            except ImportError:  # pydicom < 3: pixel_array keeps the stored colour space
                array = np.asarray(dataset.pixel_array)
            else:
                array, meta = get_decoder(dataset.file_meta.TransferSyntaxUID).as_array(dataset, as_rgb=False)
                photometric = str(meta.get("photometric_interpretation", photometric)).strip().upper()
    except Exception as error:  # pydicom raises many kinds for undecodable or truncated pixel data
        raise decoding_error(dataset, path, error, "cine") from error
    return np.asarray(array), photometric


def _grey_frames(array: np.ndarray, photometric: str, dataset, count: int, name: str) -> np.ndarray:
    """Decoded pixels -> grey frames (T, J, I) float32: luminance of colour data, Modality-LUT values of grey."""
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array, photometric, samples = np.asarray(apply_color_lut(array, dataset), dtype=float), "RGB", 3
    expected = 3 if samples > 1 else 2
    if array.ndim == expected:  # a single frame decodes without the frame axis
        array = array[np.newaxis]
    if array.ndim != expected + 1 or array.shape[0] != count:
        raise FileFormatError(f"The pixel data of {name} has shape {array.shape}, which does not match its "
                              f"{count} frames of {samples} sample(s) per pixel.", "Export the cine again.")
    if samples == 1:
        from scanai.io.dicom import _apply_modality_lut, _stored_range

        values = _apply_modality_lut(array, dataset)
        if photometric == "MONOCHROME1":  # higher = brighter, as in MONOCHROME2
            low, high = _apply_modality_lut(np.asarray(_stored_range(dataset, array)), dataset)
            values = (low + high) - values
        return values.astype(np.float32)
    if array.shape[-1] != 3:
        raise FileFormatError(f"{name} has {array.shape[-1]} samples per pixel; grey or 3-channel colour is needed.")
    if photometric in _LUMA_FIRST:
        return array[..., 0].astype(np.float32)
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        array = convert_color_space(array, photometric, "RGB")
    elif photometric != "RGB":
        raise FileFormatError(f"{name} has the colour space {photometric}, which this reader does not convert.",
                              "Export the cine as grey-scale, RGB or YBR_FULL.")
    return (np.asarray(array, dtype=np.float64) @ _RGB_WEIGHTS).astype(np.float32)


def _first_item(dataset, keyword: str):
    sequence = dataset.get(keyword, None) if dataset is not None else None
    return sequence[0] if sequence else None


def _frame_attribute(frame_item, shared_item, dataset, group: str, keyword: str):
    """``keyword`` from a frame's functional group, else the shared one, else the top level (None when absent)."""
    for item in (frame_item, shared_item):
        inner = _first_item(item, group)
        if inner is not None and keyword in inner:
            return inner[keyword].value
    return dataset.get(keyword, None)


def _frame_planes(dataset, count: int) -> list[tuple]:
    """Per frame: (pixel spacing (row, col), ImageOrientationPatient, ImagePositionPatient), None where absent."""
    shared = _first_item(dataset, "SharedFunctionalGroupsSequence")
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence", None) or [])
    planes = []
    for number in range(count):
        item = per_frame[number] if number < len(per_frame) else None
        spacing = _frame_attribute(item, shared, dataset, "PixelMeasuresSequence", "PixelSpacing")
        orientation = _frame_attribute(item, shared, dataset, "PlaneOrientationSequence", "ImageOrientationPatient")
        position = _frame_attribute(item, shared, dataset, "PlanePositionSequence", "ImagePositionPatient")
        planes.append(tuple(None if value is None else tuple(float(v) for v in value)
                            for value in (spacing, orientation, position)))
    return planes


def _check_same_plane(planes: list[tuple], name: str) -> None:
    """GeometryError naming the first frame whose pixel spacing, orientation or position differs from frame 1."""
    first = planes[0]
    for number, plane in enumerate(planes[1:], start=2):
        for what, a, b in zip(("pixel spacing", "orientation", "position"), first, plane, strict=True):
            differs = (a is None) != (b is None) or (a is not None and not np.allclose(a, b, atol=1e-3))
            if differs:
                raise GeometryError(f"Frame {number} of {name} has another {what} than frame 1, so the frames do "
                                    "not lie on one image plane.",
                                    "Motion estimation needs a single-plane cine: export one slice location.")


def _ultrasound_spacing(dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from the largest 2-D ultrasound region calibrated in cm, or None."""
    best, best_area = None, -1.0
    for region in dataset.get("SequenceOfUltrasoundRegions", None) or []:
        if int(region.get("RegionSpatialFormat", 0) or 0) != 1:
            continue
        if int(region.get("PhysicalUnitsXDirection", 0) or 0) != 3 or \
                int(region.get("PhysicalUnitsYDirection", 0) or 0) != 3:
            continue
        dx, dy = abs(float(region.get("PhysicalDeltaX", 0) or 0)), abs(float(region.get("PhysicalDeltaY", 0) or 0))
        if not (np.isfinite(dx) and np.isfinite(dy) and dx > 0 and dy > 0):
            continue
        width = float(region.get("RegionLocationMaxX1", 0) or 0) - float(region.get("RegionLocationMinX0", 0) or 0)
        height = float(region.get("RegionLocationMaxY1", 0) or 0) - float(region.get("RegionLocationMinY0", 0) or 0)
        if width * height > best_area:
            best, best_area = (10.0 * dy, 10.0 * dx), width * height
    return best


def _multiframe_spacing(dataset, plane_spacing: tuple[float, ...] | None, name: str) -> tuple[float, float]:
    """(row, column) pixel spacing in mm: PixelSpacing, ImagerPixelSpacing, ultrasound regions, else 1 mm."""
    from scanai.io.dicom import pixel_spacing_of

    if plane_spacing is not None and len(plane_spacing) == 2 and all(np.isfinite(plane_spacing)) \
            and min(plane_spacing) > 0:
        return float(plane_spacing[0]), float(plane_spacing[1])
    spacing, source = pixel_spacing_of(dataset)
    if source != "unknown":
        return spacing
    spacing = _ultrasound_spacing(dataset)
    if spacing is not None:
        return spacing
    warnings.warn(f"{name} gives no pixel spacing; 1 mm x 1 mm is assumed, so distances are in pixels.",
                  UserWarning, stacklevel=3)
    return 1.0, 1.0


def _multiframe_geometry(plane: tuple, spacing: tuple[float, float], dataset) -> Geometry:
    """RAS geometry of the frames' plane; axis-aligned (ITK's default: i -> patient left, j -> posterior) at the
    origin when the file gives no orientation."""
    thickness = float(dataset.get("SliceThickness", 0) or 0)
    measures = _first_item(_first_item(dataset, "SharedFunctionalGroupsSequence"), "PixelMeasuresSequence")
    if measures is not None and measures.get("SliceThickness", None):
        thickness = float(measures.SliceThickness)
    spacing_mm = (spacing[1], spacing[0], abs(thickness) if thickness else 1.0)
    _, orientation, position = plane
    if orientation is not None and len(orientation) == 6:
        row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        normal = np.cross(row, column)
        if abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(column) - 1) < 1e-2 and \
                abs(float(row @ column)) < 1e-2:
            directions = LPS_TO_RAS @ np.column_stack([row, column, normal])
            origin = LPS_TO_RAS @ np.asarray(position if position is not None else (0.0, 0.0, 0.0))
            return Geometry(spacing_mm, tuple(origin), tuple(map(tuple, directions)))
    return Geometry(spacing_mm, (0.0, 0.0, 0.0), tuple(map(tuple, LPS_TO_RAS @ np.eye(3))))


def _frame_times_s(dataset, count: int, name: str) -> tuple[float, ...] | None:
    """Frame times in s from FrameTimeVector (ms increments), FrameTime (ms), or per-frame cardiac trigger delays;
    None when the file gives none (or they do not increase)."""
    candidates = []
    vector = dataset.get("FrameTimeVector", None)
    if vector is not None and len(vector) == count:
        increments = np.asarray([float(v) for v in vector])
        candidates.append(("FrameTimeVector", (np.cumsum(increments) - increments[0]) / 1000.0))
    frame_time = float(dataset.get("FrameTime", 0) or 0)
    if np.isfinite(frame_time) and frame_time > 0:
        candidates.append(("FrameTime", np.arange(count) * frame_time / 1000.0))
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence", None) or [])
    if len(per_frame) == count:
        delays = [_first_item(item, "CardiacSynchronizationSequence") for item in per_frame]
        if all(delay is not None and "NominalCardiacTriggerDelayTime" in delay for delay in delays):
            candidates.append(("NominalCardiacTriggerDelayTime",
                               np.asarray([float(d.NominalCardiacTriggerDelayTime) for d in delays]) / 1000.0))
    for source, times in candidates:
        if np.all(np.isfinite(times)) and np.all(np.diff(times) > 0):
            return tuple(float(t) for t in times)
        warnings.warn(f"The {source} of {name} does not give increasing frame times; it is ignored.", UserWarning,
                      stacklevel=3)
    return None


def read_multiframe_cine(path: str | Path) -> VolumeSequence:
    """Read a multi-frame DICOM file (echo cine, enhanced MR cine, XA run) as grey frames.

    Returns frames (T, 1, J, I) float32 (J rows, I columns): colour data as luminance (YBR_FULL/_422: the Y
    channel; RGB and other YBR spaces: 0.299 R + 0.587 G + 0.114 B; PALETTE COLOR through its LUT), grey data
    as Modality-LUT values (MONOCHROME1 inverted so higher = brighter). Index "time" in s from FrameTimeVector
    (0018,1065, ms between frames), FrameTime (0018,1063, ms per frame) or per-frame
    NominalCardiacTriggerDelayTime, else frame numbers (index "frame", no unit). Pixel spacing from
    PixelSpacing (top level or functional groups), ImagerPixelSpacing, or the 2-D ultrasound region's
    PhysicalDeltaX/Y (cm -> mm), else 1 mm with a warning. Geometry from ImageOrientationPatient /
    ImagePositionPatient (LPS -> RAS); axis-aligned at the origin when the file has no orientation.

    Raises :class:`FileFormatError` (missing, not DICOM, damaged, no pixel data, no decoder),
    :class:`InputError` (a single frame: motion needs at least 2) or :class:`GeometryError` (frames on
    different planes or grids, e.g. a multi-slice enhanced file).
    """
    from scanai.io.dicom import HEADER_ERRORS, damaged_header_error

    path = Path(path)
    dataset = _read_multiframe_dataset(path)
    try:
        return _multiframe_sequence(dataset, path)
    except ScanAIError:
        raise
    except HEADER_ERRORS as error:  # a header value pydicom cannot convert: a flipped byte or a cut file
        raise damaged_header_error(path, error, "cine") from error


def _multiframe_sequence(dataset, path: Path) -> VolumeSequence:
    """:func:`read_multiframe_cine` once the file is read: frames, geometry and frame times."""
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if count < 2:
        raise InputError(f"{path.name} holds a single frame; motion estimation needs at least 2 frames.",
                         "Load a multi-frame cine, or a folder with one image per cardiac phase.")
    planes = _frame_planes(dataset, count)
    _check_same_plane(planes, path.name)
    array, photometric = _decode_frames(dataset, path)
    grey = _grey_frames(array, photometric, dataset, count, path.name)
    spacing = _multiframe_spacing(dataset, planes[0][0], path.name)
    geometry = _multiframe_geometry(planes[0], spacing, dataset)
    times = _frame_times_s(dataset, count, path.name)
    frames = np.ascontiguousarray(grey[:, np.newaxis])
    if times is None:
        return VolumeSequence(frames, geometry, tuple(range(count)), "frame", "")
    return VolumeSequence(frames, geometry, times, "time", "s")
