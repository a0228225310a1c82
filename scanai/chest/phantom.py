"""A simple synthetic frontal chest radiograph with known anatomy and pixel size, and a DICOM writer for it.

The layout follows the digest's phantom (spec §6.4), simplified: coordinates are normalised (u = column / W,
v = row / H); the image is an additive "attenuation" map in MONOCHROME2 sense (bright = dense):

=================  ==========================================================  =====================
structure          geometry (u, v)                                             intensity
=================  ==========================================================  =====================
background air     -                                                           0.02
torso              ellipse, centre (0.50, 0.58), semi-axes (0.44, 0.52)        0.45
right lung         ellipse, centre (0.33, 0.48), semi-axes (0.12, 0.26)        -0.27 (image left)
left lung          ellipse, centre (0.67, 0.48), semi-axes (0.12, 0.26)        -0.27 (image right)
heart              ellipse, centre (0.54, 0.63), semi-axes (0.13, 0.11)        soft tissue again
spine              band centred on u = 0.50, width 0.06, vertebrae every 0.04  +0.25
ribs               9 arches per side, 0.016 thick                              +0.10
=================  ==========================================================  =====================

The image is blurred (Gaussian, ``blur_px``), noise is added (``noise_sigma``), and it is kept in [0, 1] so it
quantises to ``bits_stored`` bits without loss of range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Volume
from scanai.io.dicom import default_radiograph_geometry

AIR = 0.02
TISSUE = 0.45
LUNG_DROP = 0.27
BONE_SPINE = 0.25
BONE_RIB = 0.10
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


@dataclass(frozen=True)
class ChestPhantom:
    """image: (rows, cols) float64 in [0, 1], bright = dense; masks: name -> (rows, cols) bool ground truth;
    spacing_mm: pixel size (same along rows and columns)."""

    image: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    spacing_mm: float = 0.7

    def volume(self) -> Volume:
        """The image as a (1, rows, cols) float32 Volume with the default radiograph geometry."""
        geometry = default_radiograph_geometry(self.image.shape, (self.spacing_mm, self.spacing_mm))
        return Volume(self.image.astype(np.float32)[np.newaxis], geometry)


def ellipse_mask(u: np.ndarray, v: np.ndarray, centre: tuple[float, float], axes: tuple[float, float]
                 ) -> np.ndarray:
    """Pixels whose normalised (u, v) lie inside the ellipse with ``centre`` and semi-``axes``."""
    return ((u - centre[0]) / axes[0]) ** 2 + ((v - centre[1]) / axes[1]) ** 2 <= 1.0


def rib_arches(u: np.ndarray, v: np.ndarray, side: int, crests: np.ndarray, centre_offset: float = 0.15,
               radius: float = 0.16, half_thickness: float = 0.008, height_fraction: float = 0.75,
               lateral: tuple[float, float] = (0.035, 0.33)) -> np.ndarray:
    """Posterior-rib-like arches (upper parts of circles) lateral to the spine; side -1 = image left.

    crests: the v of each arch's top; the circles (``radius``) are centred ``centre_offset`` from the midline, kept
    down to ``height_fraction`` of the radius below the crest and between the ``lateral`` distances from it.
    """
    mask = np.zeros(u.shape, dtype=bool)
    centre_u = 0.50 + side * centre_offset
    for top in crests:
        distance = np.hypot(u - centre_u, v - (top + radius))
        arch = (np.abs(distance - radius) <= half_thickness) & (v <= top + radius * height_fraction)
        away = side * (u - 0.50)
        mask |= arch & (away >= lateral[0]) & (away <= lateral[1])
    return mask


def make_chest_phantom(size: int = 512, spacing_mm: float = 0.7, noise_sigma: float = 0.01,
                       blur_px: float = 1.2, seed: int = 0) -> ChestPhantom:
    """A ``size`` x ``size`` synthetic PA chest radiograph with pixel size ``spacing_mm`` (mm).

    Returns a :class:`ChestPhantom` whose masks are ``torso``, ``right_lung`` (image left), ``left_lung``,
    ``heart``, ``spine`` and ``ribs``. Deterministic for a given ``seed``.
    """
    from scipy.ndimage import gaussian_filter

    if int(size) < 32:
        raise InputError(f"The phantom needs at least 32 x 32 pixels, got {size}.", "Use a size of 256 or more.")
    if not (np.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"The pixel size must be a positive number of mm, got {spacing_mm}.")
    centres = (np.arange(int(size)) + 0.5) / int(size)
    v, u = np.meshgrid(centres, centres, indexing="ij")
    torso = ellipse_mask(u, v, (0.50, 0.58), (0.44, 0.52))
    heart = ellipse_mask(u, v, (0.54, 0.63), (0.13, 0.11))
    right_lung = ellipse_mask(u, v, (0.33, 0.48), (0.12, 0.26)) & ~heart
    left_lung = ellipse_mask(u, v, (0.67, 0.48), (0.12, 0.26)) & ~heart
    vertebra = (v % 0.04) > 0.006  # blocks every 0.04 separated by disc spaces
    spine = (np.abs(u - 0.50) <= 0.03) & vertebra & torso
    crests = [0.21 + 0.052 * k for k in range(9)]
    ribs = (rib_arches(u, v, -1, crests) | rib_arches(u, v, +1, crests)) & torso

    image = np.full(u.shape, AIR)
    image[torso] = TISSUE
    image[right_lung | left_lung] -= LUNG_DROP
    image[spine] += BONE_SPINE
    image[ribs & ~spine] += BONE_RIB
    image = gaussian_filter(image, float(blur_px)) if blur_px > 0 else image
    image = image + np.random.default_rng(seed).normal(0.0, float(noise_sigma), image.shape)
    masks = {"torso": torso, "right_lung": right_lung, "left_lung": left_lung, "heart": heart & torso,
             "spine": spine, "ribs": ribs}
    return ChestPhantom(np.clip(image, 0.0, 1.0), masks, float(spacing_mm))


def quantise(image: np.ndarray, bits_stored: int = 12) -> np.ndarray:
    """[0, 1] float image -> uint16 stored values 0 .. 2**bits_stored - 1 (rounded, clipped)."""
    if not 1 <= int(bits_stored) <= 16:
        raise InputError(f"Bits stored must be between 1 and 16, got {bits_stored}.")
    top = 2 ** int(bits_stored) - 1
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * top), 0, top).astype(np.uint16)


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{float(value):.8g}"


def write_phantom_dicom(phantom: ChestPhantom, path: str | Path, photometric: str = "MONOCHROME2",
                        bits_stored: int = 12, magnification: float = 1.1, seed: int = 0) -> Path:
    """Write the phantom as an uncompressed DX (for presentation) DICOM file; returns the path.

    MONOCHROME2 stores ``s = quantise(image)``; MONOCHROME1 stores ``2**bits_stored - 1 - s`` (the same picture,
    so a correct reader gives identical values for both). Both carry PixelSpacing = ``spacing_mm`` and
    ImagerPixelSpacing = ``spacing_mm * magnification`` with EstimatedRadiographicMagnificationFactor, so either
    spacing attribute yields the phantom's pixel size. Study/series UIDs depend only on ``seed``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    photometric = photometric.upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(f"Photometric interpretation must be MONOCHROME1 or MONOCHROME2, got {photometric}.")
    stored = quantise(phantom.image, bits_stored)
    if photometric == "MONOCHROME1":
        stored = (2 ** int(bits_stored) - 1 - stored).astype(np.uint16)
    entropy = ["scanai-chest-phantom", str(seed)]
    sop_uid = generate_uid(entropy_srcs=[*entropy, photometric])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*entropy, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, "series", photometric])
    ds.Modality = "DX"
    ds.Manufacturer = "ScanAI synthetic phantom"
    ds.PatientName = "Phantom^Chest"
    ds.PatientID = f"PHANTOM-{seed}"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PixelSpacing = [_ds(phantom.spacing_mm), _ds(phantom.spacing_mm)]
    ds.ImagerPixelSpacing = [_ds(phantom.spacing_mm * magnification)] * 2
    ds.EstimatedRadiographicMagnificationFactor = _ds(magnification)
    ds.PixelData = np.ascontiguousarray(stored).astype("<u2").tobytes()

    return _save_dicom(ds, path)


def _save_dicom(dataset, path: str | Path) -> Path:
    """Write ``dataset`` as a DICOM file (explicit VR little endian, preamble and meta), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        dataset.save_as(str(path), enforce_file_format=True)
    except TypeError:  # pydicom < 3
        dataset.is_little_endian, dataset.is_implicit_VR = True, False
        dataset.save_as(str(path), write_like_original=False)
    return path


def write_monochrome1_copy(source: str | Path, target: str | Path) -> Path:
    """Re-encode a grey MONOCHROME2 DICOM file as a true MONOCHROME1 copy of the same picture.

    The stored values ``s`` become ``2**BitsStored - 1 - s`` and the pixel data is written uncompressed, so a
    correct reader returns exactly the source's values. Only unsigned integer images are supported. Used by the
    demo and the tests to check inversion on a real radiograph.
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = pydicom.dcmread(str(source))
    if str(dataset.get("PhotometricInterpretation", "")).upper() != "MONOCHROME2":
        raise InputError("Only a MONOCHROME2 image can be re-encoded as MONOCHROME1.")
    if int(dataset.get("PixelRepresentation", 0)) != 0:
        raise InputError("Only unsigned pixel data can be re-encoded as MONOCHROME1 here.")
    stored = np.asarray(dataset.pixel_array)
    top = 2 ** int(dataset.BitsStored) - 1
    dtype = np.dtype("<u2") if int(dataset.BitsAllocated) > 8 else np.dtype("u1")
    inverted = (top - stored.astype(np.int64)).astype(dtype)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.PhotometricInterpretation = "MONOCHROME1"
    del dataset.PixelData  # the old element may be encapsulated (compressed); write a plain one
    dataset.add_new(0x7FE00010, "OW" if dtype.itemsize == 2 else "OB", np.ascontiguousarray(inverted).tobytes())
    return _save_dicom(dataset, target)
