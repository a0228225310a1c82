"""The k-space container :class:`KSpaceData` and the checks of raw k-space arrays (layout: :mod:`scanai.kspace.io`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scanai.core.errors import InputError

FRAME_AXES = ("repetition", "contrast")
#: The k-space files :func:`scanai.kspace.io.read_kspace` reads, by extension and in words (for messages).
SUPPORTED_SUFFIXES = (".dat", ".npy", ".npz", ".mat", ".h5", ".hdf5", ".mrd", ".cfl", ".hdr")
SUPPORTED_FORMATS = ("Siemens raw data (.dat), ISMRMRD/MRD or fastMRI HDF5 (.h5, .mrd), a BART array (.cfl + .hdr), "
                     "a NumPy array (.npy/.npz) or a MATLAB file (.mat)")

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
                          the file's noise-only samples or given with ``read_kspace(..., noise=)``, in the units
                          of the data *as stored* (it is kept unchanged by pre-whitening, after which the noise
                          covariance of ``data`` is the identity and ``metadata["prewhitened"]`` is True).
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
    def noise_sigma(self) -> np.ndarray | None:
        """(coils,) float64 noise standard deviation of each coil of ``data`` (RMS magnitude of its complex noise,
        :func:`noise_sigma`), from :attr:`noise_covariance` (a noise scan of the file or one
        given with ``--noise``); ones after pre-whitening; None when no noise scan is known."""
        if self.metadata.get("prewhitened"):
            return np.ones(self.n_coils)
        if self.noise_covariance is None:
            return None
        return noise_sigma(self.noise_covariance)

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


def noise_sigma(covariance: np.ndarray) -> np.ndarray:
    """(coils,) float64 noise standard deviation of each coil, ``sqrt(Psi[c, c])`` (the RMS magnitude of its
    complex noise, E|n|^2 convention: the real and imaginary parts each have ``sigma / sqrt(2)``)."""
    return np.sqrt(np.real(np.diagonal(np.asarray(covariance))).astype(np.float64))


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
                         "Reshape or select the data so that it has one of these layouts, or say what each axis of "
                         "the file holds with --axes (e.g. --axes ky,kx,coil,echo).")
    if min(array.shape[-2:]) < 2:
        raise InputError(f"{what} has shape {array.shape}: at least 2 phase-encoding lines and 2 readout samples "
                         "are needed.", "Check the array layout: the last two axes must be (ky, kx); --axes names them "
                         "otherwise (e.g. --axes ky,kx,coil).")
    if array.ndim == 2:
        array = array[np.newaxis, np.newaxis]
    elif array.ndim == 3:  # coils first
        array = array[:, np.newaxis]
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise InputError(f"{what} holds {bad} NaN or infinite sample(s) out of {array.size}, the first at "
                         f"{_sample(np.flatnonzero(~finite)[0], array.shape)}; the raw data are damaged.",
                         "Re-export the raw data from the scanner, or repair the file.")
    if not np.any(array):
        raise InputError(f"{what} holds only zeros: nothing was acquired.", "Check that the right file was exported.")
    _check_physical(array, what)
    return np.array(array, dtype=np.complex64, copy=True)


#: A sample this many times the typical (99.9th percentile) magnitude cannot come from a receiver: corrupt data (a
#: flipped exponent bit gives 1e13). Real spikes and the k-space centre stay below 1e4 times it.
NON_PHYSICAL_RATIO = 1e6


def _sample(flat_index: int, shape: tuple[int, ...]) -> str:
    """Where a flat index of a (coils, slices, ky, kx) array is, in words (1-based)."""
    coil, slice_, line, column = np.unravel_index(int(flat_index), shape)
    return f"coil {coil + 1}, slice {slice_ + 1}, phase-encoding line {line + 1}, readout sample {column + 1}"


def _check_physical(array: np.ndarray, what: str) -> None:
    """InputError when samples are :data:`NON_PHYSICAL_RATIO` times larger than the typical magnitude."""
    magnitude = np.abs(array).ravel()
    sample = magnitude[:: max(1, magnitude.size // 100_000)]  # ~1e5 samples: the 99.9th percentile to ~1 %
    typical = float(np.percentile(sample[sample > 0], 99.9)) if np.any(sample > 0) else 0.0
    wild = np.flatnonzero(magnitude > NON_PHYSICAL_RATIO * typical) if typical > 0 else np.array([], dtype=int)
    if wild.size:
        raise InputError(f"{what} holds {wild.size} sample(s) up to {float(magnitude[wild].max()) / typical:.3g} "
                         f"times the typical magnitude, the first at {_sample(wild[0], array.shape)}: no receiver "
                         "records that; the raw data are corrupt (flipped bits?).",
                         "Re-export the raw data from the scanner; spike correction cannot repair corrupt samples.")
