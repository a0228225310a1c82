"""Raw MRI k-space: reading (Siemens twix, ISMRMRD/MRD, fastMRI, BART, NumPy, MATLAB), coil noise pre-whitening,
spike detection and correction (the KSpaceCalibration pipeline), reconstruction and a numeric multi-coil phantom.

Array layout everywhere: k-space ``(coils, slices, ky, kx)``, complex64, centred (DC at ``(ky // 2, kx // 2)``);
images ``(slices, ny, nx)`` as :class:`scanai.core.image.Volume`. Importing this package is cheap: twixtools,
h5py, scipy.io, torch and matplotlib are imported only when used.

The public entry points::

    from scanai.kspace import read_kspace, detect, calibrate, run

    kspace = read_kspace("scan.dat")              # KSpaceData; axes=..., noise=..., prewhiten=True when needed
    detection = detect(kspace)                    # Detection: spike mask (slices, ky, kx), table, patch scores
    corrected = calibrate(kspace, detection)      # corrected copy of kspace.data; only flagged samples change
    result = run(kspace)                          # all of it + original / corrected / difference RSS images

:func:`read_kspace` reads any supported file (:mod:`scanai.kspace.io`); :func:`detect`, :func:`calibrate`,
:func:`run` and :func:`run_file` are :mod:`scanai.kspace.pipeline`'s; :func:`reconstruct` makes the
root-sum-of-squares image of any :class:`KSpaceData`.
"""

from scanai.kspace.correct import DEFAULT_METHOD, METHODS
from scanai.kspace.data import KSpaceData, as_kspace_array
from scanai.kspace.io import read_kspace, read_noise, write_kspace_npz
from scanai.kspace.phantom import PhantomCase, coil_sensitivities, make_phantom, shepp_logan
from scanai.kspace.pipeline import (
    DEFAULT_SENSITIVITY,
    DETECTORS,
    CalibrationResult,
    Detection,
    calibrate,
    detect,
    run,
    run_file,
)
from scanai.kspace.readers.bart import read_cfl, write_cfl
from scanai.kspace.readers.layout import parse_axes
from scanai.kspace.recon import (
    KSpaceImages,
    as_noise_covariance,
    image_stats,
    log_magnitude,
    noise_covariance,
    noise_sigma,
    prewhiten,
    prewhiten_kspace,
    reconstruct,
    remove_readout_oversampling,
    rss,
    to_image,
    to_kspace,
    whitening_matrix,
)

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_SENSITIVITY",
    "DETECTORS",
    "METHODS",
    "CalibrationResult",
    "Detection",
    "KSpaceData",
    "KSpaceImages",
    "PhantomCase",
    "as_kspace_array",
    "as_noise_covariance",
    "calibrate",
    "coil_sensitivities",
    "detect",
    "image_stats",
    "log_magnitude",
    "make_phantom",
    "noise_covariance",
    "noise_sigma",
    "parse_axes",
    "prewhiten",
    "prewhiten_kspace",
    "read_cfl",
    "read_kspace",
    "read_noise",
    "reconstruct",
    "remove_readout_oversampling",
    "rss",
    "run",
    "run_file",
    "shepp_logan",
    "to_image",
    "to_kspace",
    "whitening_matrix",
    "write_cfl",
    "write_kspace_npz",
]
