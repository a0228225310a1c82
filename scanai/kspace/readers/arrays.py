"""Plain arrays: NumPy ``.npy`` / ``.npz`` and MATLAB ``.mat`` (v5/v7) files holding complex k-space."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.kspace.data import KSpaceData, as_kspace_array
from scanai.kspace.readers.layout import arrange, check_coils_first
from scanai.kspace.readers.lines import split_frames

_NPZ_EXTRAS = ("readout_oversampling", "spacing_mm", "frames", "noise", "noise_covariance", "slices_are_kz",
               "prewhitened")


def _npz_contents(path: Path, loaded: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(k-space array, optional extras by name) of an open ``.npz``."""
    keys = list(loaded.files)
    try:
        if "kspace" in keys:
            array = loaded["kspace"]
        elif len(keys) == 1:
            array = loaded[keys[0]]
        else:
            raise FileFormatError(f"{path.name} holds several arrays ({', '.join(keys)}) and none is "
                                  "named 'kspace'.", "Save the k-space under the key 'kspace'.")
        extras = {key: loaded[key] for key in _NPZ_EXTRAS if key in keys}
    except FileFormatError:
        raise
    except Exception as error:  # zipfile, zlib and numpy raise many kinds on a damaged member
        raise FileFormatError(f"{path.name} could not be read: the archive is damaged ({type(error).__name__}).",
                              "Save the k-space again with numpy.savez.") from error
    return array, extras


def arranged(array: np.ndarray, axes: Sequence[str] | None, what: str, source: str
             ) -> tuple[np.ndarray, np.ndarray | None, list[str], bool]:
    """(data (coils, slices, ky, kx), frames or None, axis names, slices_are_kz) of a stored array.

    axes: the names of its axes (``--axes``, :mod:`scanai.kspace.readers.layout`), or None for the default
    ``(ky, kx)``, ``(coil, ky, kx)`` or ``(coil, slice, ky, kx)``, refused when that would make more coils than
    samples along a k-space axis (:func:`~scanai.kspace.readers.layout.check_coils_first`).
    """
    if axes is None:
        if np.iscomplexobj(array):  # a real array gets as_kspace_array's clearer message
            check_coils_first(np.shape(array), source)
        return as_kspace_array(array, what), None, ["coil", "slice", "ky", "kx"], False
    layout = arrange(array, axes, source)
    data, frames = split_frames(layout.frames)
    return as_kspace_array(data, what), frames, list(layout.axes), layout.slices_are_kz


def read_numpy(path: Path, axes: Sequence[str] | None = None) -> KSpaceData:
    """``.npy`` (one complex array) or ``.npz`` (key ``kspace`` or the only array, plus optional extras).

    axes: names of the array's axes (see :func:`arranged`); not allowed with an ``.npz`` that holds ``frames``
    (written by :func:`scanai.kspace.io.write_kspace_npz`, already in ScanAI's layout).
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises ValueError, SyntaxError, TokenError, BadZipFile, ... on damaged files
        raise FileFormatError(f"{path.name} could not be read as a NumPy file: it is damaged or incomplete "
                              f"({type(error).__name__}).", "Save the k-space again with numpy.save or numpy.savez.") \
            from error
    if isinstance(loaded, np.ndarray):
        array, extras = loaded, {}
    else:
        with loaded:
            array, extras = _npz_contents(path, loaded)
    if axes is not None and "frames" in extras:
        raise InputError(f"{path.name} holds k-space frames written by ScanAI, whose axes are known.",
                         "Read it without --axes.")
    data, frames, names, kz = arranged(array, axes, f"The k-space in {path.name}", path.name)
    spacing = tuple(float(s) for s in np.ravel(extras["spacing_mm"])) if "spacing_mm" in extras else None
    covariance = extras.get("noise_covariance")
    metadata: dict[str, Any] = {"format": "numpy", "original_shape": list(np.shape(array)), "axes": names,
                                "noise_scans": 0, "prewhitened": bool(extras.get("prewhitened", False))}
    if covariance is None and "noise" in extras:
        from scanai.kspace.recon import noise_covariance

        covariance = noise_covariance(extras["noise"])
        metadata.update({"noise_scans": 1, "noise_samples": int(np.size(extras["noise"]) // data.shape[0])})
    frames = extras.get("frames", frames)
    if extras.get("slices_are_kz", False):
        kz = True
        metadata["axes"][1] = "kz"
    return KSpaceData(data, readout_oversampling=int(extras.get("readout_oversampling", 1)),
                      spacing_mm=spacing or (1.0, 1.0, 1.0), spacing_from_header=spacing is not None,
                      slices_are_kz=kz, source=path.name, metadata=metadata, frames=frames,
                      noise_covariance=covariance)


def read_mat(path: Path, axes: Sequence[str] | None = None) -> KSpaceData:
    """MATLAB v5/v7 file: variable ``data``, or the only complex (or only numeric) variable.

    axes: names of the variable's axes in MATLAB's order (see :func:`arranged`), or None for the default.
    """
    import scipy.io

    try:
        contents = scipy.io.loadmat(str(path))
    except NotImplementedError as error:
        raise FileFormatError(f"{path.name} is a MATLAB v7.3 (HDF5) file, which cannot be read here.",
                              "In MATLAB, save it again with save(file, 'data', '-v7').") from error
    except Exception as error:  # scipy raises ValueError, TypeError, OSError, ... for damaged files
        raise FileFormatError(f"{path.name} could not be read as a MATLAB file: it may be corrupt or truncated.",
                              "Save the k-space again from MATLAB (save(file, 'data', '-v7')).") from error
    arrays = {key: value for key, value in contents.items()
              if not key.startswith("__") and isinstance(value, np.ndarray) and value.dtype.kind in "biufc"}
    complex_keys = [key for key, value in arrays.items() if np.iscomplexobj(value)]
    if "data" in arrays:
        key = "data"
    elif len(complex_keys) == 1:
        key = complex_keys[0]
    elif len(arrays) == 1:
        key = next(iter(arrays))
    else:
        raise FileFormatError(f"{path.name} holds {len(arrays)} numeric variables ({', '.join(arrays) or 'none'}) "
                              "and none is named 'data'.", "Save the complex k-space in a variable named 'data'.")
    data, frames, names, kz = arranged(arrays[key], axes, f"The variable '{key}' in {path.name}", path.name)
    return KSpaceData(data, slices_are_kz=kz, source=path.name, frames=frames,
                      metadata={"format": "matlab", "variable": key, "original_shape": list(arrays[key].shape),
                                "axes": names, "noise_scans": 0, "prewhitened": False})
