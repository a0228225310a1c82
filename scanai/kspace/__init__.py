"""Raw MRI k-space: reading (Siemens twix, ISMRMRD/MRD, fastMRI, BART, NumPy, MATLAB), coil noise pre-whitening,
reconstruction and a numeric multi-coil phantom.

Array layout everywhere: k-space ``(coils, slices, ky, kx)``, complex64, centred (DC at ``(ky // 2, kx // 2)``);
images ``(slices, ny, nx)`` as :class:`scanai.core.image.Volume`. Importing this package is cheap: twixtools,
h5py, scipy.io and matplotlib are imported only when used.
"""

from scanai.kspace.data import KSpaceData, as_kspace_array
from scanai.kspace.io import read_kspace, write_kspace_npz
from scanai.kspace.phantom import PhantomCase, coil_sensitivities, make_phantom, shepp_logan
from scanai.kspace.readers.bart import read_cfl, write_cfl
from scanai.kspace.recon import (
    KSpaceImages,
    image_stats,
    log_magnitude,
    noise_covariance,
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
    "KSpaceData",
    "KSpaceImages",
    "PhantomCase",
    "as_kspace_array",
    "coil_sensitivities",
    "image_stats",
    "log_magnitude",
    "make_phantom",
    "noise_covariance",
    "prewhiten",
    "prewhiten_kspace",
    "read_cfl",
    "read_kspace",
    "reconstruct",
    "remove_readout_oversampling",
    "rss",
    "shepp_logan",
    "to_image",
    "to_kspace",
    "whitening_matrix",
    "write_cfl",
    "write_kspace_npz",
]
