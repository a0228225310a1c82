"""BART arrays: ``name.hdr`` (text: a ``# Dimensions`` line, then the sizes) + ``name.cfl`` (complex64, column-major).

BART's dimension order is 0 readout, 1 phase encoding 1, 2 phase encoding 2 (kz), 3 coil, 4 maps, 5 echo (TE),
6-9 coefficients / iterations / shifts, 10 time, 11 time2, 12 level, 13 slice, 14 average, 15 batch. ScanAI maps
readout -> kx, phase 1 -> ky, kz or slice -> slice axis, coil -> coil, echo -> contrast and time -> repetition.
Readout-transformed data (readout size 1, e.g. BART's example ``1 x 230 x 180 x 8``) are a ky-kz plane per readout
position: the plane's rows are ky, its columns kz. Other layouts are named with ``--axes``
(:mod:`scanai.kspace.readers.layout`). BART k-space is centred like ScanAI's (DC at n // 2), so no shift is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scanai.core.errors import FileFormatError, InputError
from scanai.kspace.data import KSpaceData, as_kspace_array
from scanai.kspace.readers.layout import AXES_HELP, Layout, arrange
from scanai.kspace.readers.lines import split_frames

READ, PHASE1, PHASE2, COIL, MAPS, TE, TIME, SLICE = 0, 1, 2, 3, 4, 5, 10, 13
_DIMENSION_NAMES = {4: "maps", 6: "coefficient", 7: "coefficient 2", 8: "iteration", 9: "shift", 11: "time 2",
                    12: "level", 14: "average", 15: "batch"}
#: BART's dimensions 0-15 as :mod:`scanai.kspace.readers.layout` names them (``_``: no place in raw k-space).
BART_AXES = ("kx", "ky", "kz", "coil", "_", "echo", "_", "_", "_", "_", "repetition", "_", "_", "slice", "_", "_")
_AGAIN = "Write the array again with BART (or scanai.kspace.readers.bart.write_cfl)."


def cfl_pair(path: str | Path) -> tuple[Path, Path]:
    """(header path, data path) of a BART array named by either file or by their common stem."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix.lower() in (".cfl", ".hdr") else path
    return base.with_name(base.name + ".hdr"), base.with_name(base.name + ".cfl")


def read_cfl_dims(header: Path) -> tuple[int, ...]:
    """The sizes listed after ``# Dimensions`` in a BART ``.hdr``; :class:`FileFormatError` when unreadable."""
    try:
        lines = header.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FileFormatError(f"{header.name} could not be read as a BART header (text).", _AGAIN) from error
    for number, line in enumerate(lines):
        if line.strip().lower() == "# dimensions" and number + 1 < len(lines):
            try:
                dims = tuple(int(value) for value in lines[number + 1].split())
            except ValueError:
                break
            if dims and all(size >= 1 for size in dims):
                return dims
            break
    raise FileFormatError(f"{header.name} is not a valid BART header: it needs a '# Dimensions' line followed by "
                          "positive sizes.", _AGAIN)


def read_cfl(path: str | Path) -> np.ndarray:
    """A BART array (complex64, BART dimension order, as many axes as the header lists).

    path: the ``.cfl``, the ``.hdr`` or their common stem. Raises :class:`FileFormatError` when a file is missing
    or the header's sizes do not match the data size.
    """
    header, data = cfl_pair(path)
    for part in (header, data):
        if not part.is_file():
            raise FileFormatError(f"The BART array {header.stem} needs both {header.name} and {data.name}; "
                                  f"{part.name} is missing.", "Keep the .hdr and .cfl files together.")
    dims = read_cfl_dims(header)
    expected = int(np.prod(dims)) * 8
    actual = data.stat().st_size
    if actual != expected:
        raise FileFormatError(f"{data.name} holds {actual} bytes but its header's sizes {list(dims)} need {expected} "
                              "(8 bytes per complex sample): the header does not belong to the data, or the file "
                              "is truncated.", _AGAIN)
    return np.fromfile(data, dtype="<c8").reshape(dims, order="F")


def write_cfl(path: str | Path, array: np.ndarray) -> tuple[Path, Path]:
    """Write ``array`` (BART dimension order) as a BART ``.hdr`` + ``.cfl`` pair; returns their paths.

    path: the ``.cfl``, the ``.hdr`` or their common stem. The data are stored as complex64, column-major; the
    header lists exactly ``array.shape`` (BART pads missing trailing dimensions with 1).
    """
    array = np.asarray(array)
    if array.ndim == 0 or array.size == 0:
        raise InputError(f"A BART array needs at least one non-empty axis, got shape {array.shape}.")
    header, data = cfl_pair(path)
    header.parent.mkdir(parents=True, exist_ok=True)
    header.write_text("# Dimensions\n" + " ".join(str(size) for size in array.shape) + "\n", encoding="ascii")
    np.asarray(array, dtype="<c8").ravel(order="F").tofile(data)
    return header, data


def kspace_to_bart(kspace: np.ndarray, slices_are_kz: bool = False) -> np.ndarray:
    """ScanAI k-space -> a 16-axis BART array (readout, phase 1, phase 2, coil, maps, echo, ..., time, ..., slice).

    kspace: (coils, slices, ky, kx), or frames (repetitions, contrasts, coils, slices, ky, kx). The slices go to
    BART's phase 2 (kz) when ``slices_are_kz``, else to its slice dimension (13). Returns a view where possible.
    """
    kspace = np.asarray(kspace)
    if kspace.ndim == 4:
        kspace = kspace[np.newaxis, np.newaxis]
    if kspace.ndim != 6:
        raise InputError(f"Expected k-space (coils, slices, ky, kx) or frames with two more leading axes, got shape "
                         f"{kspace.shape}.")
    ordered = kspace.transpose(5, 4, 3, 2, 1, 0)  # (kx, ky, slices, coils, contrasts, repetitions)
    expanded = ordered.reshape(ordered.shape + (1,) * 10)
    targets = [READ, PHASE1, PHASE2 if slices_are_kz else SLICE, COIL, TE, TIME]
    return np.moveaxis(expanded, list(range(6)), targets)


def bart_to_kspace(array: np.ndarray, source: str = "the BART array",
                   axes: Sequence[str] | None = None) -> Layout:
    """A BART array -> its :class:`~scanai.kspace.readers.layout.Layout` (frames (repetitions, contrasts, coils,
    slices, rows, columns), the axes' names, slices_are_kz).

    axes: names of BART's dimensions in order (:func:`~scanai.kspace.readers.layout.parse_axes`), or None for
    BART's conventions: 0 readout (kx), 1 phase 1 (ky), 2 phase 2 (kz), 3 coil, 5 echo, 10 time (repetition),
    13 slice. With them a readout-transformed array (readout size 1, e.g. ``1 x 230 x 180 x 8``) is a ky-kz plane;
    readout, phase 1 and phase 2 all > 1 is a 3-D scan. Raises :class:`InputError` when an axis that has no place
    in raw Cartesian k-space (maps, coefficients, iterations, shifts, time 2, levels, averages, batch) holds more
    than one entry, when fewer than two k-space axes hold several samples, or when both phase 2 (kz) and slice
    hold several (multi-slab 3-D); the messages name the axes seen and ``--axes``.
    """
    dims = list(np.shape(array))
    if len(dims) > 16:
        raise InputError(f"{source} has {len(dims)} dimensions; BART arrays have at most 16.", _AGAIN)
    if axes is not None:
        return arrange(array, axes, source, max_axes=16)
    dims += [1] * (16 - len(dims))
    extra = [f"{_DIMENSION_NAMES[axis]} ({dims[axis]})" for axis in _DIMENSION_NAMES if dims[axis] > 1]
    if extra:
        raise InputError(f"{source} has dimensions that raw k-space does not have: {', '.join(extra)}.",
                         "Pass raw multi-coil k-space (readout, phase 1, phase 2 or slice, coil, echo, time), or "
                         f"say what the axes hold with --axes ({AXES_HELP}).")
    return arrange(array, BART_AXES, source, max_axes=16, naming="read by BART's dimension conventions")


def read_bart(path: Path, axes: Sequence[str] | None = None) -> KSpaceData:
    """Read a BART ``.cfl`` + ``.hdr`` k-space array (see the module docstring) into a :class:`KSpaceData`.

    axes: names of the stored dimensions (``--axes``) or None for BART's conventions (:func:`bart_to_kspace`).
    BART files carry no field of view or oversampling: the spacing is 1 mm and the readout oversampling 1.
    """
    header, _ = cfl_pair(path)
    array = read_cfl(path)
    layout = bart_to_kspace(array, header.name, axes)
    data, frames = split_frames(np.ascontiguousarray(layout.frames, dtype=np.complex64))
    data = as_kspace_array(data, f"The k-space in {header.stem}.cfl")
    metadata: dict[str, Any] = {
        "format": "bart",
        "path": str(header.with_suffix(".cfl")),
        "bart_dims": [int(size) for size in array.shape],
        "axes": list(layout.axes),
        "repetitions": int(layout.frames.shape[0]),
        "contrasts": int(layout.frames.shape[1]),
        "noise_scans": 0,
        "prewhitened": False,
        "spacing_note": "BART files carry no field of view: 1 mm pixels assumed",
    }
    if axes is not None:
        metadata["axes_given"] = ",".join(axes)
    if "kx" not in layout.axes:
        metadata["note"] = (f"readout-transformed data: each slice is a {layout.axes[2]} x {layout.axes[3]} "
                            "k-space plane at one readout position")
    return KSpaceData(data, slices_are_kz=layout.slices_are_kz, source=header.stem + ".cfl", metadata=metadata,
                      frames=frames)
