"""Proof that a NIfTI file holds what its header announces: SimpleITK's reader fills a truncated file's missing voxels
with 0 and turns NaN and infinite voxels into 0, so a damaged image would be analysed as if it were whole.
:func:`verify_nifti` reads the raw voxel bytes (``.nii`` or ``.nii.gz``, in blocks) and refuses both cases."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, InputError

#: NIfTI-1 datatype code -> numpy dtype (the scalar types).
DATATYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_BLOCK = 1 << 24  # bytes read at a time


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _header(head: bytes, name: str) -> tuple[str, int, int]:
    """(numpy dtype with byte order, voxel count, byte offset of the voxels) from a NIfTI-1 header."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            datatype = struct.unpack(order + "h", head[70:72])[0]
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            count = int(np.prod([max(int(d), 1) for d in dims[1:1 + max(int(dims[0]), 0)]]))
            if datatype not in DATATYPES:
                raise FileFormatError(f"{name} has a NIfTI data type ({datatype}) ScanAI does not read.",
                                      "Save it with a scalar type (integer or floating point).")
            return order + DATATYPES[datatype], count, max(offset, 352)
    if len(head) < 348 and any(head[:4] == struct.pack(order + "i", 348) for order in "<>"):
        raise FileFormatError(f"{name} is incomplete: it ends inside its 348-byte NIfTI header (after {len(head)} "
                              "bytes), so it was probably cut off while copying.", "Copy or export the image again.")
    raise FileFormatError(f"{name} is not a NIfTI-1 file (its header is not 348 bytes).",
                          "Export the image again as NIfTI-1 (.nii or .nii.gz).")


def verify_nifti(path: str | Path) -> None:
    """FileFormatError when ``path`` ends before its last voxel (or its compressed stream is cut); InputError
    naming how many voxels are NaN or infinite."""
    path = Path(path)
    try:
        with _open(path) as stream:
            head = stream.read(352)
            dtype, count, offset = _header(head, path.name)
            stream.read(offset - len(head))
            item = np.dtype(dtype).itemsize
            remaining, bad, rest = count * item, 0, b""
            while remaining > 0:
                block = stream.read(min(_BLOCK, remaining))
                if not block:
                    break
                remaining -= len(block)
                data = rest + block
                usable = len(data) - len(data) % item
                values, rest = np.frombuffer(data[:usable], dtype=dtype), data[usable:]
                if values.dtype.kind == "f":
                    bad += int(np.count_nonzero(~np.isfinite(values)))
    except (EOFError, OSError, zlib.error) as error:
        raise FileFormatError(f"{path.name} is incomplete or damaged: its data stream ends early ({error}).",
                              "Copy or export the image again.") from error
    if remaining > 0:
        raise FileFormatError(f"{path.name} is incomplete: it ends {remaining} bytes before the last of its {count} "
                              "voxels (it was probably cut off while copying).", "Copy or export the image again.")
    if bad:
        raise InputError(f"{path.name} holds {bad} voxels that are not numbers (NaN or infinite).",
                         "Export the image again, or replace those voxels (for example by 0 outside the body) "
                         "before the analysis.")
