"""Writing motion results: warped sequence, displacement fields and a per-frame table.

Files written by :func:`write_motion_fields` into one folder:

- ``warped.seq.nrrd``: the frames resampled onto the reference (Slicer sequence NRRD, index as the input).
- ``displacement/frame_NNN.nrrd``: one ITK displacement field per frame (NNN = frame from 001; 3-component
  vectors, LPS mm, on the reference grid, pull-back convention). Loaded into Slicer as a transform it becomes a grid
  transform whose *FromParent* maps a reference point x to x + u(x) in frame NNN; the reference frame's field is
  zero.
- ``motion.csv``: per frame (numbered from 1), the index value, mean and maximum |u| in mm and the mean absolute
  intensity difference to the reference before and after warping.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.io.sequence_file import write_sequence_nrrd
from scanai.io.sitk_image import LPS_TO_RAS
from scanai.motion.registration import MotionFields


def write_displacement_field(displacement_mm: np.ndarray, geometry: Geometry, path: str | Path) -> Path:
    """Write one field (K, J, I, 3) of RAS mm vectors as an ITK displacement-field NRRD (LPS vectors)."""
    import SimpleITK as sitk

    field_array = np.asarray(displacement_mm, dtype=np.float64)
    if field_array.ndim != 4 or field_array.shape[-1] != 3:
        raise InputError(f"A displacement field must have shape (K, J, I, 3), got {field_array.shape}.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(field_array @ LPS_TO_RAS.T), isVector=True)
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(tuple(LPS_TO_RAS @ np.asarray(geometry.origin_mm)))
    image.SetDirection(tuple((LPS_TO_RAS @ np.asarray(geometry.directions)).ravel()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def write_displacement_sequence(displacement_mm: np.ndarray, sequence: VolumeSequence, path: str | Path) -> Path:
    """Write every frame's field (T, K, J, I, 3) RAS mm into one vector-volume sequence file (``.seq.nrrd``).

    Slicer's layout for a sequence of vector volumes: axes (vector, i, j, k, list), LPS vectors in mm (as an ITK
    displacement field), float32, uncompressed (the fields' float bits hardly compress, and gzip would cost
    as long as the rest of the writing); the list axis (axis 3 of the space axes) keeps the sequence's index name,
    unit and values, so Slicer's *Add data* loads it as a vector-volume sequence. :func:`read_displacement_sequence`
    reads it back.
    """
    field = np.asarray(displacement_mm)
    if field.ndim != 5 or field.shape[-1] != 3 or field.shape[:4] != sequence.frames.shape:
        raise InputError(f"The displacement fields have shape {field.shape}; the sequence needs "
                         f"{(*sequence.frames.shape, 3)}.")
    geometry = sequence.geometry
    axes = LPS_TO_RAS @ np.asarray(geometry.directions) * np.asarray(geometry.spacing_mm)
    count, k_size, j_size, i_size = sequence.frames.shape

    def vector(values) -> str:
        return "(" + ",".join(f"{float(v):.17g}" for v in values) + ")"

    header = [
        "NRRD0004", "type: float", "dimension: 5", "space: left-posterior-superior",
        f"sizes: 3 {i_size} {j_size} {k_size} {count}",
        "space directions: none " + " ".join(vector(axes[:, c]) for c in range(3)) + " none",
        "kinds: vector domain domain domain list",
        f'labels: "" "" "" "" "{sequence.index_name}"', f'units: "" "" "" "" "{sequence.index_unit}"',
        "endian: little", "encoding: raw", "space origin: " + vector(LPS_TO_RAS @ np.asarray(geometry.origin_mm)),
        "DataNodeClassName:=vtkMRMLVectorVolumeNode", "axis 3 index type:=numeric",
        f"axis 3 index values:={' '.join(f'{v:.17g}' for v in sequence.index_values)}",
    ]
    data = np.ascontiguousarray((field @ LPS_TO_RAS.T).astype("<f4"))  # (t, k, j, i, vector): vector fastest
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(("\n".join(header) + "\n\n").encode("ascii"))
        stream.write(data.tobytes())
    return path


def read_displacement_sequence(path: str | Path) -> tuple[np.ndarray, Geometry, tuple[float, ...]]:
    """Read a file of :func:`write_displacement_sequence`: ((T, K, J, I, 3) RAS mm float32, geometry, index values)."""
    path = Path(path)
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields = {}
    for line in head.decode("ascii", errors="replace").splitlines()[1:]:
        key, separator, value = line.partition(":=") if ":=" in line else line.partition(": ")
        if separator:
            fields[key.strip()] = value.strip()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        columns = [[float(v) for v in item.strip("()").split(",")]
                   for item in fields["space directions"].split()[1:4]]
        origin = [float(v) for v in fields["space origin"].strip("()").split(",")]
        values = tuple(float(v) for v in fields["axis 3 index values"].split())
        data = np.frombuffer(gzip.decompress(body) if fields["encoding"] == "gzip" else body, dtype="<f4")
        field = data.reshape(sizes[4], sizes[3], sizes[2], sizes[1], 3)
    except (KeyError, ValueError, OSError, EOFError) as error:
        raise FileFormatError(f"{path.name} is not a displacement sequence written by ScanAI, or it is damaged.",
                              "Write it again with scanai motion.") from error
    linear = LPS_TO_RAS @ np.asarray(columns).T
    spacing = np.linalg.norm(linear, axis=0)
    geometry = Geometry(tuple(spacing), tuple(LPS_TO_RAS @ np.asarray(origin)), tuple(map(tuple, linear / spacing)))
    return field @ LPS_TO_RAS.T, geometry, values


def read_displacement_field(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a field written by :func:`write_displacement_field`: ((K, J, I, 3) RAS mm, geometry)."""
    import SimpleITK as sitk

    from scanai.io.sitk_image import geometry_of_sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        array = array[np.newaxis]
    return array @ LPS_TO_RAS.T, geometry_of_sitk(image)


def motion_table(sequence: VolumeSequence, fields: MotionFields) -> list[dict[str, float]]:
    """One row per frame (``frame`` from 1): index value, mean/max |u| (mm), mean |frame - reference| before and
    after warping."""
    reference = np.asarray(sequence.frames[fields.reference_index], dtype=np.float64)
    magnitude = np.linalg.norm(fields.displacement_mm, axis=-1)
    rows = []
    for frame in range(len(sequence)):
        rows.append({
            "frame": frame + 1,
            f"{sequence.index_name}_{sequence.index_unit}".rstrip("_"): sequence.index_values[frame],
            "mean_displacement_mm": float(magnitude[frame].mean()),
            "max_displacement_mm": float(magnitude[frame].max()),
            "mean_abs_difference_before": float(np.abs(sequence.frames[frame] - reference).mean()),
            "mean_abs_difference_after": float(np.abs(fields.warped.frames[frame] - reference).mean()),
        })
    return rows


def write_table(rows: list[dict[str, float]], path: str | Path) -> Path:
    """Write dictionaries with identical keys as a CSV file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_motion_fields(sequence: VolumeSequence, fields: MotionFields, out_dir: str | Path) -> dict[str, Path]:
    """Write the warped sequence, one displacement NRRD per frame and ``motion.csv`` into ``out_dir``.

    Returns the paths: "warped", "table" and "displacement" (the folder of ``frame_NNN.nrrd`` files).
    """
    out_dir = Path(out_dir)
    paths = {"warped": write_sequence_nrrd(fields.warped, out_dir / "warped.seq.nrrd")}
    for frame in range(len(sequence)):
        write_displacement_field(fields.displacement_mm[frame], sequence.geometry,
                                 out_dir / "displacement" / f"frame_{frame + 1:03d}.nrrd")
    paths["displacement"] = out_dir / "displacement"
    paths["table"] = write_table(motion_table(sequence, fields), out_dir / "motion.csv")
    return paths
