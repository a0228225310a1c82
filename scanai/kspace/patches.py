"""Division of k-space into equal patches, as in the patent (US 12386002, step 320).

Patches tile the (ky, kx) plane with a fixed size; when a dimension is not a multiple of the size, the last row
(or column) of patches is moved back so that it ends at the border and overlaps its neighbour, keeping every
patch the same size. The patent's example: a 426 x 1024 k-space gives 14 x 32 = 448 patches of 32 x 32, the
last patch row starting at line 394.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError

DEFAULT_PATCH_SIZE = 32


def tile_starts(length: int, size: int = DEFAULT_PATCH_SIZE) -> np.ndarray:
    """Start indices of the patches along one axis of ``length`` samples (the last one ends at the border)."""
    if size < 1 or length < size:
        raise InputError(f"A k-space axis of {length} samples cannot hold patches of {size} samples.",
                         "Choose a smaller patch size.")
    starts = np.arange(0, length - size + 1, size)
    if starts[-1] + size < length:
        starts = np.append(starts, length - size)
    return starts


@dataclass(frozen=True)
class PatchGrid:
    """Patches of ``size`` x ``size`` over a (ky, kx) plane of ``shape``.

    rows, cols: start line / start sample of each patch row / column (see :func:`tile_starts`).
    """

    shape: tuple[int, int]
    size: int
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def over(cls, shape: tuple[int, int], size: int = DEFAULT_PATCH_SIZE) -> PatchGrid:
        return cls((int(shape[0]), int(shape[1])), int(size), tile_starts(shape[0], size), tile_starts(shape[1], size))

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def anchors(self) -> np.ndarray:
        """(P, 2) upper-left (ky, kx) of every patch, row-major."""
        rows, cols = np.meshgrid(self.rows, self.cols, indexing="ij")
        return np.stack([rows.ravel(), cols.ravel()], axis=1)

    def centres(self) -> np.ndarray:
        """(P, 2) centre (ky, kx) of every patch, in samples (may be half-integer)."""
        return self.anchors() + (self.size - 1) / 2.0

    def extract(self, plane: np.ndarray) -> np.ndarray:
        """Patches of a (..., ky, kx) array as (P, ..., size, size) (a copy)."""
        plane = np.asarray(plane)
        if plane.shape[-2:] != self.shape:
            raise InputError(f"The array has (ky, kx) = {plane.shape[-2:]}, the patch grid was made for {self.shape}.")
        return np.stack([plane[..., r:r + self.size, c:c + self.size] for r, c in self.anchors()])

    def absolute(self, patch_index: int, local: np.ndarray) -> np.ndarray:
        """Absolute (ky, kx) of in-patch positions ``local`` (n, 2) of patch ``patch_index`` (anchor + local)."""
        return self.anchors()[patch_index] + np.asarray(local, dtype=int).reshape(-1, 2)

    def patch_of(self, ky: int, kx: int) -> list[int]:
        """Indices of every patch that contains sample (ky, kx) (several where patches overlap)."""
        anchors = self.anchors()
        inside = ((anchors[:, 0] <= ky) & (ky < anchors[:, 0] + self.size) & (anchors[:, 1] <= kx)
                  & (kx < anchors[:, 1] + self.size))
        return list(np.flatnonzero(inside))

    def radius(self) -> np.ndarray:
        """(P,) distance of each patch centre from the k-space centre (ky // 2, kx // 2), in samples."""
        centre = np.array([self.shape[0] // 2, self.shape[1] // 2])
        return np.linalg.norm(self.centres() - centre, axis=1)
