"""Images that carry their geometry.

Arrays follow Slicer's ``arrayFromVolume`` order: ``(k, j, i)`` = (slices, rows, columns); a 2-D image is
``(1, rows, columns)``. :class:`Geometry` maps voxel indices ``(i, j, k)`` to patient RAS millimetres, exactly
as a ``vtkMRMLVolumeNode``'s IJKToRAS matrix does, so an output computed from an input keeps the input's
geometry by passing its ``Geometry`` along unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scanai.core.errors import GeometryError, InputError


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in RAS space.

    spacing_mm: voxel size along i, j, k (columns, rows, slices), in mm.
    origin_mm:  RAS position of the centre of voxel (0, 0, 0), in mm.
    directions: 3x3; column ``c`` is the RAS unit vector of index axis ``c`` (i, j, k).
    """

    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    directions: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise GeometryError(f"Voxel spacing must be three positive numbers in mm, got {self.spacing_mm}.")
        directions = np.asarray(self.directions, dtype=float)
        if directions.shape != (3, 3) or abs(np.linalg.det(directions)) < 1e-6:
            raise GeometryError("The image direction matrix must be an invertible 3x3 matrix.")
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", tuple(float(o) for o in self.origin_mm))
        object.__setattr__(self, "directions", tuple(tuple(float(v) for v in row) for row in directions))

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray) -> Geometry:
        """Build from a 4x4 IJK->RAS matrix (the columns hold direction times spacing)."""
        matrix = np.asarray(matrix, dtype=float)
        linear = matrix[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        return cls(tuple(spacing), tuple(matrix[:3, 3]), tuple(map(tuple, linear / spacing)))

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel indices (i, j, k, 1) to RAS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.directions) * np.asarray(self.spacing_mm)
        matrix[:3, 3] = self.origin_mm
        return matrix

    def ras_of_ijk(self, ijk: np.ndarray) -> np.ndarray:
        """RAS mm of voxel indices; ``ijk`` is (..., 3) in (i, j, k) order."""
        ijk = np.asarray(ijk, dtype=float)
        matrix = self.ijk_to_ras()
        return ijk @ matrix[:3, :3].T + matrix[:3, 3]

    def ijk_of_ras(self, ras: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (..., 3) in (i, j, k) order of RAS points (..., 3) in mm."""
        inverse = np.linalg.inv(self.ijk_to_ras())
        return np.asarray(ras, dtype=float) @ inverse[:3, :3].T + inverse[:3, 3]

    def is_close(self, other: Geometry, tolerance: float = 1e-4) -> bool:
        """True when both grids coincide to ``tolerance`` (relative to the voxel size)."""
        return not self.differences(other, tolerance)

    def differences(self, other: Geometry, tolerance: float = 1e-4) -> list[str]:
        """What differs from ``other`` beyond ``tolerance``, each with both values, e.g. ``"origin (0, 0, 0) mm vs
        (1.5, 0, 0) mm"`` (spacing and origin to the tolerance times the voxel size, directions to the tolerance)."""
        scale = tolerance * max(min(self.spacing_mm), 1e-6)
        found = []
        for name, mine, theirs, atol, unit in (("spacing", self.spacing_mm, other.spacing_mm, scale, " mm"),
                                               ("origin", self.origin_mm, other.origin_mm, scale, " mm"),
                                               ("direction", self.directions, other.directions, tolerance, "")):
            if not np.allclose(mine, theirs, atol=atol):
                found.append(f"{name} {_shown(mine)}{unit} vs {_shown(theirs)}{unit}")
        return found


def _shown(values) -> str:
    """Numbers (nested tuples) with 4 significant digits, e.g. ``(0.7, 0.7, 2.5)``."""
    if isinstance(values, tuple | list):
        return "(" + ", ".join(_shown(v) for v in values) + ")"
    return f"{float(values):.4g}"


def grid_differences(shape: tuple[int, ...], geometry: Geometry | None, other_shape: tuple[int, ...],
                     other_geometry: Geometry | None) -> str:
    """What differs between two grids, each field with both values ("size (4, 16, 16) vs (4, 16, 18); origin ..."),
    or "" when they coincide (geometries are compared only when both are given)."""
    found = [f"size {tuple(shape)} vs {tuple(other_shape)}"] if tuple(shape) != tuple(other_shape) else []
    if geometry is not None and other_geometry is not None:
        found += geometry.differences(other_geometry)
    return "; ".join(found)


def _checked_array(array: np.ndarray, what: str, ndim: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim:
        raise InputError(f"{what} must have {ndim} dimensions, got shape {array.shape}.")
    if array.size == 0:
        raise InputError(f"{what} is empty (shape {array.shape}).")
    return array


@dataclass(frozen=True)
class Volume:
    """A scalar image: ``array`` (k, j, i) with its :class:`Geometry`."""

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)

    def __post_init__(self) -> None:
        object.__setattr__(self, "array", _checked_array(self.array, "A volume", 3))

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume on the same grid (``array`` must have the same shape)."""
        if np.shape(array)[:3] != self.array.shape:
            raise GeometryError(f"Result shape {np.shape(array)} does not match the input grid {self.array.shape}.")
        return Volume(array, self.geometry)


@dataclass(frozen=True)
class VolumeSequence:
    """Frames on one grid: ``frames`` (t, k, j, i), with the sequence index (e.g. time) of each frame.

    index_values: one number per frame (for time, the frame time in ``index_unit``).
    index_name / index_unit: as in a Slicer sequence node ("time", "s").
    """

    frames: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    index_values: tuple[float, ...] = ()
    index_name: str = "time"
    index_unit: str = "s"

    def __post_init__(self) -> None:
        frames = _checked_array(self.frames, "A volume sequence", 4)
        values = tuple(float(v) for v in self.index_values) or tuple(float(i) for i in range(frames.shape[0]))
        if len(values) != frames.shape[0]:
            raise InputError(f"The sequence has {frames.shape[0]} frames but {len(values)} index values.")
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "index_values", values)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def frame(self, index: int) -> Volume:
        return Volume(self.frames[index], self.geometry)

    @classmethod
    def from_volumes(cls, volumes: Sequence[Volume], index_values: Sequence[float] = (), index_name: str = "time",
                     index_unit: str = "s") -> VolumeSequence:
        """Stack volumes that share one grid; raises :class:`GeometryError` naming the first that differs."""
        if not volumes:
            raise InputError("The sequence has no frames.")
        first = volumes[0]
        for number, volume in enumerate(volumes[1:], start=2):
            differ = grid_differences(volume.array.shape, volume.geometry, first.array.shape, first.geometry)
            if differ:
                raise GeometryError(
                    f"Frame {number} of the sequence lies on a different grid than frame 1 ({differ}).",
                    "Resample all frames onto one grid (e.g. with the Resample Scalar/Vector/DWI Volume "
                    "module) before running this tool.",
                )
        return cls(np.stack([v.array for v in volumes]), first.geometry, tuple(index_values), index_name, index_unit)


def mask_on_grid(mask: Volume | np.ndarray | None, shape: tuple[int, ...], geometry: Geometry | None = None,
                 what: str = "mask", label: int | None = None) -> np.ndarray:
    """``mask`` as a bool array of ``shape`` (k, j, i) on the grid ``geometry``; None means every voxel.

    A :class:`Volume` must have the same size and geometry, a plain array the same size (else
    :class:`GeometryError`); voxels equal to ``label`` (or any non-zero voxel) count. An empty mask is an
    :class:`InputError`. ``what`` names the mask in messages (e.g. "blood-pool mask").
    """
    from scanai.core.errors import GeometryError, InputError

    shape = tuple(shape)
    if mask is None:
        return np.ones(shape, dtype=bool)
    array = np.asarray(mask.array if isinstance(mask, Volume) else mask)
    differ = grid_differences(array.shape, mask.geometry if isinstance(mask, Volume) else None, shape, geometry)
    if differ:
        raise GeometryError(f"The {what} lies on another grid than the image ({what} vs image: {differ}).",
                            "Draw the mask on the image, or resample it onto the image grid first.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"The {what} must hold numbers or booleans, got {array.dtype}.")
    inside = (array == label) if label is not None else (np.nan_to_num(array) != 0)
    if not inside.any():
        which = f"label {label}" if label is not None else "any voxel"
        raise InputError(f"The {what} is empty (no {which} is set).",
                         "Draw or choose a mask that covers the region (or choose the right label).")
    return inside
