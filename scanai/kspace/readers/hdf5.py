"""HDF5 k-space files (``.h5``, ``.hdf5``, ``.mrd``): ISMRMRD/MRD raw data or fastMRI, told apart by content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scanai.core.errors import FileFormatError, ScanAIError
from scanai.core.progress import Progress
from scanai.kspace.data import KSpaceData
from scanai.kspace.readers.fastmri import read_fastmri
from scanai.kspace.readers.mrd import read_mrd, read_text

_AGAIN = "Copy the file again, or export it again from its source."


def mrd_group(file: Any) -> Any | None:
    """The ISMRMRD group of an open HDF5 file (``/dataset``, or another top-level group holding ``xml`` or an
    acquisition table ``data``), or None."""
    import h5py

    candidates = ["dataset"] + [name for name in file if name != "dataset"]
    for name in candidates:
        group = file.get(name)
        if isinstance(group, h5py.Group) and ("xml" in group or _is_acquisition_table(group.get("data"))):
            return group
    return None


def _is_acquisition_table(dataset: Any) -> bool:
    names = getattr(getattr(dataset, "dtype", None), "names", None) or ()
    return "head" in names and "data" in names


def read_hdf5(path: Path, allow_epi: bool, progress: Progress) -> KSpaceData:
    """Read an ISMRMRD/MRD or fastMRI HDF5 file into a :class:`KSpaceData` (see those readers)."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise FileFormatError(f"{path.name} could not be opened as an HDF5 file: it may be corrupt, truncated or "
                              "of another kind.", _AGAIN) from error
    try:
        with file:
            group = mrd_group(file)
            if group is not None:
                xml = read_text(group["xml"][()]) if "xml" in group else None
                return read_mrd(group, xml, path, allow_epi, progress)
            if isinstance(file.get("kspace"), h5py.Dataset):
                return read_fastmri(file, path, progress)
            raise FileFormatError(f"{path.name} is an HDF5 file but holds neither ISMRMRD raw data (a 'dataset' group "
                                  "with 'data' and 'xml') nor fastMRI k-space (a 'kspace' dataset); it holds: "
                                  f"{', '.join(list(file)[:10]) or 'nothing'}.",
                                  "Use an ISMRMRD/MRD file (e.g. from siemens_to_ismrmrd) or a fastMRI file.")
    except ScanAIError:
        raise
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError, ... on damaged content
        raise FileFormatError(f"{path.name} is damaged: reading its HDF5 content failed ({type(error).__name__}).",
                              _AGAIN) from error
