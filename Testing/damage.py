"""Damaged copies of a file's bytes, for the seeded damaged-file tests of every reader (``test_damaged_*``)."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scanai.core.errors import ScanAIError

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


def run_cases(copies: list[tuple[str, bytes]], write: Callable[[bytes], Path], read: Callable[[Path], np.ndarray],
              reference: np.ndarray, changed: int | None, names: tuple[str, ...]) -> Counter:
    """Write each copy (``write`` returns what to read), read it: a ScanAIError whose message says one of ``names``
    (the damaged file; for a folder also "slice location"), the reference values, or, for a flipped bit, the
    reference's shape with finite values differing in at most ``changed`` places (None: any number)."""
    outcomes: Counter = Counter()
    for label, content in copies:
        target = write(content)
        kind = label.split()[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = read(target)
        except ScanAIError as error:
            assert any(name in str(error) for name in names) and len(str(error)) < 600, f"{label}: {error}"
            outcomes[f"{kind} error"] += 1
            continue
        assert values.shape == reference.shape and np.isfinite(values).all(), f"{label}: {values.shape}"
        different = int(np.count_nonzero(values != reference))
        limit = 0 if kind == "cut" else changed
        assert limit is None or different <= limit, f"{label}: {different} values differ"
        outcomes[f"{kind} {'same' if different == 0 else 'changed'}"] += 1
    return outcomes
