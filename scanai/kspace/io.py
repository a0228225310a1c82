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
  2 = phase 2 (kz), 3 = coil, 5 = echo (contrast), 10 = time (repetition), 13 = slice; readout-transformed data
  (readout size 1) are read as ky-kz planes.

Arrays whose axes are in another order (MATLAB's coils last, BART's readout-transformed ky-kz planes, ...) are read
with ``axes=`` (``--axes``): one name per stored axis, see :mod:`scanai.kspace.readers.layout`. A 3-D or 4-D
array that read coils first would hold more coils than samples along a k-space axis is refused with that advice.

Pre-whitening (``read_kspace(path, prewhiten=True)``) uses the file's noise-only samples, or the noise covariance
or noise scan given as ``noise=`` (``--noise FILE``, :func:`read_noise`): see
:func:`scanai.kspace.recon.noise_covariance` and :func:`scanai.kspace.recon.prewhiten`. The per-coil noise level is
:attr:`KSpaceData.noise_sigma`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.progress import Progress
from scanai.kspace.data import (  # noqa: F401 (re-exported)
    FRAME_AXES,
    SUPPORTED_FORMATS,
    SUPPORTED_SUFFIXES,
    KSpaceData,
    as_kspace_array,
)
from scanai.kspace.readers.layout import parse_axes


def read_kspace(path: str | Path, *, allow_epi: bool = False, prewhiten: bool = False,
                axes: str | Sequence[str] | None = None, noise: str | Path | np.ndarray | None = None,
                progress: Progress | None = None) -> KSpaceData:
    """Read k-space from any supported file (see the module docstring) into a :class:`KSpaceData`.

    allow_epi: echo-planar (EPI) data (twix REFLECT lines, ISMRMRD ACQ_IS_REVERSE lines) are refused by default,
               because a correct EPI image needs ramp-sampling regridding and Nyquist-ghost phase correction that
               ScanAI does not do. With ``allow_epi=True`` the time-reversed lines are flipped back and the data
               are returned as they are, with ``metadata["epi_uncorrected"] = True`` (the image will show N/2
               ghosts).
    prewhiten: off by default (the data are returned as stored). When True, the coil noise covariance (from
               ``noise``, else from the file's noise-only samples) is used to decorrelate the coils and give their
               noise unit variance (:func:`scanai.kspace.recon.prewhiten`); ``metadata["prewhitened"]`` records it.
               Without either, :class:`InputError` (nothing to whiten with).
    axes:      names of the stored axes of an array file (.npy, .npz, .mat, .cfl), in stored order, as
               ``"ky,kx,coil"`` or a sequence of names (:mod:`scanai.kspace.readers.layout`); None: the format's
               convention. Raw-data files (.dat, .h5, .mrd) name their own axes and refuse it.
    noise:     a noise covariance or noise scan of the same coils (a file or an array, :func:`read_noise`); it
               replaces the file's own noise estimate in ``noise_covariance``.
    Raises :class:`FileFormatError` for a missing, unreadable, truncated or unknown file and :class:`InputError`
    for data that cannot be used (real-valued, NaN, inconsistent or wrong dimensions, no imaging data).
    """
    path = Path(path)
    progress = Progress.ensure(progress)
    if not path.is_file():
        raise FileFormatError(f"The k-space file {path} does not exist.", "Check the path and the file name.")
    suffix = path.suffix.lower()
    names = None if axes is None else parse_axes(axes)
    if names is not None and suffix in (".dat", ".h5", ".hdf5", ".mrd"):
        raise InputError(f"{path.name} is a raw-data file whose header places every readout: --axes applies to "
                         "plain arrays (.npy, .npz, .mat, .cfl) only.", "Read it without --axes.")
    reading = progress.sub(0.0, 0.95) if prewhiten else progress
    if suffix == ".dat":
        from scanai.kspace.readers.twix import read_twix

        kspace = read_twix(path, allow_epi, reading)
    elif suffix in (".npy", ".npz"):
        from scanai.kspace.readers.arrays import read_numpy

        kspace = read_numpy(path, names)
    elif suffix == ".mat":
        from scanai.kspace.readers.arrays import read_mat

        kspace = read_mat(path, names)
    elif suffix in (".h5", ".hdf5", ".mrd"):
        from scanai.kspace.readers.hdf5 import read_hdf5

        kspace = read_hdf5(path, allow_epi, reading)
    elif suffix in (".cfl", ".hdr"):
        from scanai.kspace.readers.bart import read_bart

        kspace = read_bart(path, names)
    else:
        raise FileFormatError(f"{path.name} is not a supported k-space file (got '{suffix or 'no extension'}').",
                              f"Use {SUPPORTED_FORMATS}.")
    if noise is not None:
        source = "an array" if isinstance(noise, np.ndarray) else Path(noise).name
        kspace = replace(kspace, noise_covariance=read_noise(noise, kspace.n_coils),
                         metadata={**kspace.metadata, "noise_file": source})
    if not prewhiten:
        return kspace
    from scanai.kspace.recon import prewhiten_kspace

    progress(0.95, "Pre-whitening the coils")
    whitened = prewhiten_kspace(kspace)
    progress(1.0, "Reading k-space: done")
    return whitened


def read_noise(source: str | Path | np.ndarray, n_coils: int | None = None) -> np.ndarray:
    """Coil noise covariance Psi (coils, coils), complex128, from a noise covariance or a noise scan.

    source: an array, or a file:

            - an array or ``.npy``: a (coils, coils) Hermitian matrix with a real diagonal is the covariance;
              any other complex array is noise-only samples, coils first ((coils, samples), (coils, ...), or 1-D
              for one coil) (:func:`scanai.kspace.recon.as_noise_covariance`);
            - ``.npz``: its ``noise_covariance``, else its ``noise`` samples, else its k-space as below;
            - ``.cfl``: every sample of each coil (BART dimension 3);
            - any other k-space file: its own noise-only readouts when it has them (twix noise adjustment scans,
              ISMRMRD noise acquisitions), else all its acquired (non-zero) samples, taken as noise (a scan
              acquired without RF excitation).
    n_coils: the coils of the k-space the covariance is for; :class:`InputError` when it describes another number.
    The covariance is in the units of the noise data as stored; a scan with another receiver bandwidth than the
    imaging scan needs scaling by the dwell-time ratio (:func:`scanai.kspace.recon.noise_covariance`).
    """
    from scanai.kspace.recon import as_noise_covariance

    name = "The noise array"
    if isinstance(source, np.ndarray):
        covariance = as_noise_covariance(source)
    else:
        path = Path(source)
        name = f"The noise file {path.name}"
        if not path.is_file():
            raise FileFormatError(f"The noise file {path} does not exist.", "Check the path given to --noise.")
        covariance = _noise_from_file(path, n_coils)
    if n_coils is not None and covariance.shape[0] != n_coils:
        raise InputError(f"{name} describes {covariance.shape[0]} coil(s) but the k-space has {n_coils}.",
                         "Use the noise scan (or covariance) of the same acquisition and coils.")
    return covariance


def _noise_from_file(path: Path, n_coils: int | None) -> np.ndarray:
    """:func:`read_noise` of a file (see there)."""
    from scanai.kspace.recon import as_noise_covariance

    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as error:  # numpy raises many kinds on damaged files
            raise FileFormatError(f"The noise file {path.name} could not be read as a NumPy file "
                                  f"({type(error).__name__}).", "Save it again with numpy.save.") from error
        if isinstance(loaded, np.ndarray):
            return as_noise_covariance(loaded)
        with loaded:
            for key in ("noise_covariance", "noise"):
                if key in loaded.files:
                    return as_noise_covariance(loaded[key])
    if suffix in (".cfl", ".hdr"):
        from scanai.kspace.readers.bart import COIL, read_cfl

        array = read_cfl(path)
        array = array.reshape(array.shape + (1,) * max(0, COIL + 1 - array.ndim))
        return as_noise_covariance(np.moveaxis(array, COIL, 0))
    if suffix == ".dat" and n_coils is not None:
        from scanai.kspace.readers.twix import read_twix_noise

        covariance = read_twix_noise(path, n_coils)  # a noise-only file holds no imaging lines
        if covariance is not None:
            return covariance
    kspace = read_kspace(path, allow_epi=True)
    if kspace.noise_covariance is not None:
        return kspace.noise_covariance
    return as_noise_covariance(kspace.data if kspace.frames is None else kspace.frames.swapaxes(0, 2))


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
