"""Load a chest radiograph (DICOM, PNG, JPEG, TIFF, BMP, or a single-slice NRRD/MHA/NIfTI) as a scalar volume.

Every reader returns a :class:`Radiograph`: a (1, rows, cols) float32 :class:`~scanai.core.image.Volume` of raw
intensities (higher = brighter, as displayed in MONOCHROME2), whether its pixel spacing is known, and the
metadata worth keeping. Plain image files (PNG, JPEG, ...) carry no trustworthy pixel size, so they get 1 mm
with ``spacing_known = False`` and the same default orientation as a DICOM radiograph without orientation
(columns toward the patient's left, rows toward the feet: upright in Slicer's coronal view).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.image import Volume
from scanai.io.dicom import default_radiograph_geometry, is_dicom_file, read_dicom_image

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz")

#: ITU-R BT.601 luma weights (as used by PIL's "L" mode) for converting RGB pictures to grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Radiograph:
    """A chest radiograph ready for preprocessing.

    image:         (1, rows, cols) float32 raw intensities, higher = brighter; geometry in RAS mm.
    spacing_known: False when the pixel size was not in the file and 1 mm was assumed (distances in mm are
                   then meaningless; dimensionless ratios are still valid).
    metadata:      ``format`` ("dicom" or "picture" or "volume"), ``source``, ``spacing_source`` and, for DICOM,
                   everything :func:`scanai.io.dicom.read_dicom_image` reports.
    """

    image: Volume
    spacing_known: bool
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """(row spacing, column spacing) in mm."""
        spacing = self.image.geometry.spacing_mm
        return spacing[1], spacing[0]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """(rows, cols) float64 grey values of a (rows, cols) or (rows, cols, channels) picture.

    RGB(A) uses the BT.601 luma weights; grey+alpha keeps the grey channel; alpha is ignored.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        return pixels.astype(np.float64)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"The picture has an unexpected pixel layout {pixels.shape}.",
                         "Save the radiograph as a grey-scale or RGB PNG and try again.")
    if pixels.shape[2] in (1, 2):
        return pixels[..., 0].astype(np.float64)
    return pixels[..., :3].astype(np.float64) @ np.asarray(LUMA_WEIGHTS)


def read_picture(path: str | Path) -> Radiograph:
    """Read a PNG/JPEG/TIFF/BMP radiograph: grey (colour converted by luminance), 1 mm spacing flagged unknown."""
    import SimpleITK as sitk

    from scanai.io.sitk_image import read_sitk

    path = Path(path)
    image = read_sitk(path, "a picture", "Use DICOM, PNG, JPEG or TIFF.")
    if image.GetDimension() != 2:
        raise InputError(f"{path.name} is not a 2-D picture (it has {image.GetDimension()} dimensions).",
                         "Choose a single 2-D radiograph.")
    grey = to_grey(sitk.GetArrayFromImage(image))
    geometry = default_radiograph_geometry(grey.shape, (1.0, 1.0))
    metadata = {"format": "picture", "source": str(path), "spacing_source": "unknown",
                "spacing_mm": (1.0, 1.0), "components": image.GetNumberOfComponentsPerPixel(),
                "orientation_source": "default (frontal radiograph)", "photometric_interpretation": "MONOCHROME2"}
    return Radiograph(Volume(grey.astype(np.float32)[np.newaxis], geometry), False, metadata)


def _read_single_slice_volume(path: Path) -> Radiograph:
    """A single-slice NRRD/MHA/NIfTI: geometry from the file, spacing taken as known."""
    from scanai.io.sitk_image import read_image

    volume = read_image(path)
    if volume.array.shape[0] != 1:
        raise InputError(f"{path.name} holds {volume.array.shape[0]} slices; a radiograph has one.",
                         "Choose a single 2-D radiograph.")
    metadata = {"format": "volume", "source": str(path), "spacing_source": "file header",
                "spacing_mm": (volume.geometry.spacing_mm[1], volume.geometry.spacing_mm[0]),
                "orientation_source": "file header"}
    return Radiograph(Volume(volume.array.astype(np.float32), volume.geometry), True, metadata)


def read_radiograph(path: str | Path) -> Radiograph:
    """Read a chest radiograph, choosing the reader by content (DICOM marker) and then by extension.

    DICOM: files with the ``DICM`` marker, a .dcm/.dicom/.dic extension, or no extension (tried as DICOM).
    Pictures: .png, .jpg, .jpeg, .tif, .tiff, .bmp. Single-slice volumes: .nrrd, .nhdr, .mha, .mhd, .nii(.gz).
    Raises FileFormatError for a missing file or an unsupported/unreadable one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The file {path} does not exist.", "Check the path and the file name.")
    suffix = _suffix(path)
    if is_dicom_file(path) or suffix in DICOM_SUFFIXES or suffix == "":
        volume, metadata = read_dicom_image(path)
        metadata = {"format": "dicom", "source": str(path), **metadata}
        return Radiograph(volume, metadata["spacing_source"] != "unknown", metadata)
    if suffix in PICTURE_SUFFIXES:
        return read_picture(path)
    if suffix in VOLUME_SUFFIXES:
        return _read_single_slice_volume(path)
    raise FileFormatError(f"{path.name} is not a supported radiograph file (extension '{suffix}').",
                          "Use a DICOM file (.dcm) or a PNG, JPEG or TIFF picture.")
