"""Proof that the compressed voxel data of an NRRD (``.nrrd``, ``.seq.nrrd``) or MetaImage (``.mha``) file are whole
and as large as the header says: SimpleITK decompresses them without checking the stream's checksum, MetaImage goes
on after a failed decompression, and neither compares the data with the header's sizes, so a flipped byte or a cut
file would be read as a silently different image. :func:`verify_compressed_image` decompresses the stream once, in
blocks, and refuses a damaged, cut or mis-sized one. Raw (uncompressed) and detached data are left to SimpleITK,
which refuses a file that is too short."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

from scanai.core.errors import FileFormatError

_BLOCK = 1 << 22  # bytes read (and at most decompressed) at a time
_HEADER_LIMIT = 1 << 24  # an NRRD or MetaImage header longer than this is not looked at
_AGAIN = "Copy or export the image again."
_CUT = "so it was probably cut off while copying"
#: NRRD encodings SimpleITK reads compressed (gzip; window bits 31 = gzip header and CRC-32 trailer).
_NRRD_GZIP = ("gzip", "gz")
#: Bytes per value of the NRRD types (all spellings the NRRD format allows).
_NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
                    4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}
#: Bytes per value of the MetaImage element types.
_MET_TYPE_BYTES = {"met_char": 1, "met_uchar": 1, "met_short": 2, "met_ushort": 2, "met_int": 4, "met_uint": 4,
                   "met_float": 4, "met_long_long": 8, "met_ulong_long": 8, "met_double": 8}


@dataclass(frozen=True)
class _Stream:
    """Where a file's compressed voxel data start, how they are wrapped, and the sizes its header announces.

    window_bits: 31 for gzip (NRRD), 15 for zlib (MetaImage). voxel_bytes: the decompressed size the header's sizes
    and type give (None when not known). stored_bytes: the compressed size the header states (MetaImage's
    CompressedDataSize; None when the format has none).
    """

    offset: int
    window_bits: int
    voxel_bytes: int | None
    stored_bytes: int | None = None


def _header_text(path: Path, end_marker: bytes) -> tuple[bytes, int] | None:
    """(header bytes, offset just after ``end_marker``) when the marker occurs within the header limit, else None."""
    with open(path, "rb") as stream:
        head = b""
        while len(head) < _HEADER_LIMIT:
            block = stream.read(1 << 16)
            if not block:
                break
            head += block
            found = head.find(end_marker)
            if found >= 0:
                return head[:found], found + len(end_marker)
    return None


def _product(text: str | None, scale: int | None) -> int | None:
    """``scale`` times the product of the whole numbers in ``text``; None when either is missing or not a number."""
    try:
        sizes = [int(value) for value in (text or "").split()]
    except ValueError:
        return None
    return math.prod(sizes) * scale if sizes and scale and all(size > 0 for size in sizes) else None


def _nrrd_stream(path: Path) -> _Stream | None:
    """The gzip voxel data of an NRRD file whose data follow its header, or None (raw, detached, not NRRD)."""
    with open(path, "rb") as stream:
        if not stream.read(7) == b"NRRD000":
            return None
    found = _header_text(path, b"\n\n")
    if found is None:
        if path.stat().st_size < _HEADER_LIMIT:
            raise FileFormatError(f"{path.name} is incomplete: it ends inside its NRRD header (no blank line after "
                                  f"the header), {_CUT}.", _AGAIN)
        return None
    fields: dict[str, str] = {}
    for line in found[0].decode("latin-1").splitlines()[1:]:
        key, _, value = line.partition(":")
        if not line.startswith("#") and not value.startswith("="):  # "key:=value" pairs are not fields
            fields[key.strip().lower().replace(" ", "")] = value.strip().lower()
    if {"datafile", "lineskip", "byteskip"} & set(fields) or fields.get("encoding", "raw") not in _NRRD_GZIP:
        return None
    return _Stream(found[1], 31, _product(fields.get("sizes"), _NRRD_TYPE_BYTES.get(fields.get("type", ""))))


def _metaimage_stream(path: Path) -> _Stream | None:
    """The zlib voxel data of a compressed MetaImage whose data follow its header (``LOCAL``), or None."""
    found = _header_text(path, b"ElementDataFile")
    if found is None:
        return None
    fields = {}
    for line in found[0].decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip()  # MetaImage keys are case-sensitive
    with open(path, "rb") as stream:
        stream.seek(found[1])
        line = stream.readline(1 << 12)
    compressed = fields.get("CompressedData", "").lower().startswith("true")
    if not compressed or line.partition(b"=")[2].strip() != b"LOCAL" or "HeaderSize" in fields:
        return None
    stored = fields.get("CompressedDataSize", "")
    if not stored.isdigit():
        raise FileFormatError(f"{path.name} is damaged: its header has no readable CompressedDataSize, without which "
                              "its compressed voxels are read wrongly.", _AGAIN)
    channels = fields.get("ElementNumberOfChannels", "1")
    scale = _MET_TYPE_BYTES.get(fields.get("ElementType", "").lower(), 0) * int(channels) if channels.isdigit() \
        else None
    return _Stream(found[1] + len(line), 15, _product(fields.get("DimSize"), scale), int(stored))


def _decompress_all(path: Path, data: _Stream) -> tuple[bool, int, int]:
    """(the stream reached its end, decompressed bytes, compressed bytes it used), decompressing the file from
    ``data.offset`` with output discarded (at most one block held at a time). zlib.error for wrong data or checksum."""
    decompressor = zlib.decompressobj(data.window_bits)
    produced = consumed = 0
    with open(path, "rb") as stream:
        stream.seek(data.offset)
        while not decompressor.eof:
            block = stream.read(_BLOCK)
            if not block:
                break
            consumed += len(block)
            produced += len(decompressor.decompress(block, _BLOCK))
            while decompressor.unconsumed_tail and not decompressor.eof:
                produced += len(decompressor.decompress(decompressor.unconsumed_tail, _BLOCK))
    if not decompressor.eof:
        produced += len(decompressor.flush())  # the output zlib still holds (at most its window)
    return decompressor.eof, produced, consumed - len(decompressor.unused_data)


def _stream_of(path: Path) -> _Stream | None:
    name = path.name.lower()
    if name.endswith(".nrrd"):
        return _nrrd_stream(path)
    if name.endswith(".mha"):
        return _metaimage_stream(path)
    return None


def verify_compressed_image(path: str | Path) -> None:
    """FileFormatError when the compressed voxel data of an NRRD (gzip) or MetaImage (zlib) file fail their checksum,
    end before their stream does, or hold another number of bytes than the header's sizes (or, for MetaImage, its
    CompressedDataSize) announce, or when an NRRD file ends inside its header; nothing for whole, raw or detached
    data, or for other files."""
    path = Path(path)
    data = _stream_of(path)
    if data is None:
        return
    try:
        whole, produced, used = _decompress_all(path, data)
    except (zlib.error, OSError, EOFError, ValueError) as error:
        raise FileFormatError(f"{path.name} is damaged: its compressed voxel data fail their check ({error}), so "
                              "the image would be read with wrong values.", _AGAIN) from error
    if not whole:
        raise FileFormatError(f"{path.name} is incomplete: its compressed voxel data end before their stream does, "
                              f"{_CUT}.", _AGAIN)
    if data.voxel_bytes is not None and produced != data.voxel_bytes:
        raise FileFormatError(f"{path.name} is damaged: its header's sizes announce {data.voxel_bytes} bytes of voxels "
                              f"but its compressed data hold {produced}.", _AGAIN)
    if data.stored_bytes is not None and used != data.stored_bytes:
        raise FileFormatError(f"{path.name} is damaged: its header's CompressedDataSize is {data.stored_bytes} bytes "
                              f"but its compressed data take {used}.", _AGAIN)
