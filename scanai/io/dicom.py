"""Single-frame 2-D DICOM images (radiographs, secondary captures) -> :class:`~scanai.core.image.Volume`.

The reader returns the pixel values a viewer would start from: the Modality LUT (RescaleSlope/Intercept or a
Modality LUT Sequence) is applied, and MONOCHROME1 images (low value = white) are inverted so that, as in
MONOCHROME2, a higher value is brighter.

Decisions (documented because DICOM leaves them to the reader):

- **MONOCHROME1 inversion** is relative to the *representable* range of the stored values, not to the data's own
  minimum and maximum: an unsigned ``BitsStored = b`` value ``s`` becomes ``2**b - 1 - s`` (signed:
  ``-1 - s``), then the Modality LUT maps it. A MONOCHROME1 file whose stored values are ``2**b - 1 - s``
  therefore reads back *exactly* as the MONOCHROME2 file that stores ``s``, independent of the image content.
  Float pixel data (no BitsStored) is inverted about ``min + max`` of the data.
- **Pixel spacing**: ``PixelSpacing`` first (calibrated to the patient when present). Else ``ImagerPixelSpacing``
  (measured at the detector), divided by ``EstimatedRadiographicMagnificationFactor`` when that is given, as
  DICOM PS3.3 C.8.11.7 describes, so that distances refer to the patient rather than the detector. Else 1 mm,
  with ``metadata["spacing_source"] == "unknown"``.
- **Orientation**: ``ImageOrientationPatient``/``ImagePositionPatient`` when present (LPS -> RAS). Else the two
  letters of ``PatientOrientation`` (e.g. ``L\\F``: columns run toward the patient's left, rows toward the feet).
  Else the default of a frontal radiograph (:func:`default_radiograph_geometry`): columns toward the patient's
  left, rows toward the feet, so the image shows upright with the patient's right on the screen's left in
  Slicer's coronal (Green) view, exactly as a PA chest film is read. The pixels are never reordered.
- **Damaged files**: a file that fails is diagnosed from its structure (:func:`dicom_damage`): one cut off while
  copying is named *incomplete* (its pixel data shorter than its header announces, a missing end delimiter, an
  element or the file meta group cut short), told apart from a whole DICOM object that holds no image (a report);
  a header value pydicom cannot convert is named *damaged*. DICOM has no checksum: a flipped bit inside the pixel
  data, or one that turns a header value into another valid value, cannot be noticed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError, ScanAIError
from scanai.core.image import Geometry, Volume
from scanai.io.sitk_image import LPS_TO_RAS

#: RAS unit vectors of the DICOM patient-orientation letters (DICOM letters are patient directions).
ORIENTATION_LETTERS_RAS: dict[str, tuple[float, float, float]] = {
    "L": (-1.0, 0.0, 0.0), "R": (1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0), "P": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0),
}

#: Default directions of a frontal radiograph, columns of the matrix = RAS direction of index axes i, j, k:
#: i (along a row) -> patient left, j (down the rows) -> feet, k = i x j -> posterior.
RADIOGRAPH_DIRECTIONS: tuple[tuple[float, float, float], ...] = (
    (-1.0, 0.0, 0.0),
    (0.0, 0.0, -1.0),
    (0.0, -1.0, 0.0),
)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")

#: Image storage SOP classes (CR; DX, mammography and intra-oral; secondary capture, single- and multi-frame; CT, MR,
#: ultrasound, XA, NM, PET): such a file without pixel data was cut off, it is not a report.
IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.1.3",
    "1.2.840.10008.5.1.4.1.1.1.3.1", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.128"})
#: Exceptions pydicom raises while converting or decoding a damaged header value.
HEADER_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, NotImplementedError, OverflowError)
_CUT = "so the file was probably cut off while copying or downloading"
#: Header attributes every image of a series (cine, dynamic PET) needs, with how many numbers each holds.
GEOMETRY_NUMBERS = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2, "Rows": 1,
                    "Columns": 1}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_DATA_TAG = 0x7FE00010



def header_numbers_problem(dataset: Any, optional: tuple[str, ...] = ()) -> str | None:
    """Words for the first header number of a series image that cannot be read or is not finite ("is damaged: its
    PixelSpacing is not 2 finite number(s)"), or None: the :data:`GEOMETRY_NUMBERS` and, where present, the
    ``optional`` ones. A flipped byte or a cut header shows here, before any pixel is read."""
    keyword = ""
    try:
        for keyword, count in GEOMETRY_NUMBERS.items():
            value = dataset.get(keyword)
            values = [float(v) for v in (value if count > 1 else [value])]
            if len(values) != count or not np.all(np.isfinite(values)):
                return f"is damaged: its {keyword} is not {count} finite number(s)"
        for keyword in optional:
            value = dataset.get(keyword, None)
            if value not in (None, "") and not np.isfinite(float(value)):
                return f"is damaged: its {keyword} is not a finite number"
        keyword = "SeriesInstanceUID"
        str(dataset.get(keyword, ""))
    except HEADER_ERRORS as error:
        text = " ".join(str(error).split())
        return f"is damaged: its {keyword or 'header'} cannot be read ({type(error).__name__}" + \
            (f": {text[:80]})" if text else ")")
    return None

def default_radiograph_geometry(shape: tuple[int, int], spacing_mm: tuple[float, float],
                                directions: tuple[tuple[float, float, float], ...] = RADIOGRAPH_DIRECTIONS
                                ) -> Geometry:
    """Geometry of a 2-D image of ``shape`` (rows, cols) with ``spacing_mm`` (row spacing, column spacing).

    The image centre is placed at the RAS origin; the slice axis gets 1 mm. With the default ``directions``
    the image appears upright in Slicer's coronal view (patient's right on the screen's left).
    """
    rows, cols = int(shape[0]), int(shape[1])
    spacing = (float(spacing_mm[1]), float(spacing_mm[0]), 1.0)
    matrix = np.asarray(directions, dtype=float)
    centre_ijk = np.array([(cols - 1) / 2.0, (rows - 1) / 2.0, 0.0])
    origin = -(matrix * np.asarray(spacing)) @ centre_ijk
    return Geometry(spacing, tuple(origin), directions)


def is_dicom_file(path: str | Path) -> bool:
    """True when the file carries the DICOM Part 10 marker ``DICM`` after its 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _text(dataset: Any, keyword: str, default: str = "") -> str:
    """A DICOM attribute as plain text ('' when absent or empty); multi-valued attributes joined by '\\'."""
    value = dataset.get(keyword, None)
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _positive_pair(value: Any) -> tuple[float, float] | None:
    """Two positive finite floats from a DS pair, or None."""
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(pair) != 2 or not all(np.isfinite(v) and v > 0 for v in pair):
        return None
    return pair  # type: ignore[return-value]


def pixel_spacing_of(dataset: Any) -> tuple[tuple[float, float], str]:
    """(row spacing, column spacing) in mm and where it came from.

    Sources, in order: ``"PixelSpacing"``; ``"ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"``;
    ``"ImagerPixelSpacing"`` (detector plane, no magnification given); ``"unknown"`` (1 mm, 1 mm).
    """
    spacing = _positive_pair(dataset.get("PixelSpacing", None))
    if spacing is not None:
        return spacing, "PixelSpacing"
    spacing = _positive_pair(dataset.get("ImagerPixelSpacing", None))
    if spacing is not None:
        try:
            magnification = float(dataset.get("EstimatedRadiographicMagnificationFactor", 0) or 0)
        except (TypeError, ValueError):
            magnification = 0.0
        if np.isfinite(magnification) and magnification > 0:
            return (spacing[0] / magnification, spacing[1] / magnification), \
                "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return spacing, "ImagerPixelSpacing"
    return (1.0, 1.0), "unknown"


def _letters_to_ras(code: str) -> np.ndarray | None:
    """RAS unit vector of a patient-orientation code such as 'L', 'F' or 'LF' (None when not readable)."""
    if not code or any(letter not in ORIENTATION_LETTERS_RAS for letter in code):
        return None
    vector = np.sum([ORIENTATION_LETTERS_RAS[letter] for letter in code], axis=0)
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 1e-6 else None


def _directions_from_vectors(row_dir_ras: np.ndarray, col_dir_ras: np.ndarray) -> tuple | None:
    """3x3 direction matrix (columns i, j, k) from the RAS directions of i and j, or None if not orthogonal."""
    row_dir = np.asarray(row_dir_ras, dtype=float)
    col_dir = np.asarray(col_dir_ras, dtype=float)
    if not (np.isfinite(row_dir).all() and np.isfinite(col_dir).all()):
        return None
    if np.linalg.norm(row_dir) < 1e-6 or np.linalg.norm(col_dir) < 1e-6:
        return None
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    if abs(float(row_dir @ col_dir)) > 1e-3:
        return None
    normal = np.cross(row_dir, col_dir)
    matrix = np.column_stack([row_dir, col_dir, normal])
    return tuple(map(tuple, matrix))


def geometry_of_dataset(dataset: Any, shape: tuple[int, int], spacing_mm: tuple[float, float]
                        ) -> tuple[Geometry, str]:
    """RAS geometry of a 2-D DICOM image of ``shape`` (rows, cols) and which attributes gave the orientation.

    Returns ``(geometry, source)`` with source ``"ImageOrientationPatient"``, ``"PatientOrientation"`` or
    ``"default (frontal radiograph)"``.
    """
    spacing = (float(spacing_mm[1]), float(spacing_mm[0]), 1.0)
    orientation = dataset.get("ImageOrientationPatient", None)
    position = dataset.get("ImagePositionPatient", None)
    if orientation is not None and len(orientation) == 6:
        try:
            values = np.asarray([float(v) for v in orientation])
        except (TypeError, ValueError):
            values = None
        if values is not None:
            directions = _directions_from_vectors(LPS_TO_RAS @ values[:3], LPS_TO_RAS @ values[3:])
            if directions is not None:
                if position is not None and len(position) == 3:
                    origin = tuple(LPS_TO_RAS @ np.asarray([float(v) for v in position]))
                    return Geometry(spacing, origin, directions), "ImageOrientationPatient"
                return default_radiograph_geometry(shape, spacing_mm, directions), "ImageOrientationPatient"
    codes = dataset.get("PatientOrientation", None)
    if codes is not None and not isinstance(codes, str) and len(codes) == 2:
        row_dir = _letters_to_ras(str(codes[0]).strip().upper())
        col_dir = _letters_to_ras(str(codes[1]).strip().upper())
        if row_dir is not None and col_dir is not None:
            directions = _directions_from_vectors(row_dir, col_dir)
            if directions is not None:
                return default_radiograph_geometry(shape, spacing_mm, directions), "PatientOrientation"
    return default_radiograph_geometry(shape, spacing_mm), "default (frontal radiograph)"


def _apply_modality_lut(array: np.ndarray, dataset: Any) -> np.ndarray:
    """Stored values -> modality values (float64); handles RescaleSlope/Intercept and Modality LUT Sequence."""
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return np.asarray(apply_modality_lut(array, dataset), dtype=np.float64)


def _stored_range(dataset: Any, stored: np.ndarray) -> tuple[float, float]:
    """(lowest, highest) representable stored value; for float pixel data, the data's own min and max."""
    if np.issubdtype(stored.dtype, np.floating) or "BitsStored" not in dataset:
        return float(np.nanmin(stored)), float(np.nanmax(stored))
    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2 ** bits - 1)


def _transfer_syntax(dataset: Any, name: str) -> Any:
    """The dataset's transfer syntax UID (None when absent); FileFormatError when it names no transfer syntax."""
    transfer_syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax is None:
        return None
    try:
        _ = transfer_syntax.is_compressed  # ValueError for a UID that is no transfer syntax
    except (ValueError, AttributeError) as error:
        raise FileFormatError(f"{name} is damaged: its header names '{transfer_syntax}' as transfer syntax, which is "
                              "not a DICOM encoding, so its pixel data cannot be read.",
                              "Copy or export the image again from the PACS or scanner.") from error
    return transfer_syntax


def _check_decoder(dataset: Any, name: str) -> None:
    """Raise FileFormatError naming what to install when the compressed pixel data cannot be decoded."""
    transfer_syntax = _transfer_syntax(dataset, name)
    if transfer_syntax is None or not transfer_syntax.is_compressed:
        return
    try:
        from pydicom.pixels.decoders.base import get_decoder
    except ImportError:  # pydicom < 3: rely on the error raised while decoding
        return
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as error:
        raise FileFormatError(
            f"{name} is compressed with {transfer_syntax.name}, which this reader cannot decompress.",
            "Export the image uncompressed (e.g. with 'dcmdjpeg' or 'gdcmconv --raw') and load it again.",
        ) from error
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plug-in"
        raise FileFormatError(
            f"{name} is compressed with {transfer_syntax.name} and no decoder for it is installed.",
            f"Install one of these Python packages and try again ({missing}), for example 'pip install "
            "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg' (in Slicer's Python console: "
            "slicer.util.pip_install('pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg')), or export the image "
            "uncompressed.",
        )


# ------------------------------------------------------------------------------------ damaged files


def _parsed_elements(path: Path) -> tuple[Any, bool]:
    """(every element of ``path`` as read, undecoded; True when an end delimiter is missing at the end of the file)."""
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = pydicom.dcmread(str(path), force=True)
    return dataset, any("end of file" in str(warning.message).lower() for warning in caught)


def _raw_element(dataset: Any, tag: Any) -> Any:
    """The element ``tag`` as read from the file, without converting its value."""
    try:
        return dataset.get_item(tag, keep_deferred=True)
    except TypeError:  # pydicom < 3 has no keep_deferred
        return dataset.get_item(tag)


def _short_element(dataset: Any, size: int) -> str | None:
    """Words for an element whose value the file cuts short, or for a file that stops inside an element's tag."""
    last_end, last_is_raw = 0, False
    for tag in dataset.keys():
        raw = _raw_element(dataset, tag)
        length, value = getattr(raw, "length", None), getattr(raw, "value", None)
        tell = getattr(raw, "value_tell", None)
        if length is None or tell is None or length == _UNDEFINED_LENGTH:
            continue
        if isinstance(value, bytes) and len(value) < length:
            held = f"{len(value)} of the {length} bytes"
            if int(tag) == _PIXEL_DATA_TAG:
                return f"is incomplete: its pixel data hold {held} its header announces, {_CUT}"
            return f"is incomplete: it ends inside its header (element {tag} holds {held} it announces), {_CUT}"
        if tell + length >= last_end:
            last_end, last_is_raw = tell + length, True
    if last_is_raw and 0 < size - last_end < 12:  # fewer bytes than an element's tag, VR and length
        return f"is incomplete: it ends inside its header ({size - last_end} byte(s) of an element's tag), {_CUT}"
    return None


def dicom_damage(path: str | Path) -> str | None:
    """How the structure of the DICOM file ``path`` shows that it was cut off or damaged, or None when it is whole.

    The words continue the file's name, e.g. "is incomplete: its pixel data hold 52 of the 96 bytes its header
    announces, so ...". Checked without decoding any value: the file meta group ends inside the file; compressed
    pixel data and sequences end with their delimiter; no element announces more bytes than the file holds; the
    file does not stop inside an element's tag. A structurally whole file whose values are damaged gives None.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 132:
        return f"is incomplete or no DICOM file: it holds {size} bytes, fewer than the 132 opening every DICOM file"
    try:
        dataset, delimiter_missing = _parsed_elements(path)
    except Exception as error:  # pydicom raises many kinds on damaged structure
        return f"is damaged: its header cannot be parsed ({_reason(error)})"
    meta_length = (getattr(dataset, "file_meta", None) or {}).get("FileMetaInformationGroupLength", None)
    if getattr(dataset, "preamble", None) is not None and isinstance(meta_length, int) and 144 + meta_length > size:
        return f"is incomplete: it ends inside its file meta information, {_CUT}"
    if delimiter_missing:
        return f"is incomplete: its compressed pixel data (or a sequence) stop before their end marker, {_CUT}"
    if len(dataset) == 0:
        return f"is incomplete: it ends right after its file meta information, before any data, {_CUT}"
    try:
        return _short_element(dataset, size)
    except Exception as error:  # an element pydicom cannot even hold raw: a damaged header
        return f"is damaged: its header cannot be parsed ({_reason(error)})"


def _sop_class(dataset: Any) -> tuple[str, str]:
    """(SOP class UID, its name or '') of a dataset, from the dataset or else its file meta information."""
    meta = getattr(dataset, "file_meta", None) or {}
    uid = dataset.get("SOPClassUID", None) or meta.get("MediaStorageSOPClassUID", None)
    return (str(uid).strip(), str(getattr(uid, "name", "") or "")) if uid else ("", "")


def header_stops_early(dataset: Any) -> str | None:
    """Words (continuing the file name) for an image SOP class whose header has no image size (Rows): a file cut
    at an element boundary before its image; None otherwise (e.g. a report)."""
    sop_class, sop_name = _sop_class(dataset)
    if sop_class not in IMAGE_SOP_CLASSES or "Rows" in dataset:
        return None
    return f"is a {sop_name or 'DICOM image'} file whose header stops before the image size and pixel data, {_CUT}"


def missing_pixels_error(dataset: Any, path: Path, what: str = "radiograph") -> FileFormatError:
    """The error for a dataset of ``path`` without pixel data: a cut image (damaged structure, an image header without
    pixels, or an image SOP class whose header stops early), or a DICOM object that is no image (a report).

    what: what the file should be, for the advice ("radiograph", "cine").
    """
    action = f"Copy or export the {what} again from the PACS or scanner."
    damage = dicom_damage(path)
    if damage:
        return FileFormatError(f"{path.name} {damage}.", action)
    if "Rows" in dataset and "Columns" in dataset:
        return FileFormatError(f"{path.name} has no image (pixel data) although its header describes a "
                               f"{_text(dataset, 'Rows')} x {_text(dataset, 'Columns')} image: the file was probably "
                               "cut off after its header while copying, or its pixels were removed.", action)
    cut = header_stops_early(dataset)
    if cut:
        return FileFormatError(f"{path.name} {cut}.", action)
    sop_class, sop_name = _sop_class(dataset)
    kind = f"{path.name} is a {sop_name or sop_class} object" if sop_class else path.name
    return FileFormatError(f"The DICOM file has no image (pixel data): {kind}.",
                           f"Choose the DICOM file of the {what} itself, not a report or a structured document.")


def _reason(error: Exception) -> str:
    """The first clause of a library's error message, at most 150 characters."""
    text = str(error).split(" - ")[0].split("\n")[0].strip().rstrip(":") or type(error).__name__
    return text if len(text) <= 150 else text[:147] + "..."


def decoding_error(dataset: Any, path: Path, error: Exception, what: str = "image") -> FileFormatError:
    """The error for pixel data of ``path`` that could not be decoded: cut off, damaged, or (pydicom < 3) no decoder.

    what: what the file should be, for the advice ("image", "cine").
    """
    action = f"Copy or export the {what} again from the PACS or scanner."
    damage = dicom_damage(path)
    if damage:
        return FileFormatError(f"{path.name} {damage}.", action)
    transfer_syntax = _transfer_syntax(dataset, path.name)
    if transfer_syntax is not None and transfer_syntax.is_compressed:
        return FileFormatError(f"The compressed pixel data of {path.name} could not be decoded ({_reason(error)}): "
                               "the file is damaged, or no decoder for its compression is installed.",
                               f"Copy or export the {what} again, or install a DICOM decoder (pip install pylibjpeg "
                               "pylibjpeg-libjpeg pylibjpeg-openjpeg), or export the image uncompressed.")
    return FileFormatError(f"{path.name} is damaged: its pixel data do not match the image its header describes "
                           f"({_reason(error)}).", action)


def damaged_header_error(path: Path, error: Exception, what: str = "image") -> FileFormatError:
    """The error for a header value of ``path`` that cannot be converted (a flipped byte, a cut file)."""
    damage = dicom_damage(path)
    problem = f"{path.name} {damage}." if damage else \
        f"{path.name} is damaged: a value of its header cannot be read ({_reason(error)})."
    return FileFormatError(problem, f"Copy or export the {what} again from the PACS or scanner.")


def _read_dataset(path: Path) -> Any:
    """pydicom dataset of ``path``; FileFormatError when missing, unreadable or not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise FileFormatError(f"The file {path} does not exist.", "Check the path and the file name.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing end delimiter is diagnosed by dicom_damage
            return pydicom.dcmread(str(path))
    except InvalidDicomError as error:
        size = path.stat().st_size
        if size < 132:
            raise FileFormatError(f"{path.name} holds only {size} bytes, fewer than the 132 that open every DICOM "
                                  "file: it is not a DICOM file, or it was cut off while copying.",
                                  "Copy or export the image again, or choose a PNG/JPEG/TIFF image.") from error
        raise FileFormatError(f"{path.name} is not a DICOM file (it has no DICOM header).",
                              "Choose a DICOM (.dcm) file, or a PNG/JPEG/TIFF image.") from error
    except Exception as error:  # truncated or corrupt files raise many kinds of errors
        damage = dicom_damage(path)
        raise FileFormatError(f"{path.name} {damage}." if damage else f"{path.name} could not be read as DICOM: the "
                              f"file is damaged ({type(error).__name__}).",
                              "Export the image again from the PACS or scanner.") from error


def _check_single_frame_grey(dataset: Any, path: Path) -> str:
    """Raise for multi-frame, colour or pixel-less datasets; return the photometric interpretation."""
    name = path.name
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise missing_pixels_error(dataset, path)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"{name} holds {frames} frames; this tool reads a single 2-D image.",
                         "Export the one frame you want as a single-frame DICOM file.")
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = _text(dataset, "PhotometricInterpretation", "MONOCHROME2").upper()
    if samples != 1 or photometric not in _MONOCHROME:
        raise InputError(f"{name} is a colour image ({photometric}, {samples} samples per pixel); a grey-scale "
                         "radiograph is needed.",
                         "Load the original grey-scale radiograph (MONOCHROME1 or MONOCHROME2), not a colour "
                         "screenshot or secondary capture.")
    return photometric


def read_dicom_image(path: str | Path) -> tuple[Volume, dict[str, Any]]:
    """Read a single-frame grey-scale 2-D DICOM image.

    Returns ``(volume, metadata)``: ``volume.array`` is float32 of shape (1, rows, cols) holding Modality-LUT
    values (MONOCHROME1 inverted, so higher = brighter), with RAS geometry in mm (see the module docstring for
    spacing and orientation rules). ``metadata`` has the keys ``photometric_interpretation``, ``inverted``,
    ``modality``, ``view_position``, ``patient_orientation``, ``orientation_source``, ``spacing_mm`` (row, col),
    ``spacing_source`` (``"unknown"`` when 1 mm was assumed), ``bits_stored``, ``rescale_slope``,
    ``rescale_intercept``, ``manufacturer``, ``body_part``, ``patient_sex``, ``patient_age``, ``sop_class_uid``,
    ``study_instance_uid``, ``series_instance_uid``, ``sop_instance_uid``, ``transfer_syntax``.

    Raises FileFormatError (missing, not DICOM, no pixel data, incomplete (cut off) or damaged, no decoder
    installed) or InputError (multi-frame, colour). A file cut off while copying is named incomplete, a DICOM
    object that holds no image (a report) is named as such.
    """
    path = Path(path)
    dataset = _read_dataset(path)
    try:
        return _image_of_dataset(dataset, path)
    except ScanAIError:
        raise
    except HEADER_ERRORS as error:  # a header value pydicom cannot convert: a flipped byte or a cut file
        raise damaged_header_error(path, error) from error


def _image_of_dataset(dataset: Any, path: Path) -> tuple[Volume, dict[str, Any]]:
    """:func:`read_dicom_image` once the file is read: pixels, Modality LUT, inversion, geometry and metadata."""
    photometric = _check_single_frame_grey(dataset, path)
    _check_decoder(dataset, path.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = np.asarray(dataset.pixel_array)
    except Exception as error:  # pydicom raises many kinds for undecodable or truncated pixel data
        raise decoding_error(dataset, path, error) from error
    if stored.ndim != 2:
        raise InputError(f"{path.name} does not hold a single 2-D grey image (pixel array shape {stored.shape}).",
                         "Export a single-frame grey-scale image.")
    values = _apply_modality_lut(stored, dataset)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        low, high = _apply_modality_lut(np.asarray(_stored_range(dataset, stored)), dataset)
        values = (low + high) - values
    spacing, spacing_source = pixel_spacing_of(dataset)
    geometry, orientation_source = geometry_of_dataset(dataset, stored.shape, spacing)
    metadata = {"photometric_interpretation": photometric, "inverted": inverted,
                "orientation_source": orientation_source, "spacing_mm": spacing, "spacing_source": spacing_source,
                **_header_facts(dataset)}
    return Volume(values.astype(np.float32)[np.newaxis], geometry), metadata


def _header_facts(dataset: Any) -> dict[str, Any]:
    """The header attributes :func:`read_dicom_image` reports (text, '' when absent; numbers for bits and rescale)."""
    facts: dict[str, Any] = {key: _text(dataset, keyword) for key, keyword in (
        ("modality", "Modality"), ("view_position", "ViewPosition"), ("patient_orientation", "PatientOrientation"),
        ("manufacturer", "Manufacturer"), ("body_part", "BodyPartExamined"), ("patient_sex", "PatientSex"),
        ("patient_age", "PatientAge"), ("sop_class_uid", "SOPClassUID"), ("study_instance_uid", "StudyInstanceUID"),
        ("series_instance_uid", "SeriesInstanceUID"), ("sop_instance_uid", "SOPInstanceUID"))}
    facts.update({
        "bits_stored": int(dataset.BitsStored) if "BitsStored" in dataset else None,
        "rescale_slope": float(dataset.get("RescaleSlope", 1.0) or 1.0),
        "rescale_intercept": float(dataset.get("RescaleIntercept", 0.0) or 0.0),
        "transfer_syntax": _text(getattr(dataset, "file_meta", None) or {}, "TransferSyntaxUID"),
    })
    return facts
