"""Readers of raw k-space files into :class:`scanai.kspace.data.KSpaceData`; use :func:`scanai.kspace.read_kspace`.

One module per format: ``twix`` (Siemens ``.dat``), ``mrd`` (ISMRMRD/MRD HDF5), ``fastmri`` (fastMRI HDF5),
``hdf5`` (tells those two apart), ``bart`` (``.cfl`` + ``.hdr``, with :func:`write_cfl`), ``arrays`` (``.npy``,
``.npz``, ``.mat``); ``layout`` names the axes of a stored array (``--axes``) and moves them into ScanAI's order;
``lines`` assembles single readouts into a centred grid. Each module imports its heavy
dependency (twixtools, h5py, scipy.io) only when a file is read.
"""

from scanai.kspace.readers.bart import read_cfl, write_cfl

__all__ = ["read_cfl", "write_cfl"]
