"""Volume-sequence files: Slicer sequence NRRD (``.seq.nrrd``) and 4-D NRRD/NIfTI/MHA images.

A Slicer sequence NRRD has the frame list as its first axis and keeps the index name, unit and values in the
header, so Slicer's *Add data* loads it as a volume sequence; a 4-D image has time as its last axis.
"""

from __future__ import annotations

import gzip
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
    """Read a volume sequence (T, K, J, I) with RAS geometry from a file.

    - Slicer sequence NRRD (first axis a "list" of frames, e.g. written by :func:`write_sequence`): index name,
      unit and values come from the header (frame numbers 0..T-1 when absent).
    - 4-D NRRD/NIfTI/MHA whose last axis is time: index values are origin + n * spacing of that axis, taken as
      seconds (index "time", unit "s").
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

        values_text = meta("axis 0 index values", "")
        values = tuple(float(v) for v in values_text.split()) if values_text else tuple(range(frames.shape[0]))
        if len(values) != frames.shape[0]:
            raise FileFormatError(f"{name} lists {len(values)} index values for {frames.shape[0]} frames.")
        return VolumeSequence(np.ascontiguousarray(frames), geometry_of_sitk(image), values,
                              meta("axis 0 quantity", "time"), meta("axis 0 unit", "s"))
    if dimension != 4 or components != 1:
        raise FileFormatError(f"{name} is not an image sequence (it has {dimension} dimensions and {components} "
                              "value(s) per voxel).", formats)
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    directions = LPS_TO_RAS @ np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
    geometry = Geometry(tuple(spacing[:3]), tuple(LPS_TO_RAS @ np.asarray(origin[:3])), tuple(map(tuple, directions)))
    times = tuple(origin[3] + n * spacing[3] for n in range(array.shape[0]))
    return VolumeSequence(array, geometry, times, "time", "s")


def write_sequence(sequence: VolumeSequence, path: str | Path) -> Path:
    """Write a sequence: ``.seq.nrrd`` as a Slicer sequence NRRD (index kept), otherwise a 4-D image whose last
    axis is time (NRRD/NIfTI/MHA by extension; frame spacing 1, index values not kept). Returns the path."""
    path = Path(path)
    if path.name.endswith(".seq.nrrd"):
        return write_sequence_nrrd(sequence, path)
    import SimpleITK as sitk

    from scanai.io.sitk_image import to_sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.JoinSeries([to_sitk(sequence.frame(t)) for t in range(len(sequence))])
    sitk.WriteImage(image, str(path), useCompression=True)
    return path
