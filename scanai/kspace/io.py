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

from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError
from scanai.core.progress import Progress
from scanai.kspace.data import (  # noqa: F401 (re-exported)
    FRAME_AXES,
    SUPPORTED_FORMATS,
    SUPPORTED_SUFFIXES,
    KSpaceData,
    as_kspace_array,
)


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
