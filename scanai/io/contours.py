"""Manual contours of the Sunnybrook Cardiac Data as polygons and masks on the cine's image grid.

A Sunnybrook contour file ``IM-0001-NNNN-{i,o}contour-manual.txt`` (in ``i-contours/`` and ``o-contours/``)
lists one point per line as ``x y`` in pixel coordinates of the image whose DICOM InstanceNumber is ``NNNN``:
``x`` is the column i, ``y`` the row j, and pixel (i, j) has its centre at the integer coordinates (i, j).
``i`` files outline the LV endocardium, ``o`` files the LV epicardium. The image number is mapped to the slice
location and cardiac phase of :func:`scanai.io.cine.read_dicom_series` by reading that image's DICOM header, so
the mapping holds whatever the number of phases per slice.

:func:`read_label_map` reads a label map drawn on a cine for motion analysis, whether it carries a geometry
(NRRD, NIfTI, MHA: a :class:`~scanai.core.image.Volume`) or lies on the image's pixel grid (PNG, TIFF, ``.npy``,
or a 2-D NRRD/NIfTI without a geometry of its own: a plain array that the analysis places on the cine).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.image import Volume
from scanai.io.cine import list_cine_slices

#: Contour kinds by the letter in the file name.
CONTOUR_KINDS = {"i": "endocardium", "o": "epicardium"}
_FILE_NAME = re.compile(r"^IM-(\d+)-(\d+)-([io])contour-manual\.txt$", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class ManualContour:
    """One manual contour on one image of a cine.

    kind:         "endocardium" or "epicardium".
    slice_index:  slice location, 0-based, as in :func:`scanai.io.cine.read_dicom_series` /
                  :func:`~scanai.io.cine.read_sunnybrook_cine` (and k of :func:`~scanai.io.cine.read_cine_stack`).
    phase_index:  0-based frame in that slice's sequence (TriggerTime order).
    points_ij:    (P, 2) float, polygon vertices (column i, row j) in pixels, as in the file's "x y".
    mask:         (J, I) bool on the image grid: pixel centres inside the polygon (even-odd rule).
    image_number: the DICOM InstanceNumber NNNN of the contoured image.
    """

    kind: str
    slice_index: int
    phase_index: int
    points_ij: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    image_number: int = 0


def contour_mask(points_ij: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Filled polygon on a pixel grid.

    points_ij: (P, 2) polygon vertices (column i, row j) in pixels, P >= 3; the polygon closes itself.
    shape:     (J, I) = (rows, columns) of the grid.
    Returns a (J, I) bool mask, True where the pixel centre (i, j) lies inside the polygon by the even-odd rule
    (a self-intersecting outline alternates inside/outside).
    """
    points = np.asarray(points_ij, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
        raise InputError(f"A contour needs at least 3 points (i, j), got an array of shape {points.shape}.")
    if not np.all(np.isfinite(points)):
        raise InputError("The contour has points that are not finite numbers.")
    rows, columns = (int(n) for n in shape)
    if rows <= 0 or columns <= 0:
        raise InputError(f"The mask shape must be two positive sizes (rows, columns), got {tuple(shape)}.")
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    mask = np.zeros((rows, columns), dtype=bool)
    centres = np.arange(columns, dtype=float)
    first, last = max(0, int(np.ceil(y0.min()))), min(rows - 1, int(np.floor(y0.max())))
    for j in range(first, last + 1):
        crossing = (y0 > j) != (y1 > j)  # the edge spans the row line y = j (horizontal edges never do)
        if not crossing.any():
            continue
        xa, ya, xb, yb = x0[crossing], y0[crossing], x1[crossing], y1[crossing]
        xs = np.sort(xa + (j - ya) * (xb - xa) / (yb - ya))
        right = xs.size - np.searchsorted(xs, centres, side="right")  # crossings strictly right of the centre
        mask[j] = right % 2 == 1
    return mask


def read_contour_points(path: str | Path) -> np.ndarray:
    """The (P, 2) float points (x = column i, y = row j) of one contour text file; FileFormatError if malformed."""
    path = Path(path)
    points = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise FileFormatError(f"The contour file {path.name} could not be read ({error}).",
                              "Check that the file exists and is a text file.") from error
    lines = text.splitlines()
    if text.strip() and not text.endswith(("\n", "\r")):  # every distributed file ends its last line
        raise FileFormatError(f"The contour file {path.name} is incomplete: it ends in the middle of line {len(lines)} "
                              f"({lines[-1].strip()!r}), so it was probably cut off while copying.",
                              "Copy the contour files again.")
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            points.append((float(fields[0]), float(fields[1])))
        except ValueError as error:
            raise FileFormatError(f"Line {number} of the contour file {path.name} is not two numbers 'x y': "
                                  f"{line.strip()!r}.", "Use the contour files as distributed.") from error
    if len(points) < 3:
        raise FileFormatError(f"The contour file {path.name} holds {len(points)} point(s); a contour needs at "
                              "least 3.", "Use the contour files as distributed.")
    result = np.asarray(points, dtype=float)
    if not np.all(np.isfinite(result)):
        raise FileFormatError(f"The contour file {path.name} has points that are not finite numbers.")
    return result


def _header(path: Path):
    """DICOM header of ``path`` (no pixels), or None."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM, damaged: the caller searches elsewhere or reports
        return None


class _ImageIndex:
    """Maps a DICOM InstanceNumber to (slice_index, phase_index, rows, columns) in a cine folder."""

    def __init__(self, dicom_dir: Path) -> None:
        self.folder = dicom_dir
        self.slices = list_cine_slices(dicom_dir)
        self.place = {path.resolve(): (s, p) for s, cine_slice in enumerate(self.slices)
                      for p, path in enumerate(cine_slice.files)}
        self._by_number: dict[int, list[Path]] | None = None

    def _search(self, number: int) -> list[Path]:
        if self._by_number is None:
            self._by_number = {}
            for path in self.place:
                header = _header(path)
                if header is not None and "InstanceNumber" in header:
                    self._by_number.setdefault(int(header.InstanceNumber), []).append(path)
        return self._by_number.get(number, [])

    def locate(self, number: int, contour_name: str) -> tuple[int, int, int, int]:
        candidate = (self.folder / f"{number}.dcm").resolve()
        header = _header(candidate) if candidate in self.place else None
        if header is None or int(header.get("InstanceNumber", -1) or -1) != number:
            found = self._search(number)
            if not found:
                raise InputError(f"The contour {contour_name} refers to image {number}, but no DICOM image with "
                                 f"InstanceNumber {number} is in {self.folder}.",
                                 "Give the DICOM folder of the same patient as the contours.")
            if len(found) > 1:
                raise InputError(f"Several images in {self.folder} have InstanceNumber {number}, so the contour "
                                 f"{contour_name} cannot be placed.", "Keep a single cine series in the folder.")
            candidate, header = found[0], _header(found[0])
        slice_index, phase_index = self.place[candidate]
        return slice_index, phase_index, int(header.Rows), int(header.Columns)


def _contour_files(contour_dir: Path) -> list[tuple[Path, int, str]]:
    """(path, image number, kind) of every Sunnybrook contour file under ``contour_dir`` (recursively)."""
    found = []
    for path in sorted(contour_dir.rglob("*")):
        match = _FILE_NAME.match(path.name)
        if match and path.is_file():
            found.append((path, int(match.group(2)), CONTOUR_KINDS[match.group(3).lower()]))
    return found


def read_sunnybrook_contours(contour_dir: str | Path, dicom_dir: str | Path) -> list[ManualContour]:
    """Read the manual LV contours of one Sunnybrook patient, placed on its cine.

    contour_dir: the patient's contour folder (e.g. ``contourfiles/SC-HF-I-1``, holding ``i-contours/`` and
                 ``o-contours/``; searched recursively for ``IM-0001-NNNN-{i,o}contour-manual.txt``).
    dicom_dir:   the patient's DICOM folder (e.g. ``dicoms/SCD0000101``, files ``N.dcm``).
    Each image number NNNN is found as the DICOM image with that InstanceNumber (``NNNN.dcm`` first, else by
    searching the headers) and mapped to its slice location and phase in the order of
    :func:`scanai.io.cine.read_dicom_series`. Returns the contours sorted by (slice, phase, kind), each with its
    filled mask on the (rows, columns) image grid. Raises :class:`FileFormatError` (missing folders, malformed
    files, no contour files) or :class:`InputError` (an image number not in the DICOM folder).
    """
    contour_dir, dicom_dir = Path(contour_dir), Path(dicom_dir)
    if not contour_dir.is_dir():
        raise FileFormatError(f"The contour folder {contour_dir} does not exist.", "Check the path.")
    files = _contour_files(contour_dir)
    if not files:
        raise FileFormatError(f"No Sunnybrook contour files (IM-0001-NNNN-icontour-manual.txt or ...-ocontour-"
                              f"manual.txt) were found in {contour_dir}.",
                              "Choose the patient's contour folder (the one holding i-contours and o-contours).")
    index = _ImageIndex(dicom_dir)
    contours = []
    for path, number, kind in files:
        points = read_contour_points(path)
        slice_index, phase_index, rows, columns = index.locate(number, path.name)
        mask = contour_mask(points, (rows, columns))
        points.setflags(write=False)
        mask.setflags(write=False)
        contours.append(ManualContour(kind, slice_index, phase_index, points, mask, number))
    contours.sort(key=lambda c: (c.slice_index, c.phase_index, c.kind))
    return contours


#: Files with no geometry: their pixels are the image's pixels.
PIXEL_GRID_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")


def _on_pixel_grid(volume: Volume, dimension: int) -> bool:
    """True for a 2-D image (or one slice) whose geometry is the default of a file without one: unit spacing,
    origin 0 and axis-aligned axes (as ITK writes an image that never had a geometry)."""
    geometry = volume.geometry
    axes = np.abs(np.asarray(geometry.directions))
    return ((dimension == 2 or volume.array.shape[0] == 1) and np.allclose(geometry.spacing_mm[:2], 1.0)
            and np.allclose(geometry.origin_mm, 0.0) and np.allclose(axes, np.eye(3)))


def read_label_map(path: str | Path) -> Volume | np.ndarray:
    """A label map drawn on a cine, as the motion analysis takes it.

    - ``.npy``: the array as saved, (J, I) or (K, J, I), on the image's pixel grid.
    - PNG, TIFF, BMP, JPEG: grey levels (an RGB image whose channels are equal is read as grey), pixel grid.
    - NRRD, NIfTI, MHA: a :class:`Volume` with the file's geometry, checked against the cine's grid; a 2-D image
      (or one slice) with unit spacing, origin 0 and axis-aligned axes carries no geometry of its own and is
      returned as a plain (1, J, I) array on the pixel grid, like a PNG.
    Returns the Volume or the integer-valued array (not yet checked against the cine: see
    :func:`scanai.motion.pipeline.analyse_cine`). Raises :class:`FileFormatError` for a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The label map {path} does not exist.", "Check the path and the file name.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise FileFormatError(f"{path.name} could not be read as a NumPy array ({error}).",
                                  "Save the label map with numpy.save, or as a PNG.") from error
        if array.ndim not in (2, 3):
            raise FileFormatError(f"{path.name} holds an array of shape {array.shape}; a label map is (rows, "
                                  "columns) or (slices, rows, columns).")
        return array
    import SimpleITK as sitk

    from scanai.io.sitk_image import from_sitk, read_sitk

    image = read_sitk(path, "a label map", "Use PNG, .npy, NRRD or NIfTI.")
    if image.GetNumberOfComponentsPerPixel() > 1:
        channels = sitk.GetArrayFromImage(image)
        if not np.all(channels == channels[..., :1]):
            raise FileFormatError(f"{path.name} is a colour image; a label map holds one number per pixel.",
                                  "Save it as a grey-level image (0 = background, 1, 2, ... = structures).")
        image = sitk.GetImageFromArray(np.ascontiguousarray(channels[..., 0]))
    volume = from_sitk(image)
    if suffix in PIXEL_GRID_SUFFIXES or _on_pixel_grid(volume, image.GetDimension()):
        return volume.array
    return volume
