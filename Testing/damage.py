"""Damaged copies of a file's bytes, for the seeded damaged-file tests of every reader (``test_damaged_*``)."""

from __future__ import annotations

import numpy as np

#: The DICOM Pixel Data tag (7FE0,0010) as it appears in a little-endian file.
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def damaged_copies(data: bytes, rng: np.random.Generator, cuts: int, flips: int,
                   flip_at: tuple[int, int] | None = None) -> list[tuple[str, bytes]]:
    """``cuts`` copies of ``data`` cut at random offsets and ``flips`` copies with one bit flipped (at a random byte
    in ``flip_at`` = [start, stop), default anywhere), each labelled with what was done."""
    copies = []
    for _ in range(cuts):
        end = int(rng.integers(0, len(data)))
        copies.append((f"cut at byte {end}", data[:end]))
    start, stop = flip_at or (0, len(data))
    for _ in range(flips):
        flipped = bytearray(data)
        where, bit = int(rng.integers(start, stop)), int(rng.integers(0, 8))
        flipped[where] ^= 1 << bit
        copies.append((f"bit {bit} of byte {where} flipped", bytes(flipped)))
    return copies
