"""Volume-sequence files: Slicer sequence NRRD (``.seq.nrrd``) and 4-D NRRD/NIfTI/MHA images.

A Slicer sequence NRRD has the frame list as its first axis and keeps the index name, unit and values in the
header, so Slicer's *Add data* loads it as a volume sequence; a 4-D image has time as its last axis.

A 4-D NIfTI stores evenly spaced frame times only: the time of frame ``n`` is ``toffset + n * pixdim[4]`` in
the time unit of ``xyzt_units`` (s, ms or us). :func:`read_sequence` takes those as the index (in s) when the
header has a time unit and a positive ``pixdim[4]``, else frame numbers (index "frame", no unit);
:func:`write_sequence` writes them back so that a NIfTI round trip keeps evenly spaced times.
"""

from __future__ import annotations

import gzip
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError
from scanai.core.image import Geometry, VolumeSequence
from scanai.io.sitk_image import LPS_TO_RAS, geometry_of_sitk, read_sitk

_NRRD_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int16): "short",
               np.dtype(np.uint16): "ushort", np.dtype(np.uint8): "uchar", np.dtype(np.int32): "int"}


def _vector_text(values: Sequence[float]) -> str:
    return "(" + ",".join(f"{float(v):.17g}" for v in values) + ")"


def _quoted(text: str) -> str:
    """A NRRD per-axis string field value (``labels``, ``units``): in double quotes, quotes escaped."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_sequence_nrrd(sequence: VolumeSequence, path: str | Path, compress: bool = True) -> Path:
    """Write a Slicer sequence NRRD (``.seq.nrrd``): axes (frame, i, j, k), LPS space, gzip (raw when ``compress``
    is False: larger, but written several times faster).

    The header keeps the index values (``axis 0 index values``) and the index name and unit in the list axis's
    standard ``labels`` and ``units`` fields, where Slicer's sequence reader takes them, so Slicer loads the file
    as a volume sequence with the same index, and :func:`read_sequence` restores the same :class:`VolumeSequence`
    (float64 is kept, other types as is).
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
        f"labels: {_quoted(sequence.index_name)} \"\" \"\" \"\"",
        f"units: {_quoted(sequence.index_unit)} \"\" \"\" \"\"",
        "endian: little",
        f"encoding: {'gzip' if compress else 'raw'}",
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
        stream.write(gzip.compress(little.tobytes(), compresslevel=1) if compress else little.tobytes())
    return path


def read_sequence(path: str | Path) -> VolumeSequence:
    """Read a volume sequence (T, K, J, I) with RAS geometry from a file.

    - Slicer sequence NRRD (first axis a "list" of frames, e.g. written by :func:`write_sequence`): index name,
      unit and values come from the header (frame numbers 0..T-1 when absent).
    - 4-D NRRD/MHA whose last axis is time: index values are origin + n * spacing of that axis, taken as
      seconds (index "time", unit "s").
    - 4-D NIfTI: index values ``toffset + n * pixdim[4]`` converted to s by the time unit of ``xyzt_units``
      (index "time", unit "s"); frame numbers 0..T-1 (index "frame", no unit) when the header has no time unit
      or no positive ``pixdim[4]`` (see :func:`nifti_time_axis`). A 4-D NIfTI of one frame reads as one frame.
    Raises :class:`FileFormatError` for a missing, unreadable or non-sequence file.
    """
    import SimpleITK as sitk

    formats = "Use a 4-D NRRD/NIfTI whose last axis is time, or a Slicer .seq.nrrd file."
    image = read_sitk(path, "an image sequence", formats)
    name = Path(path).name
    dimension, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(image)
    if components > 1 and dimension in (2, 3):
        frames = np.moveaxis(array, -1, 0)  # a list axis comes back as pixel components
        if dimension == 2:
            frames = frames[:, np.newaxis]
        keys = set(image.GetMetaDataKeys())

        def meta(key: str, default: str) -> str:
            return image.GetMetaData(key).strip() if key in keys else default

        # the list axis is axis 0 in files written here and the last axis in files Slicer writes
        values_key = next((key for key in sorted(keys) if re.fullmatch(r"axis \d+ index values", key)), "")
        values_text = meta(values_key, "")
        values = _index_values(values_text, name) if values_text else tuple(range(frames.shape[0]))
        if len(values) != frames.shape[0]:
            raise FileFormatError(f"{name} lists {len(values)} index values for {frames.shape[0]} frames.")
        index_name = meta("NRRD_labels[pixel]", "") or meta("axis 0 quantity", "time")  # older files: custom keys
        index_unit = meta("NRRD_units[pixel]", "") if "NRRD_labels[pixel]" in keys else meta("axis 0 unit", "s")
        return VolumeSequence(np.ascontiguousarray(frames), geometry_of_sitk(image), values, index_name, index_unit)
    if dimension == 3 and components == 1 and _is_nifti(path) and _nifti_dimensions(path) == 4:
        array = array[np.newaxis]  # a 4-D NIfTI of one frame: ITK drops the time axis of size 1
        image = sitk.JoinSeries([image])
        dimension = 4
    if dimension != 4 or components != 1:
        raise FileFormatError(f"{name} is not an image sequence (it has {dimension} dimensions and {components} "
                              "value(s) per voxel).", formats)
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    directions = LPS_TO_RAS @ np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
    geometry = Geometry(tuple(spacing[:3]), tuple(LPS_TO_RAS @ np.asarray(origin[:3])), tuple(map(tuple, directions)))
    if _is_nifti(path):
        axis = nifti_time_axis(path)
        if axis is None:
            return VolumeSequence(array, geometry, tuple(range(array.shape[0])), "frame", "")
        start, step = axis
        return VolumeSequence(array, geometry, tuple(start + n * step for n in range(array.shape[0])), "time", "s")
    times = tuple(origin[3] + n * spacing[3] for n in range(array.shape[0]))
    return VolumeSequence(array, geometry, times, "time", "s")


def _index_values(text: str, name: str) -> tuple[float, ...]:
    """The finite numbers of a sequence NRRD's ``axis N index values`` field; FileFormatError when one is not."""
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError as error:
        raise FileFormatError(f"{name} is damaged: its header's frame index values are not all numbers ({error}).",
                              "Copy or export the sequence again.") from error
    if not all(np.isfinite(values)):
        raise FileFormatError(f"{name} is damaged: its header's frame index values are not all finite numbers.",
                              "Copy or export the sequence again.")
    return values


# ------------------------------------------------------------------------------------ NIfTI time axis

#: NIfTI ``xyzt_units`` time codes (bits 3-5) -> seconds per unit.
_NIFTI_TIME_UNITS_S = {8: 1.0, 16: 1e-3, 24: 1e-6}
#: Seconds per unit of the time units a :class:`VolumeSequence` index may carry.
_INDEX_UNITS_S = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "min": 60.0}


def _is_nifti(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _nifti_layout(head: bytes) -> tuple[str, int] | None:
    """(struct byte order, header size 348 or 540) of a NIfTI-1/NIfTI-2 header, or None."""
    if len(head) < 348:
        return None
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0]
        if size == 348 or (size == 540 and len(head) >= 540):
            return order, size
    return None


def _nifti_time_fields(head: bytes) -> tuple[float, float, int] | None:
    """(pixdim[4], toffset, xyzt_units) of a NIfTI-1 or NIfTI-2 header, or None when ``head`` is not one."""
    layout = _nifti_layout(head)
    if layout is None:
        return None
    order, size = layout
    if size == 348:  # NIfTI-1: float pixdim[8] at 76, char xyzt_units at 123, float toffset at 136
        return struct.unpack(order + "f", head[92:96])[0], struct.unpack(order + "f", head[136:140])[0], head[123]
    # NIfTI-2: double pixdim[8] at 104, double toffset at 216, int xyzt_units at 500
    return (struct.unpack(order + "d", head[136:144])[0], struct.unpack(order + "d", head[216:224])[0],
            struct.unpack(order + "i", head[500:504])[0])


def _open_nifti(path: Path, mode: str = "rb"):
    return gzip.open(path, mode) if path.name.lower().endswith(".gz") else open(path, mode)


def nifti_time_axis(path: str | Path) -> tuple[float, float] | None:
    """(time of the first frame, time step), both in s, of a 4-D NIfTI file's fourth axis.

    From ``toffset`` and ``pixdim[4]`` scaled by the time unit of ``xyzt_units`` (s, ms, us). None when the
    header gives no time unit, or a step that is not a positive number (the frames are then just numbered).
    """
    try:
        with _open_nifti(Path(path)) as stream:
            head = stream.read(540)
    except (OSError, EOFError) as error:
        raise FileFormatError(f"The NIfTI header of {Path(path).name} could not be read ({error}).",
                              "Check that the file is complete.") from error
    fields = _nifti_time_fields(head)
    if fields is None:
        return None
    step, offset, units = fields
    scale = _NIFTI_TIME_UNITS_S.get(int(units) & 0x38)
    if scale is None or not np.isfinite(step) or step <= 0:
        return None
    offset = float(offset) if np.isfinite(offset) else 0.0
    return offset * scale, float(step) * scale


def _nifti_dimensions(path: str | Path) -> int | None:
    """``dim[0]`` (the number of dimensions) of a NIfTI-1/NIfTI-2 header, or None when it is not one."""
    with _open_nifti(Path(path)) as stream:
        head = stream.read(540)
    layout = _nifti_layout(head)
    if layout is None:
        return None
    order, size = layout
    if size == 348:
        return int(struct.unpack(order + "h", head[40:42])[0])
    return int(struct.unpack(order + "q", head[16:24])[0])


def _set_nifti_time_unit(path: Path, code: int) -> None:
    """Set the time bits of a NIfTI file's ``xyzt_units`` to ``code`` (0: no time unit, 8: s), in place."""
    with _open_nifti(path) as stream:
        data = bytearray(stream.read())
    layout = _nifti_layout(bytes(data[:540]))
    if layout is None:
        return
    order, size = layout
    if size == 348:
        data[123] = (data[123] & 0x07) | code
    else:
        units = struct.unpack(order + "i", data[500:504])[0]
        data[500:504] = struct.pack(order + "i", (units & 0x07) | code)
    if path.name.lower().endswith(".gz"):
        path.write_bytes(gzip.compress(bytes(data), compresslevel=1))
    else:
        path.write_bytes(bytes(data))


def even_time_axis(sequence: VolumeSequence) -> tuple[float, float] | None:
    """(first time, step) in s when the sequence's index is a time with evenly spaced values, else None.

    Evenly spaced: every value lies within 1 % of a step of ``first + n * step`` (a single frame has step 1 s).
    """
    scale = _INDEX_UNITS_S.get(sequence.index_unit.strip().lower())
    if scale is None:
        return None
    values = np.asarray(sequence.index_values, dtype=float) * scale
    if values.size == 1:
        return float(values[0]), 1.0
    step = (values[-1] - values[0]) / (values.size - 1)
    if step <= 0 or np.max(np.abs(values - (values[0] + step * np.arange(values.size)))) > 0.01 * step:
        return None
    return float(values[0]), float(step)


def write_sequence(sequence: VolumeSequence, path: str | Path) -> Path:
    """Write a sequence: ``.seq.nrrd`` as a Slicer sequence NRRD (index kept), otherwise a 4-D image whose last
    axis is time (NRRD/NIfTI/MHA by extension). Returns the path.

    A 4-D image keeps evenly spaced times (index unit s, ms, us or min; stored in s as the first time and the
    step, see :func:`even_time_axis`). Other indexes are stored as frame numbers (spacing 1; a NIfTI file gets
    no time unit, so it reads back as frame numbers), and so are uneven times, e.g. PET frames (use
    ``.seq.nrrd`` to keep them, or a timing sidecar).
    """
    path = Path(path)
    if path.name.endswith(".seq.nrrd"):
        return write_sequence_nrrd(sequence, path)
    import SimpleITK as sitk

    from scanai.io.sitk_image import to_sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    axis = even_time_axis(sequence)
    start, step = axis if axis is not None else (0.0, 1.0)
    image = sitk.JoinSeries([to_sitk(sequence.frame(t)) for t in range(len(sequence))], start, step)
    sitk.WriteImage(image, str(path), useCompression=True)
    if _is_nifti(path):
        _set_nifti_time_unit(path, 8 if axis is not None else 0)
    return path
