"""Load a chest radiograph (DICOM, PNG, JPEG, TIFF, BMP, or a single-slice NRRD/MHA/NIfTI) as a scalar volume.

Every reader returns a :class:`Radiograph`: a (1, rows, cols) float32 :class:`~scanai.core.image.Volume` of raw
intensities (higher = brighter, as displayed in MONOCHROME2), whether its pixel spacing is known, and the
metadata worth keeping. Plain image files (PNG, JPEG, ...) carry no trustworthy pixel size, so they get 1 mm
with ``spacing_known = False`` and the same default orientation as a DICOM radiograph without orientation
(columns toward the patient's left, rows toward the feet: upright in Slicer's coronal view).

Bad files are refused with a message that says what is wrong: an empty (0-byte) file, a truncated DICOM or JPEG
file, a colour picture (a radiograph saved as RGB with equal channels is accepted; see :func:`to_grey`), and a
volume with several slices.
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
#: A pixel is coloured when its channels differ by more than this fraction of the picture's value range ...
COLOUR_TOLERANCE = 0.04
#: ... and a picture is a colour image when more than this fraction of its pixels are coloured.
COLOUR_FRACTION = 0.01


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


def colour_fraction(pixels: np.ndarray) -> float:
    """Fraction of the pixels of a (rows, cols, 3+) picture whose R, G and B values differ noticeably.

    "Noticeably" means a spread (max - min over the three channels) above :data:`COLOUR_TOLERANCE` times the
    value range of the whole picture (about 10 grey levels of 255), so the small chroma errors of a grey picture
    saved as JPEG do not count. Alpha is ignored.
    """
    rgb = np.asarray(pixels)[..., :3].astype(np.float64)
    value_range = float(rgb.max() - rgb.min())
    if value_range <= 0:
        return 0.0
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float(np.mean(spread > COLOUR_TOLERANCE * value_range))


def to_grey(pixels: np.ndarray, name: str = "The picture") -> np.ndarray:
    """(rows, cols) float64 grey values of a (rows, cols) or (rows, cols, channels) picture.

    Grey, grey + alpha, and RGB(A) pictures whose channels are (nearly) equal (a radiograph stored as RGB) are
    accepted: RGB uses the BT.601 luma weights, alpha is ignored. A true colour picture (more than
    :data:`COLOUR_FRACTION` of the pixels coloured, see :func:`colour_fraction`) raises InputError: a photograph
    or a colour screenshot is not a radiograph, and grading it would be meaningless.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        return pixels.astype(np.float64)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{name} has an unexpected pixel layout {pixels.shape}.",
                         "Save the radiograph as a grey-scale PNG and try again.")
    if pixels.shape[2] in (1, 2):
        return pixels[..., 0].astype(np.float64)
    coloured = colour_fraction(pixels)
    if coloured > COLOUR_FRACTION:
        raise InputError(f"{name} is a colour image ({100 * coloured:.0f} % of its pixels are coloured), not a "
                         "grey-scale radiograph.",
                         "Load the original radiograph (DICOM from the PACS or scanner, or a grey-scale PNG "
                         "export), not a photograph, a colour screenshot or an annotated figure.")
    return pixels[..., :3].astype(np.float64) @ np.asarray(LUMA_WEIGHTS)


def _check_jpeg_complete(path: Path) -> None:
    """FileFormatError when a JPEG file was cut off: no end-of-image marker after its last scan.

    SimpleITK decodes a truncated JPEG without an error (the missing rows come out grey), which would be graded as
    if it were the whole radiograph.
    """
    data = path.read_bytes()
    if data[:2] != b"\xff\xd8":
        return  # not a JPEG stream; let the reader report it
    last_scan = data.rfind(b"\xff\xda")
    if data.rfind(b"\xff\xd9") < max(last_scan, 0):
        raise FileFormatError(f"{path.name} is incomplete: the JPEG data ends before the end of the image (the file "
                              "was probably cut off while copying or downloading).",
                              "Copy or export the radiograph again.")


def read_picture(path: str | Path) -> Radiograph:
    """Read a PNG/JPEG/TIFF/BMP radiograph: grey (grey stored as RGB converted by luminance; true colour refused),
    1 mm spacing flagged unknown."""
    import SimpleITK as sitk

    from scanai.io.sitk_image import read_sitk

    path = Path(path)
    if _suffix(path) in (".jpg", ".jpeg"):
        _check_jpeg_complete(path)
    image = read_sitk(path, "a picture", "Use DICOM, PNG, JPEG or TIFF.")
    if image.GetDimension() != 2:
        raise InputError(f"{path.name} is not a 2-D picture (it has {image.GetDimension()} dimensions).",
                         "Choose a single 2-D radiograph.")
    grey = to_grey(sitk.GetArrayFromImage(image), path.name)
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
        raise InputError(f"{path.name} is a 3-D volume ({volume.array.shape[0]} slices); a radiograph is one 2-D "
                         "image.", "Choose a single 2-D radiograph, or export one slice of the volume.")
    metadata = {"format": "volume", "source": str(path), "spacing_source": "file header",
                "spacing_mm": (volume.geometry.spacing_mm[1], volume.geometry.spacing_mm[0]),
                "orientation_source": "file header"}
    return Radiograph(Volume(volume.array.astype(np.float32), volume.geometry), True, metadata)


def read_radiograph(path: str | Path) -> Radiograph:
    """Read a chest radiograph, choosing the reader by content (DICOM marker) and then by extension.

    DICOM: files with the ``DICM`` marker, a .dcm/.dicom/.dic extension, or no extension (tried as DICOM).
    Pictures: .png, .jpg, .jpeg, .tif, .tiff, .bmp. Single-slice volumes: .nrrd, .nhdr, .mha, .mhd, .nii(.gz).
    Raises FileFormatError for a missing, empty, truncated, unsupported or unreadable file, and InputError for a
    colour picture, a multi-frame DICOM or a 3-D volume.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The file {path} does not exist.", "Check the path and the file name.")
    if path.stat().st_size == 0:
        raise FileFormatError(f"{path.name} is empty (0 bytes).",
                              "The copy or export failed; copy or export the radiograph again.")
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
