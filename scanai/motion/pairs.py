"""Arranging the frames of a cine into ordered image pairs (patent US 2025/0259316, claims 9 and 10).

A cardiac cine covers one periodic cycle, so frames are visited cyclically from the reference frame ``r``:
``r, r + 1, …, T - 1, 0, …, r - 1``. Two pairing schemes:

- ``"reference"`` (claim 9, FIG. 6): the reference frame is the first image of every pair,
  ``(r, r+1), (r, r+2), …``, fed in the order of the second image. Each pair's field is directly the
  Lagrangian field reference -> frame.
- ``"consecutive"`` (claim 10, FIG. 7): sliding pairs ``(r, r+1), (r+1, r+2), …``, fed in the order of the
  first image. The Lagrangian fields follow by composition; with ``closed=True`` the last pair returns to the
  reference, ``(r-1, r)``, closing the cycle (used for cycle-consistency).
"""

from __future__ import annotations

from typing import Literal

from scanai.core.errors import InputError

Scheme = Literal["reference", "consecutive"]
SCHEMES: tuple[str, ...] = ("reference", "consecutive")


def cyclic_order(count: int, reference_index: int) -> list[int]:
    """Frame indices in visiting order, starting at the reference and wrapping around: length ``count``."""
    if count < 2:
        raise InputError(f"Motion estimation needs at least 2 frames; the sequence has {count}.",
                         "Select a cine with several time points.")
    if not 0 <= reference_index < count:
        raise InputError(f"Reference frame {reference_index} does not exist: the sequence has {count} frames "
                         f"(0 to {count - 1}).", "Choose a reference frame within that range.")
    return [(reference_index + step) % count for step in range(count)]


def make_pairs(count: int, reference_index: int = 0, scheme: Scheme = "reference",
               closed: bool = False) -> list[tuple[int, int]]:
    """Ordered (first, second) frame-index pairs in feeding order.

    count:           number of frames T.
    reference_index: the cycle's first frame (e.g. end-diastole).
    scheme:          "reference" (T - 1 pairs sharing the reference) or "consecutive" (T - 1 sliding pairs,
                     T with ``closed``).
    Example, T = 5, r = 0: reference -> (0,1), (0,2), (0,3), (0,4); consecutive -> (0,1), (1,2), (2,3), (3,4).
    """
    order = cyclic_order(count, reference_index)
    if scheme == "reference":
        if closed:
            raise InputError("Closing the cycle applies to consecutive pairs only.")
        return [(order[0], frame) for frame in order[1:]]
    if scheme == "consecutive":
        visits = order + [order[0]] if closed else order
        return list(zip(visits[:-1], visits[1:], strict=True))
    raise InputError(f"Unknown pairing scheme {scheme!r}.", f"Use one of {', '.join(SCHEMES)}.")


def closes_cycle(pairs: list[tuple[int, int]]) -> bool:
    """Whether ``pairs`` chain into one closed loop, each pair starting where the previous one ended and the last
    ending where the first started (consecutive pairs with ``closed=True``): composed, they must give the identity."""
    return len(pairs) > 1 and all(a[1] == b[0] for a, b in zip(pairs, pairs[1:] + pairs[:1], strict=True))
