"""Reading multi-coil MRI k-space into one array layout.

Every reader returns a :class:`KSpaceData` whose ``data`` is complex64 with shape ``(coils, slices, ky, kx)``
(named in :attr:`KSpaceData.axes`):

- ``coil``   receiver channels (1 for single-channel data);
- ``slice``  2-D slices, or the partition (``kz``) encodings of a 3-D scan when ``slices_are_kz`` is True;
- ``ky``     phase-encoding lines (rows); missing lines (partial Fourier, parallel imaging) are zero;
- ``kx``     readout samples (columns), *including* any readout oversampling.

k-space is *centred*: the DC sample (k = 0) sits at index ``(ky // 2, kx // 2)``, so the image is
``fftshift(ifft2(ifftshift(k)))`` (see :func:`scanai.kspace.recon.to_image`). When a file holds several
repetitions or contrasts (echoes), ``data`` is the first repetition and contrast and ``frames`` holds them all,
shape ``(repetition, contrast, coil, slice, ky, kx)``; ``frames`` is None otherwise.

Supported files (by extension):

- ``.npy`` / ``.npz`` -- a complex array (in ``.npz``: key ``kspace``, or the only array). Dimensions are read as
  ``(ky, kx)``, ``(coils, ky, kx)`` or ``(coils, slices, ky, kx)``: a 3-D array is always coils first.
  ``.npz`` files may also hold ``readout_oversampling`` (int), ``spacing_mm`` (3 floats), ``frames``,
  ``noise`` (noise-only samples, (coils, samples)) and ``noise_covariance`` (coils, coils), as written by
  :func:`write_kspace_npz`.
- ``.mat`` -- MATLAB v5/v7 file (``scipy.io.loadmat``), key ``data`` or the only complex array, with the same
  dimension convention as ``.npy``. MATLAB v7.3 (HDF5) files are refused with advice to re-save.
- ``.dat`` -- Siemens raw data ("twix", VB or VD/VE), read with ``twixtools``; noise adjustment scans are kept
  for pre-whitening.
- ``.h5`` / ``.hdf5`` / ``.mrd`` -- ISMRMRD (MRD) raw data (``/dataset/data`` acquisitions + ``/dataset/xml``
  header; noise acquisitions are kept for pre-whitening) or a fastMRI file (``kspace`` dataset +
  ``ismrmrd_header``), told apart by their content.
- ``.cfl`` / ``.hdr`` -- a BART array (``name.cfl`` + ``name.hdr``), dimensions 0 = readout, 1 = phase 1,
  2 = phase 2 (kz), 3 = coil, 5 = echo (contrast), 10 = time (repetition), 13 = slice.

Pre-whitening (``read_kspace(path, prewhiten=True)``) uses the file's noise-only samples: see
:func:`scanai.kspace.recon.noise_covariance` and :func:`scanai.kspace.recon.prewhiten`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.progress import Progress

SUPPORTED_SUFFIXES = (".dat", ".npy", ".npz", ".mat", ".h5", ".hdf5", ".mrd", ".cfl", ".hdr")
SUPPORTED_FORMATS = ("Siemens raw data (.dat), ISMRMRD/MRD or fastMRI HDF5 (.h5, .mrd), a BART array (.cfl + .hdr), "
                     "a NumPy array (.npy/.npz) or a MATLAB file (.mat)")
FRAME_AXES = ("repetition", "contrast")

_REAL_VALUED_PROBLEM = (
    "The k-space file holds real numbers, not complex k-space: the phase of the signal is missing, so no image "
    "can be reconstructed and spikes cannot be located from it."
)
_REAL_VALUED_ACTION = (
    "Export complex raw data (real and imaginary parts) from the scanner or your reconstruction pipeline; if "
    "you stored the two parts separately, combine them as real + 1j * imaginary before saving."
)


@dataclass(frozen=True)
class KSpaceData:
    """Multi-coil Cartesian k-space with what is needed to reconstruct it.

    data:                 complex64, shape (coils, slices, ky, kx) (see :attr:`axes`), centred (DC at
                          (ky // 2, kx // 2)); kx includes readout oversampling. With several repetitions or
                          contrasts: the first of each.
    readout_oversampling: integer factor by which the readout (kx) was oversampled: the image is
                          ``kx / readout_oversampling`` pixels wide after cropping (2 on Siemens scanners, 1 when
                          the file holds no oversampling).
    spacing_mm:           pixel spacing of the reconstructed image *after* oversampling removal, in mm, in
                          Volume (i, j, k) order = (readout, phase encoding, slice).
    spacing_from_header:  True when ``spacing_mm`` is known (from the file's header, from an ``.npz`` written by
                          :func:`write_kspace_npz`, or set by a generator); False when it is the 1 mm fallback.
    slices_are_kz:        True when axis 1 is a 3-D partition (kz) encoding rather than separate 2-D slices;
                          reconstruction then also inverse-Fourier-transforms along it.
    source:               file name (or a description for generated data).
    metadata:             free-form facts about the file (protocol, counters, notes), JSON-friendly. Readers set
                          ``format``, ``axes``, ``noise_scans`` (number of noise-only readouts found, 0 when none)
                          and ``prewhitened`` (whether ``data`` was pre-whitened).
    frames:               None, or complex64 (repetitions, contrasts, coils, slices, ky, kx) when the file holds
                          more than one repetition or contrast (echo); ``frames[0, 0]`` equals ``data``.
    noise_covariance:     None, or the coil noise covariance (coils, coils), complex128 Hermitian, estimated from
                          the file's noise-only samples, in the units of the data *as stored* (it is kept
                          unchanged by pre-whitening, after which the noise covariance of ``data`` is the
                          identity and ``metadata["prewhitened"]`` is True).
    """

    data: np.ndarray
    readout_oversampling: int = 1
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    spacing_from_header: bool = False
    slices_are_kz: bool = False
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    frames: np.ndarray | None = None
    noise_covariance: np.ndarray | None = None

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim != 4 or not np.iscomplexobj(data):
            raise InputError(f"KSpaceData needs a complex array of shape (coils, slices, ky, kx), got "
                             f"{data.dtype} with shape {data.shape}.", "Use as_kspace_array() to convert it.")
        if data.dtype != np.complex64:
            data = data.astype(np.complex64)
        factor = int(self.readout_oversampling)
        if factor != self.readout_oversampling or factor < 1 or data.shape[-1] % factor:
            raise InputError(f"The readout oversampling factor must be a whole number >= 1 that divides the "
                             f"{data.shape[-1]} readout samples, got {self.readout_oversampling}.")
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"The pixel spacing must be three positive numbers in mm, got {self.spacing_mm}.")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "readout_oversampling", factor)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "frames", _checked_frames(self.frames, data.shape))
        object.__setattr__(self, "noise_covariance", _checked_covariance(self.noise_covariance, data.shape[0]))

    @property
    def n_coils(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[1])

    @property
    def axes(self) -> tuple[str, str, str, str]:
        """Names of the four axes of ``data``: ("coil", "slice" or "kz", "ky", "kx")."""
        return ("coil", "kz" if self.slices_are_kz else "slice", "ky", "kx")

    @property
    def frame_axes(self) -> tuple[str, ...]:
        """Names of the six axes of ``frames``: ("repetition", "contrast") + :attr:`axes`."""
        return FRAME_AXES + self.axes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(slices, ny, nx) of the reconstructed image after readout-oversampling removal."""
        _, slices, ky, kx = self.data.shape
        return slices, ky, kx // self.readout_oversampling


def _checked_frames(frames: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if frames is None:
        return None
    frames = np.asarray(frames)
    if frames.ndim != 6 or frames.shape[2:] != tuple(shape) or not np.iscomplexobj(frames):
        raise InputError(f"KSpaceData.frames must be complex (repetitions, contrasts) + {tuple(shape)}, got "
                         f"{frames.dtype} with shape {frames.shape}.")
    return frames.astype(np.complex64, copy=False)


def _checked_covariance(covariance: np.ndarray | None, n_coils: int) -> np.ndarray | None:
    if covariance is None:
        return None
    covariance = np.asarray(covariance, dtype=np.complex128)
    if covariance.shape != (n_coils, n_coils) or not np.isfinite(covariance).all():
        raise InputError(f"The noise covariance must be a finite ({n_coils}, {n_coils}) matrix (one row and column "
                         f"per coil), got shape {covariance.shape}.")
    return covariance


def as_kspace_array(array: Any, what: str = "The k-space data") -> np.ndarray:
    """Check a k-space array and return a complex64 copy of shape (coils, slices, ky, kx).

    ``array`` may be (ky, kx), (coils, ky, kx) or (coils, slices, ky, kx); a 3-D array is read as coils first.
    Raises :class:`InputError` for empty, real-valued, non-numeric, wrongly shaped, all-zero or non-finite data.
    The input is never modified.
    """
    array = np.asarray(array)
    if array.size == 0:
        raise InputError(f"{what} is empty (shape {array.shape}).", "Check that the file was exported completely.")
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{what} does not hold numbers (type {array.dtype}).", _REAL_VALUED_ACTION)
    if not np.iscomplexobj(array):
        raise InputError(f"{_REAL_VALUED_PROBLEM} ({what}: {array.dtype}, shape {array.shape}).",
                         _REAL_VALUED_ACTION)
    if array.ndim not in (2, 3, 4):
        raise InputError(f"{what} has {array.ndim} dimensions (shape {array.shape}); k-space must be (ky, kx), "
                         "(coils, ky, kx) or (coils, slices, ky, kx).",
                         "Reshape or select the data so that it has one of these layouts.")
    if min(array.shape[-2:]) < 2:
        raise InputError(f"{what} has shape {array.shape}: at least 2 phase-encoding lines and 2 readout samples "
                         "are needed.", "Check the array layout: the last two axes must be (ky, kx).")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise InputError(f"{what} holds {bad} NaN or infinite sample(s) out of {array.size}; the raw data are "
                         "damaged.", "Re-export the raw data from the scanner, or repair the file.")
    if not np.any(array):
        raise InputError(f"{what} holds only zeros: nothing was acquired.", "Check that the right file was exported.")
    out = np.array(array, dtype=np.complex64, copy=True)
    while out.ndim < 4:
        out = out[np.newaxis] if out.ndim == 2 else out[:, np.newaxis]
    return out


def read_kspace(path: str | Path, *, allow_epi: bool = False, prewhiten: bool = False,
                progress: Progress | None = None) -> KSpaceData:
    """Read k-space from any supported file (see the module docstring) into a :class:`KSpaceData`.

    allow_epi: echo-planar (EPI) data (twix REFLECT lines, ISMRMRD ACQ_IS_REVERSE lines) are refused by default,
               because a correct EPI image needs ramp-sampling regridding and Nyquist-ghost phase correction that
               ScanAI does not do. With ``allow_epi=True`` the time-reversed lines are flipped back and the data
               are returned as they are, with ``metadata["epi_uncorrected"] = True`` (the image will show N/2
               ghosts).
    prewhiten: off by default (the data are returned as stored). When True, the coil noise covariance estimated
               from the file's noise-only samples is used to decorrelate the coils and give their noise unit
               variance (:func:`scanai.kspace.recon.prewhiten`); ``metadata["prewhitened"]`` records it. A file
               without noise samples then raises :class:`InputError` (nothing to whiten with).
    Raises :class:`FileFormatError` for a missing, unreadable, truncated or unknown file and :class:`InputError`
    for data that cannot be used (real-valued, NaN, inconsistent or wrong dimensions, no imaging data).
    """
    path = Path(path)
    progress = Progress.ensure(progress)
    if not path.is_file():
        raise FileFormatError(f"The k-space file {path} does not exist.", "Check the path and the file name.")
    suffix = path.suffix.lower()
    reading = progress.sub(0.0, 0.95) if prewhiten else progress
    if suffix == ".dat":
        from scanai.kspace.readers.twix import read_twix

        kspace = read_twix(path, allow_epi, reading)
    elif suffix in (".npy", ".npz"):
        from scanai.kspace.readers.arrays import read_numpy

        kspace = read_numpy(path)
    elif suffix == ".mat":
        from scanai.kspace.readers.arrays import read_mat

        kspace = read_mat(path)
    elif suffix in (".h5", ".hdf5", ".mrd"):
        from scanai.kspace.readers.hdf5 import read_hdf5

        kspace = read_hdf5(path, allow_epi, reading)
    elif suffix in (".cfl", ".hdr"):
        from scanai.kspace.readers.bart import read_bart

        kspace = read_bart(path)
    else:
        raise FileFormatError(f"{path.name} is not a supported k-space file (got '{suffix or 'no extension'}').",
                              f"Use {SUPPORTED_FORMATS}.")
    if not prewhiten:
        return kspace
    from scanai.kspace.recon import prewhiten_kspace

    progress(0.95, "Pre-whitening the coils")
    whitened = prewhiten_kspace(kspace)
    progress(1.0, "Reading k-space: done")
    return whitened


def write_kspace_npz(kspace: KSpaceData, path: str | Path) -> Path:
    """Save ``kspace`` as a compressed ``.npz`` that :func:`read_kspace` reads back exactly; returns the path.

    Stored: ``kspace`` (the data), ``readout_oversampling``, ``spacing_mm``, and, when present, ``frames``,
    ``noise_covariance``, ``slices_are_kz`` and ``prewhitened``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "kspace": kspace.data,
        "readout_oversampling": np.int64(kspace.readout_oversampling),
        "spacing_mm": np.asarray(kspace.spacing_mm, dtype=float),
    }
    if kspace.slices_are_kz:
        arrays["slices_are_kz"] = np.bool_(True)
    if kspace.metadata.get("prewhitened"):
        arrays["prewhitened"] = np.bool_(True)
    if kspace.frames is not None:
        arrays["frames"] = kspace.frames
    if kspace.noise_covariance is not None:
        arrays["noise_covariance"] = kspace.noise_covariance
    np.savez_compressed(path, **arrays)
    return path
