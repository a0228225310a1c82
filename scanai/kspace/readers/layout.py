"""Naming the axes of a stored k-space array (``--axes``) and moving them into ScanAI's layout.

A plain array (NumPy, MATLAB, BART) says what its axes are only by convention, and users' conventions differ
(MATLAB often puts the coils last; BART's readout-transformed data hold a ky-kz plane per readout position).
:func:`parse_axes` reads a user's names, one per stored axis in stored order (``"ky,kx,coil"``), and
:func:`arrange` moves the axes into the frames layout (repetition, contrast, coil, slice, rows, columns).

Names (case-insensitive; BART's own names are accepted as aliases, in brackets):

- ``coil`` [COIL]: receiver channels.
- ``ky`` [PHS1], ``kx`` [READ], ``kz`` [PHS2]: k-space (Fourier) axes. The two with more than one sample make the
  2-D k-space plane: rows ``ky`` (else ``kz``), columns ``kx`` (else ``kz``). When all three have several
  samples the scan is 3-D: the ``kz`` partitions take the slice axis and are Fourier-transformed too.
- ``slice`` [SLICE], ``x``, ``y``, ``z``: positions in image space (2-D slices, or the readout positions of
  readout-transformed data); each position is a separate k-space plane on the slice axis.
- ``echo`` [TE] (also ``contrast``) and ``repetition`` [TIME] (also ``time``): kept as extra frames.
- ``_``: an axis of size 1 (an unused position, e.g. BART's MAPS).

Axes of size 1 carry no data, so any name fits them; axes after the last name must have size 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError

K_AXES = ("ky", "kx", "kz")
POSITION_AXES = ("slice", "x", "y", "z")
AXIS_NAMES = ("coil",) + K_AXES + POSITION_AXES + ("echo", "repetition", "_")
ALIASES = {"read": "kx", "phs1": "ky", "phs2": "kz", "te": "echo", "contrast": "echo", "time": "repetition",
           "coils": "coil", "channel": "coil"}
#: What ``--axes`` takes, in words (CLI help and error messages).
AXES_HELP = ("one name per stored axis, in stored order, comma-separated: coil, ky, kx, kz (k-space), slice or "
             "x/y/z (image-space positions, e.g. the readout positions of readout-transformed data), echo, "
             "repetition, _ (an axis of size 1); BART's READ, PHS1, PHS2, COIL, TE, TIME, SLICE also work")
_NAMES_TEXT = "coil, ky, kx, kz, slice, x, y, z, echo, repetition, _; see scanai kspace --help"
#: The order :func:`arrange` gives the axes: (repetition, contrast, coil, slice, rows, columns).
_FRAME_ORDER = ("repetition", "echo", "coil")


@dataclass(frozen=True)
class Layout:
    """A stored array moved into ScanAI's layout.

    frames:        (repetitions, contrasts, coils, slices, rows, columns), a view of the array where possible.
    axes:          names of (coils, slices, rows, columns), e.g. ``("coil", "slice", "ky", "kx")`` or, for
                   readout-transformed data, ``("coil", "slice", "ky", "kz")``.
    slices_are_kz: True when the slice axis holds the kz partitions of a 3-D scan.
    """

    frames: np.ndarray
    axes: tuple[str, str, str, str]
    slices_are_kz: bool


def parse_axes(axes: str | Sequence[str]) -> tuple[str, ...]:
    """Axis names from ``"coil,ky,kx"`` (or a sequence of names) -> ``("coil", "ky", "kx")``, aliases resolved.

    Raises :class:`InputError` for an empty list, an unknown name or a name given twice (``_`` may repeat).
    """
    items = axes.split(",") if isinstance(axes, str) else [str(item) for item in axes]
    text = ",".join(item.strip() for item in items)
    names = tuple(ALIASES.get(item.strip().lower(), item.strip().lower()) for item in items)
    if not names or names == ("",):
        raise InputError("--axes names no axis.", f"Give {AXES_HELP}.")
    unknown = [item.strip() for item, name in zip(items, names, strict=True) if name not in AXIS_NAMES]
    if unknown:
        raise InputError(f"--axes {text}: unknown axis name(s) {', '.join(repr(u) for u in unknown)}.",
                         f"Give {AXES_HELP}.")
    repeated = sorted({name for name in names if name != "_" and names.count(name) > 1})
    if repeated:
        raise InputError(f"--axes {text} names {', '.join(repeated)} more than once.",
                         "Name each axis once (use _ for axes of size 1).")
    return names


def describe(names: Sequence[str], shape: Sequence[int]) -> str:
    """``"kx 256, coil 8, repetition 200"``: the named axes that hold more than one entry, with their sizes."""
    seen = [f"{name} {size}" for name, size in zip(names, shape, strict=False) if size > 1]
    return ", ".join(seen) or "no axis with more than one entry"


def _suggestion(names: Sequence[str], shape: Sequence[int], k_axes: Sequence[str]) -> str:
    """``--axes`` with the largest unexplained axis renamed to the missing k-space axis, or a generic example."""
    spare = [i for i, name in enumerate(names) if name in ("echo", "repetition") + POSITION_AXES and shape[i] > 1]
    if len(k_axes) != 1 or not spare:
        return "--axes coil,ky,kx"
    fixed = [name if shape[i] > 1 else "_" for i, name in enumerate(names)]
    fixed[max(spare, key=lambda i: shape[i])] = "kx" if k_axes[0] != "kx" else "ky"
    while fixed and fixed[-1] == "_":
        fixed.pop()
    return "--axes " + ",".join(fixed)


def arrange(array: np.ndarray, names: Sequence[str], source: str, max_axes: int = 0,
            naming: str = "") -> Layout:
    """Move the axes of ``array`` (named by ``names``, one per stored axis) into ScanAI's layout.

    array:    the stored array, any number of axes.
    names:    from :func:`parse_axes`; fewer names than axes is allowed when the unnamed trailing axes have size 1.
    source:   the file, for messages.
    max_axes: more names than ``array.ndim`` are allowed up to this many (BART pads trailing axes with size 1).
    naming:   where the names come from, for messages (default: ``"as --axes <names> names them"``).
    Raises :class:`InputError`, naming the axes seen and ``--axes``, when the names do not fit the array: a named
    axis missing, a size > 1 axis unnamed or named ``_``, fewer than two k-space axes with several samples, or
    two position axes (slice, x, y, z, or kz of a 3-D scan) with several entries each.
    """
    names = tuple(names)
    shape = tuple(int(size) for size in np.shape(array))
    if len(names) > max(len(shape), max_axes):
        raise InputError(f"--axes names {len(names)} axes but {source} has {len(shape)} (sizes {list(shape)}).",
                         "Give one name per stored axis.")
    shape = shape + (1,) * (len(names) - len(shape))
    unnamed = [f"axis {i + 1} (size {size})" for i, size in enumerate(shape) if i >= len(names) and size > 1]
    unnamed += [f"axis {i + 1} (size {shape[i]}, named _)" for i, name in enumerate(names)
                if name == "_" and shape[i] > 1]
    if unnamed:
        raise InputError(f"{source} (sizes {list(shape)}) has {', '.join(unnamed)} that --axes {','.join(names)} "
                         "does not name.", f"Give one name per stored axis (names: {_NAMES_TEXT}).")
    shape = shape[:len(names)]  # the unnamed trailing axes have size 1
    size = {name: shape[i] for i, name in enumerate(names) if name != "_"}
    seen = describe(names, shape)
    naming = naming or f"as --axes {','.join(names)} names them"
    k_axes = [name for name in K_AXES if size.get(name, 1) > 1]
    if len(k_axes) < 2:
        found = f"only {k_axes[0]}" if k_axes else "none"
        raise InputError(f"{source} has axes {seen} ({naming}): a k-space plane needs two k-space axes (ky, kx, "
                         f"kz) with several samples each, and {found} has.",
                         f"Say what each axis holds with --axes, e.g. {_suggestion(names, shape, k_axes)} (names: "
                         f"{_NAMES_TEXT}).")
    rows = "ky" if "ky" in k_axes else "kz"
    columns = "kx" if "kx" in k_axes else "kz"
    partitions = [name for name in k_axes if name not in (rows, columns)]
    positions = [name for name in POSITION_AXES if size.get(name, 1) > 1] + partitions
    if len(positions) > 1:
        raise InputError(f"{source} has axes {seen} ({naming}): both {positions[0]} and {positions[1]} hold "
                         "several entries, but ScanAI keeps one slice axis (so a multi-slab 3-D scan is not "
                         "assembled).",
                         f"Pass one slab (or one slice group) at a time, or say what the axes hold with --axes "
                         f"(names: {_NAMES_TEXT}).")
    position = positions[0] if positions else "slice"
    order = _FRAME_ORDER + (position, rows, columns)
    full = np.reshape(array, shape)  # adding or removing trailing size-1 axes keeps every sample where it is
    drop = tuple(i for i, name in enumerate(names) if name not in order)  # all of size 1
    kept = [name for name in names if name in order]
    arranged = np.squeeze(full, axis=drop) if drop else full
    missing = [name for name in order if name not in kept]
    arranged = arranged.reshape(arranged.shape + (1,) * len(missing))
    arranged = np.transpose(arranged, [(kept + missing).index(name) for name in order])
    return Layout(arranged, ("coil", position, rows, columns), bool(partitions))


def check_coils_first(shape: Sequence[int], source: str) -> None:
    """InputError when a 3-D or 4-D array read as (coil, [slice,] ky, kx) would have more coils than samples
    along a k-space axis: the coils are elsewhere (MATLAB often stores them last) and only the user knows where.

    The message names the sizes seen and suggests ``--axes`` with the smallest axis as the coils (of a 4-D array:
    the two smallest as slice and coil, in stored order, as MATLAB's (ky, kx, slice, coil)).
    """
    shape = tuple(int(size) for size in shape)
    if len(shape) not in (3, 4) or shape[0] <= min(shape[-2:]):
        return
    smallest = sorted(np.argsort(shape, kind="stable")[:len(shape) - 2])  # (slice,) coil, in stored order
    planes = iter(("ky", "kx"))
    small = dict(zip(smallest, ("slice", "coil") if len(shape) == 4 else ("coil",), strict=True))
    names = [small.get(i) or next(planes) for i in range(len(shape))]
    default = "coil, slice, ky, kx" if len(shape) == 4 else "coil, ky, kx"
    raise InputError(f"{source} has axes of sizes {' x '.join(map(str, shape))}. Read as ({default}) it would "
                     f"be {shape[0]} coils of {shape[-2]} x {shape[-1]} samples, so its axes are in another "
                     "order.", f"Say what each axis holds with --axes (in Python: read_kspace(path, axes=...)), "
                               f"for example --axes {','.join(names)} (names: {_NAMES_TEXT}).")
