"""Reading multi-coil MRI k-space into one array layout.

Every reader returns a :class:`KSpaceData` whose ``data`` is complex64 with shape ``(coils, slices, ky, kx)``:

- ``coils``  receiver channels (1 for single-channel data);
- ``slices`` 2-D slices, or the partition (kz) encodings of a 3-D scan when ``slices_are_kz`` is True;
- ``ky``     phase-encoding lines (rows); missing lines (partial Fourier, parallel imaging) are zero;
- ``kx``     readout samples (columns), *including* any readout oversampling.

k-space is *centred*: the DC sample (k = 0) sits at index ``(ky // 2, kx // 2)``, so the image is
``fftshift(ifft2(ifftshift(k)))`` (see :func:`scanai.kspace.recon.to_image`).

Supported files (by extension):

- ``.npy`` / ``.npz`` -- a complex array (in ``.npz``: key ``kspace``, or the only array). Dimensions are read as
  ``(ky, kx)``, ``(coils, ky, kx)`` or ``(coils, slices, ky, kx)``: a 3-D array is always coils first.
  ``.npz`` files may also hold ``readout_oversampling`` (int) and ``spacing_mm`` (3 floats), as written by
  :func:`write_kspace_npz`.
- ``.mat`` -- MATLAB v5/v7 file (``scipy.io.loadmat``), key ``data`` or the only complex array, with the same
  dimension convention as ``.npy``. MATLAB v7.3 (HDF5) files are refused with advice to re-save.
- ``.dat`` -- Siemens raw data ("twix", VB or VD/VE), read with ``twixtools``.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.core.progress import Progress

SUPPORTED_SUFFIXES = (".dat", ".npy", ".npz", ".mat")

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

    data:                 complex64, shape (coils, slices, ky, kx), centred (DC at (ky // 2, kx // 2)); kx includes
                          readout oversampling.
    readout_oversampling: integer factor by which the readout (kx) was oversampled: the image is
                          ``kx / readout_oversampling`` pixels wide after cropping (2 on Siemens scanners, 1 when
                          the file holds no oversampling).
    spacing_mm:           pixel spacing of the reconstructed image *after* oversampling removal, in mm, in
                          Volume (i, j, k) order = (readout, phase encoding, slice).
    spacing_from_header:  True when ``spacing_mm`` is known (from the twix header's field of view and matrix, from
                          an ``.npz`` written by :func:`write_kspace_npz`, or set by a generator); False when it
                          is the 1 mm fallback (no header, or a header that does not match the data).
    slices_are_kz:        True when axis 1 is a 3-D partition (kz) encoding rather than separate 2-D slices;
                          reconstruction then also inverse-Fourier-transforms along it.
    source:               file name (or a description for generated data).
    metadata:             free-form facts about the file (protocol, counters, notes), JSON-friendly.
    """

    data: np.ndarray
    readout_oversampling: int = 1
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    spacing_from_header: bool = False
    slices_are_kz: bool = False
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

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

    @property
    def n_coils(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(slices, ny, nx) of the reconstructed image after readout-oversampling removal."""
        _, slices, ky, kx = self.data.shape
        return slices, ky, kx // self.readout_oversampling


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


def read_kspace(path: str | Path, *, allow_epi: bool = False, progress: Progress | None = None) -> KSpaceData:
    """Read k-space from ``.dat`` (Siemens twix), ``.npy``, ``.npz`` or ``.mat`` into a :class:`KSpaceData`.

    allow_epi: echo-planar (EPI) twix data are refused by default, because a correct EPI image needs
               ramp-sampling regridding and Nyquist-ghost phase correction that ScanAI does not do. With
               ``allow_epi=True`` the time-reversed (REFLECT) lines are flipped back and the data are returned
               as they are, with ``metadata["epi_uncorrected"] = True`` (the image will show N/2 ghosts).
    Raises :class:`FileFormatError` for a missing, unreadable or truncated file and :class:`InputError` for
    data that cannot be used (real-valued, NaN, wrong dimensions, empty).
    """
    path = Path(path)
    progress = Progress.ensure(progress)
    if not path.is_file():
        raise FileFormatError(f"The k-space file {path} does not exist.", "Check the path and the file name.")
    suffix = path.suffix.lower()
    if suffix == ".dat":
        return _read_twix(path, allow_epi, progress)
    if suffix in (".npy", ".npz"):
        return _read_numpy(path)
    if suffix == ".mat":
        return _read_mat(path)
    raise FileFormatError(f"{path.name} is not a supported k-space file (got '{suffix or 'no extension'}').",
                          "Use Siemens raw data (.dat), a NumPy array (.npy/.npz) or a MATLAB file (.mat).")


def write_kspace_npz(kspace: KSpaceData, path: str | Path) -> Path:
    """Save ``kspace`` as a compressed ``.npz`` that :func:`read_kspace` reads back exactly; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, kspace=kspace.data, readout_oversampling=np.int64(kspace.readout_oversampling),
                        spacing_mm=np.asarray(kspace.spacing_mm, dtype=float))
    return path


# --------------------------------------------------------------------------------------------- NumPy / MATLAB


def _read_numpy(path: Path) -> KSpaceData:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise FileFormatError(f"{path.name} could not be read as a NumPy file: it may be corrupt or truncated.",
                              "Save the k-space again with numpy.save or numpy.savez.") from error
    oversampling, spacing = 1, None
    if isinstance(loaded, np.ndarray):
        array = loaded
    else:
        with loaded:
            keys = list(loaded.files)
            try:
                if "kspace" in keys:
                    array = loaded["kspace"]
                elif len(keys) == 1:
                    array = loaded[keys[0]]
                else:
                    raise FileFormatError(f"{path.name} holds several arrays ({', '.join(keys)}) and none is "
                                          "named 'kspace'.", "Save the k-space under the key 'kspace'.")
                if "readout_oversampling" in keys:
                    oversampling = int(loaded["readout_oversampling"])
                if "spacing_mm" in keys:
                    spacing = tuple(float(s) for s in np.ravel(loaded["spacing_mm"]))
            except FileFormatError:
                raise
            except (OSError, ValueError, EOFError) as error:
                raise FileFormatError(f"{path.name} could not be read: the archive is damaged.",
                                      "Save the k-space again with numpy.savez.") from error
    data = as_kspace_array(array, f"The k-space in {path.name}")
    return KSpaceData(data, readout_oversampling=oversampling, spacing_mm=spacing or (1.0, 1.0, 1.0),
                      spacing_from_header=spacing is not None, source=path.name,
                      metadata={"format": "numpy", "original_shape": list(np.shape(array))})


def _read_mat(path: Path) -> KSpaceData:
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
    data = as_kspace_array(arrays[key], f"The variable '{key}' in {path.name}")
    return KSpaceData(data, source=path.name,
                      metadata={"format": "matlab", "variable": key, "original_shape": list(arrays[key].shape)})


# --------------------------------------------------------------------------------------------- Siemens twix


def _load_twix_scans(path: Path) -> tuple[list[dict], list[str]]:
    """twixtools' scan list, with whatever it printed kept as warnings instead of cluttering the console."""
    import twixtools

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            scans = twixtools.read_twix(str(path), verbose=False, parse_pmu=False, parse_geometry=False)
    except Exception as error:  # twixtools raises ValueError, KeyError, IndexError, ... on damaged files
        raise FileFormatError(f"{path.name} could not be read as Siemens raw data (twix): it may be corrupt, "
                              "truncated or not a raw-data file.",
                              "Copy the .dat file again from the scanner (twix / raw-data export).") from error
    warnings = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
    if not scans:
        raise FileFormatError(f"{path.name} holds no measurement.", "Copy the .dat file again from the scanner.")
    return scans, warnings


def _header_value(header: dict, *keys: Any, default: Any = None) -> Any:
    """``header[k0][k1]...`` or ``default`` when any level is missing."""
    value: Any = header
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return default
    return value


def _is_ramp_sampled(header: dict) -> bool:
    for section in ("Meas", "Protocol"):
        mode = _header_value(header, section, "alRegridMode")
        if isinstance(mode, (list, tuple)) and mode and isinstance(mode[0], (int, float)):
            return mode[0] > 1  # 1 = no regridding, 2 = trapezoidal ramp sampling, ...
    return False


def _readout_oversampling(header: dict, samples: int) -> int:
    factor = _header_value(header, "Dicom", "flReadoutOSFactor")
    if isinstance(factor, (int, float)) and factor >= 1 and abs(factor - round(factor)) < 1e-6:
        factor = int(round(factor))
        if samples % factor == 0:
            return factor
    base = _header_value(header, "MeasYaps", "sKSpace", "lBaseResolution")
    if isinstance(base, int) and base > 0 and samples == 2 * base:
        return 2
    return 1


def _twix_spacing(header: dict, image_shape: tuple[int, int, int], slices_are_kz: bool
                  ) -> tuple[tuple[float, float, float], bool, str]:
    """(spacing_mm, from_header, note): spacing from FOV / matrix when the header describes this data."""
    n_slices, ny, nx = image_shape
    first = _header_value(header, "MeasYaps", "sSliceArray", "asSlice", 0, default={})
    base = _header_value(header, "MeasYaps", "sKSpace", "lBaseResolution")
    lines = _header_value(header, "MeasYaps", "sKSpace", "lPhaseEncodingLines")
    fov_ro, fov_pe = first.get("dReadoutFOV"), first.get("dPhaseFOV")
    thickness = first.get("dThickness")
    if not all(isinstance(v, (int, float)) and v > 0 for v in (fov_ro, fov_pe, thickness, base, lines)):
        return (1.0, 1.0, 1.0), False, "the header has no field of view or matrix: 1 mm pixels assumed"
    if nx != base or ny != lines:
        return (1.0, 1.0, 1.0), False, (
            f"the header's matrix ({base} x {lines}) does not match the data ({nx} x {ny}), e.g. a Pulseq or "
            "custom sequence: 1 mm pixels assumed")
    slice_mm = float(thickness)
    if slices_are_kz:
        slice_mm = float(thickness) / n_slices
    elif n_slices > 1:
        second = _header_value(header, "MeasYaps", "sSliceArray", "asSlice", 1, default={})
        positions = [np.array([_header_value(s, "sPosition", axis, default=0.0) for axis in ("dSag", "dCor", "dTra")],
                              dtype=float) for s in (first, second)]
        distance = float(np.linalg.norm(positions[1] - positions[0]))
        slice_mm = distance if distance > 0 else slice_mm
    return (float(fov_ro) / nx, float(fov_pe) / ny, slice_mm), True, "spacing from the header's FOV and matrix"


def _read_twix(path: Path, allow_epi: bool, progress: Progress) -> KSpaceData:
    scans, warnings = _load_twix_scans(path)
    scan = scans[-1]  # the last measurement of a multi-raid file is the imaging scan (earlier ones: adjustments)
    header = scan.get("hdr") or {}
    blocks = scan.get("mdb") or []
    if not any(block.is_flag_set("LASTSCANINMEAS") for block in blocks):
        raise FileFormatError(f"{path.name} is incomplete: the scanner's end-of-measurement marker is missing, so "
                              "the file was probably truncated during copying or the scan was aborted.",
                              "Copy the .dat file again from the scanner.")
    lines = [block for block in blocks if block.is_image_scan() and block.mdh.UsedChannels > 0
             and block.mdh.SamplesInScan > 0]
    if not lines:
        raise FileFormatError(f"{path.name} holds no imaging lines (only noise, reference or navigator scans).",
                              "Export the raw data of the imaging scan itself.")
    sizes = Counter((int(b.mdh.UsedChannels), int(b.mdh.SamplesInScan)) for b in lines)
    if len(sizes) > 1:
        raise InputError(f"The imaging lines of {path.name} differ in coils or length ({dict(sizes)}): this is not "
                         "a Cartesian scan that ScanAI can assemble.", "Use a Cartesian (GRE, SE, TSE) raw-data file.")
    (n_coils, n_samples), = sizes
    reflected = [b.is_flag_set("REFLECT") for b in lines]
    is_epi = any(reflected) or _is_ramp_sampled(header)
    if is_epi and not allow_epi:
        raise InputError(f"{path.name} holds an echo-planar (EPI) scan: its lines alternate direction and are "
                         "sampled on the gradient ramps, which needs ramp-sampling regridding and ghost (phase) "
                         "correction that ScanAI does not do.",
                         "Use a Cartesian (GRE, SE, TSE) raw-data file, or read it with allow_epi=True to get the "
                         "uncorrected k-space.")

    counters = {name: np.array([getattr(b, name) for b in lines], dtype=int)
                for name in ("cLin", "cPar", "cSlc", "cEco", "cRep", "cSet", "cPhs", "cAve")}
    n_par, n_slc = len(np.unique(counters["cPar"])), len(np.unique(counters["cSlc"]))
    if n_par > 1 and n_slc > 1:
        raise InputError(f"{path.name} is a multi-slab 3-D scan ({n_slc} slabs x {n_par} partitions), which ScanAI "
                         "does not assemble.", "Use a single-slab 3-D or a 2-D multi-slice raw-data file.")
    keep = np.ones(len(lines), dtype=bool)
    dropped: dict[str, int] = {}
    for name in ("cEco", "cRep", "cSet", "cPhs"):
        values = counters[name]
        if len(np.unique(values)) > 1:
            dropped[name] = len(np.unique(values)) - 1
            keep &= values == values.min()
    slices_are_kz = n_par > 1
    slice_counter = counters["cPar"] if slices_are_kz else counters["cSlc"]
    slice_index = slice_counter - slice_counter.min()
    centre_lin = int(lines[0].mdh.CenterLin)
    centre_par = int(lines[0].mdh.CenterPar)
    centre_col = int(lines[0].mdh.CenterCol)
    n_ky = max(int(counters["cLin"].max()) + 1, 2 * centre_lin)
    n_sl = int(slice_index.max()) + 1
    if slices_are_kz:
        n_sl = max(n_sl, 2 * centre_par)
    # Asymmetric echo: pad the readout so that the echo centre lands at kx // 2.
    pad_front = max(n_samples - 2 * centre_col, 0) if 0 < centre_col < n_samples else 0
    pad_back = max(2 * centre_col - n_samples, 0) if 0 < centre_col < n_samples else 0
    n_kx = n_samples + pad_front + pad_back

    total = np.zeros((n_coils, n_sl, n_ky, n_kx), dtype=np.complex128)
    count = np.zeros((n_sl, n_ky), dtype=np.int64)
    selected = np.flatnonzero(keep)
    for step, index in enumerate(selected):
        if step % 32 == 0:
            progress(step / len(selected), f"Reading k-space line {step + 1}/{len(selected)}")
        block = lines[index]
        try:
            samples = np.asarray(block.data)
        except Exception as error:
            raise FileFormatError(f"{path.name} is incomplete: line {step + 1} of the scan could not be read, so "
                                  "the file was probably truncated.", "Copy the .dat file again from the scanner."
                                  ) from error
        if samples.shape != (n_coils, n_samples):
            raise FileFormatError(f"{path.name} is damaged: a line holds {samples.shape} samples instead of "
                                  f"{(n_coils, n_samples)}.", "Copy the .dat file again from the scanner.")
        if reflected[index]:
            samples = samples[:, ::-1]
        ky, sl = int(counters["cLin"][index]), int(slice_index[index])
        total[:, sl, ky, pad_front:pad_front + n_samples] += samples
        count[sl, ky] += 1
    progress(1.0, "Reading k-space: done")

    sampled = count > 0
    data = total / np.maximum(count, 1)[np.newaxis, :, :, np.newaxis]
    oversampling = _readout_oversampling(header, n_kx)
    image_shape = (n_sl, n_ky, n_kx // oversampling)
    spacing, from_header, spacing_note = _twix_spacing(header, image_shape, slices_are_kz)
    sequence = str(_header_value(header, "MeasYaps", "tSequenceFileName", default=""))
    if from_header and "pulseq" in sequence.lower():
        spacing_note += " (Pulseq: the header is the interpreter's protocol; check it against the .seq file's FOV)"
    metadata: dict[str, Any] = {
        "format": "siemens-twix",
        "path": str(path),
        "measurement": len(scans),
        "protocol": _header_value(header, "MeasYaps", "tProtocolName", default=""),
        "sequence": sequence,
        "imaging_lines": int(len(selected)),
        "other_blocks": int(len(blocks) - len(lines)),
        "sampled_fraction": float(sampled.mean()),
        "averaged_lines": int((count > 1).sum()),
        "readout_padding": [int(pad_front), int(pad_back)],
        "dropped_counters": dropped,
        "spacing_note": spacing_note,
        "twixtools_messages": warnings,
    }
    if is_epi:
        metadata["epi_uncorrected"] = True
        metadata["reflected_lines"] = int(np.count_nonzero(np.asarray(reflected)[keep]))
    data = as_kspace_array(data, f"The k-space in {path.name}")
    return KSpaceData(data, readout_oversampling=oversampling, spacing_mm=spacing, spacing_from_header=from_header,
                      slices_are_kz=slices_are_kz, source=path.name, metadata=metadata)
