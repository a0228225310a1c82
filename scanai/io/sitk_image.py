"""SimpleITK <-> :class:`~scanai.core.image.Volume`, keeping geometry exact.

ITK works in LPS, Slicer in RAS: the first two physical axes change sign. SimpleITK arrays are (z, y, x),
the same (k, j, i) order as :class:`Volume`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError
from scanai.core.image import Geometry, Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(volume: Volume, dtype: type | None = None):
    """A ``SimpleITK.Image`` with the volume's voxels and geometry (optionally cast to ``dtype``)."""
    import SimpleITK as sitk

    array = volume.array if dtype is None else volume.array.astype(dtype)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry = volume.geometry
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(tuple(LPS_TO_RAS @ np.asarray(geometry.origin_mm)))
    image.SetDirection(tuple((LPS_TO_RAS @ np.asarray(geometry.directions)).ravel()))
    return image


def geometry_of_sitk(image) -> Geometry:
    """The RAS :class:`Geometry` of a 2-D or 3-D ``SimpleITK.Image`` (2-D gets unit slice spacing)."""
    dimension = image.GetDimension()
    spacing = list(image.GetSpacing()) + [1.0] * (3 - dimension)
    origin = list(image.GetOrigin()) + [0.0] * (3 - dimension)
    directions = np.eye(3)
    directions[:dimension, :dimension] = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    return Geometry(tuple(spacing), tuple(LPS_TO_RAS @ np.asarray(origin)), tuple(map(tuple, LPS_TO_RAS @ directions)))


def from_sitk(image) -> Volume:
    """A :class:`Volume` copy of a scalar 2-D or 3-D ``SimpleITK.Image``."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise FileFormatError("The image has several components per pixel (colour?); a grey-scale image is needed.")
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 2:
        array = array[np.newaxis]
    return Volume(array, geometry_of_sitk(image))


def read_sitk(path: str | Path, what: str = "an image", formats: str = "Use NRRD, NIfTI, MHA, PNG or DICOM."):
    """Open ``path`` with SimpleITK; a missing or unreadable file raises :class:`FileFormatError`.

    Checked first, because SimpleITK would read them as other values without an error: a NIfTI file's length and
    non-finite voxels (:func:`scanai.io.nifti_check.verify_nifti`), and the compressed voxel stream of an NRRD or
    MetaImage file (checksum, end and size: :func:`scanai.io.compressed_check.verify_compressed_image`).

    what:    what the file should be, for the message ("a dynamic PET series", ...).
    formats: what the user should give instead.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The file {path} does not exist.", "Check the path and the file name.")
    if path.name.lower().endswith((".nii", ".nii.gz")):  # SimpleITK would zero-fill a cut file and zero NaNs
        from scanai.io.nifti_check import verify_nifti

        verify_nifti(path)
    if path.name.lower().endswith((".nrrd", ".mha")):  # SimpleITK does not check the compressed stream's checksum
        from scanai.io.compressed_check import verify_compressed_image

        verify_compressed_image(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise FileFormatError(f"{path.name} could not be read as {what}: it may be damaged or of an unsupported "
                              "format.", formats) from error


def read_image(path: str | Path) -> Volume:
    """Read NRRD, NIfTI, MHA or a 2-D PNG/TIFF into a :class:`Volume` (RAS geometry)."""
    return from_sitk(read_sitk(path))


def write_image(volume: Volume, path: str | Path) -> Path:
    """Write a :class:`Volume` (NRRD/NIfTI/MHA by extension), compressed; returns the path."""
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(volume), str(path), useCompression=True)
    return path
