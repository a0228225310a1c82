"""fastMRI HDF5 files: dataset ``kspace`` + the ISMRMRD XML header ``ismrmrd_header``.

fastMRI stores multi-coil k-space as ``(slices, coils, rows, columns)`` complex64 (single-coil: ``(slices, rows,
columns)``) where the rows are the (2x oversampled) *readout* and the columns the phase encoding, e.g. knee
``(slices, 15, 640, 368)``: 640 readout samples, 368 phase-encoding lines. The reader checks this against the
header (encoded matrix x = readout, y = phase encoding) and transposes to ScanAI's ``(coils, slices, ky, kx)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import InputError
from scanai.core.progress import Progress
from scanai.kspace.data import KSpaceData, as_kspace_array
from scanai.kspace.readers.mrd import MrdHeader, header_spacing, parse_mrd_header, read_text

_ATTRIBUTES = ("acquisition", "max", "norm")


def _header(file: Any, source: str) -> MrdHeader | None:
    if "ismrmrd_header" in file:
        return parse_mrd_header(read_text(file["ismrmrd_header"][()]), source)
    if "ismrmrd_header" in file.attrs:
        return parse_mrd_header(read_text(file.attrs["ismrmrd_header"]), source)
    return None


def readout_is_rows(shape: tuple[int, int], header: MrdHeader | None, mask_length: int | None) -> tuple[bool, str]:
    """(True when the readout is the second-to-last axis of the file's array, how that was decided).

    shape: the file's last two sizes (rows, columns). Decided by the header's encoded matrix (x = readout) when
    it tells the two axes apart, else by the sampling mask (it runs along phase encoding), else by the fastMRI
    convention (readout = rows).
    """
    rows, columns = shape
    if header is not None and header.encoded_matrix is not None:
        readout, phase = header.encoded_matrix[:2]
        if readout != phase and (rows, columns) == (readout, phase):
            return True, "header: encoded matrix x (readout) = rows"
        if readout != phase and (rows, columns) == (phase, readout):
            return False, "header: encoded matrix x (readout) = columns"
        if rows == readout != columns:
            return True, "header: encoded matrix x (readout) = rows (phase encoding not padded to the matrix)"
        if columns == readout != rows:
            return False, "header: encoded matrix x (readout) = columns (phase encoding not padded to the matrix)"
    if mask_length is not None and rows != columns:
        if mask_length == columns:
            return True, "sampling mask runs along the columns (phase encoding)"
        if mask_length == rows:
            return False, "sampling mask runs along the rows (phase encoding)"
    return True, "fastMRI convention (readout = rows): the header does not tell the axes apart"


def _pad_phase_encoding(data: np.ndarray, header: MrdHeader | None) -> tuple[np.ndarray, int]:
    """(data, first line): k-space whose phase-encoding axis holds only the acquired lines (fewer than the
    header's encoded matrix y) is zero-padded so that line ``kspace_encoding_step_1.center`` lands at ny // 2, as
    fastMRI's own loader does; other data are returned as they are with offset 0."""
    n_ky = data.shape[2]
    if header is None or header.encoded_matrix is None or header.encoded_matrix[1] <= n_ky:
        return data, 0
    centre = header.centre("kspace_encoding_step_1")
    n_phase = header.encoded_matrix[1]
    offset = n_phase // 2 - centre if centre is not None else -1
    if offset < 0 or offset + n_ky > n_phase:
        return data, 0
    padded = np.zeros(data.shape[:2] + (n_phase, data.shape[3]), dtype=data.dtype)
    padded[:, :, offset:offset + n_ky] = data
    return padded, int(offset)


def read_fastmri(file: Any, path: Path, progress: Progress) -> KSpaceData:
    """Read the ``kspace`` dataset of an open fastMRI HDF5 file into a :class:`KSpaceData`."""
    source = path.name
    dataset = file["kspace"]
    if dataset.ndim not in (3, 4):
        raise InputError(f"The 'kspace' dataset of {source} has shape {dataset.shape}; fastMRI k-space is (slices, "
                         "coils, readout, phase) or, single-coil, (slices, readout, phase).",
                         "Check that this is a fastMRI file.")
    if dataset.dtype.kind != "c":
        raise InputError(f"The 'kspace' dataset of {source} holds {dataset.dtype} numbers, not complex k-space.",
                         "Use the original fastMRI file (complex64 k-space).")
    header = _header(file, source)
    mask = file["mask"] if "mask" in file else None
    mask_length = int(mask.shape[-1]) if mask is not None and mask.ndim >= 1 else None
    transpose, orientation = readout_is_rows(tuple(dataset.shape[-2:]), header, mask_length)
    n_slices = int(dataset.shape[0])
    n_coils = int(dataset.shape[1]) if dataset.ndim == 4 else 1
    rows, columns = dataset.shape[-2:]
    n_ky, n_kx = (columns, rows) if transpose else (rows, columns)
    data = np.empty((n_coils, n_slices, n_ky, n_kx), dtype=np.complex64)
    for index, _ in progress.iterate(range(n_slices), "Reading slice"):
        plane = np.asarray(dataset[index]).reshape(n_coils, rows, columns)
        data[:, index] = plane.transpose(0, 2, 1) if transpose else plane
    data, ky_offset = _pad_phase_encoding(data, header)
    data = as_kspace_array(data, f"The k-space in {source}")
    n_ky = data.shape[2]
    oversampling = header.readout_oversampling(n_kx) if header is not None else 1
    spacing, from_header = header_spacing(header, (n_kx, n_ky, 1), None)
    file_axes = ["slice", "coil"][: dataset.ndim - 2] + (["kx", "ky"] if transpose else ["ky", "kx"])
    metadata: dict[str, Any] = {
        "format": "fastmri",
        "path": str(path),
        "axes": ["coil", "slice", "ky", "kx"],
        "file_shape": list(dataset.shape),
        "file_axes": file_axes,
        "orientation": orientation,
        "header": header is not None,
        "protocol": header.protocol if header is not None else "",
        "has_mask": mask is not None,
        "phase_padding": ky_offset,
        "noise_scans": 0,
        "prewhitened": False,
        "spacing_note": "spacing from the header's encoded field of view" if from_header else
                        "no header field of view: 1 mm pixels assumed",
    }
    if header is None:
        metadata["oversampling_note"] = "no header: readout oversampling unknown, taken as 1"
    for name in _ATTRIBUTES:
        if name in file.attrs:
            value = file.attrs[name]
            metadata[name] = value.decode() if isinstance(value, bytes) else np.asarray(value).tolist()
    return KSpaceData(data, readout_oversampling=oversampling, spacing_mm=spacing, spacing_from_header=from_header,
                      source=source, metadata=metadata)
