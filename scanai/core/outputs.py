"""An output folder that is complete or absent: every ``scanai`` command writes into a temporary folder beside
``--out`` and moves it into place only when the run succeeded, so an interrupted or failed run leaves nothing, and a
folder of results is never mixed with an earlier run's.

:func:`check_output_folder` runs before any computation (a file in the way, a folder that cannot be written, an
earlier run's results without ``--overwrite``: a clear error, at once); :func:`results_folder` is the transaction.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from scanai.core.errors import InputError


def check_output_folder(out: Path, overwrite: bool = False) -> Path:
    """The absolute output folder, or InputError when results cannot go there: it is a file, its parent cannot be
    written, or it already holds files and ``overwrite`` is off."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"The output folder {out} is a file.", "Choose a folder name for --out.")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"The output folder {out} cannot be created or written: {parent} is read-only for you.",
                         "Choose a folder you can write to for --out.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"The output folder {out} already holds files (an earlier run's results?).",
                             "Choose an empty or new folder for --out, or add --overwrite to replace it whole.")
        if not os.access(out, os.W_OK | os.X_OK):
            raise InputError(f"The output folder {out} cannot be replaced: it is read-only for you.",
                             "Choose a folder you can write to for --out.")
    return out


@contextlib.contextmanager
def results_folder(out: Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out`` to write the results into; when the block ends normally it
    replaces ``out`` (an earlier folder is removed only then), otherwise it is removed and ``out`` is untouched."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    partial.chmod(0o777 & ~mask)  # a folder like any other the user makes (mkdtemp's is private)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    previous = None
    if out.exists():
        previous = out.parent / f".{out.name}.previous-{os.getpid()}"
        os.replace(out, previous)
    os.replace(partial, out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def interrupt_on_terminate() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt inside the block (so ``kill`` ends a command as Ctrl-C does)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _ShownAs:
    """A text stream that writes ``hidden`` as ``shown`` (paths in the temporary folder as their final place)."""

    def __init__(self, stream: TextIO, hidden: str, shown: str) -> None:
        self._stream, self._hidden, self._shown = stream, hidden, shown

    def write(self, text: str) -> int:
        return self._stream.write(text.replace(self._hidden, self._shown))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def printed_as(partial: Path, out: Path) -> Iterator[None]:
    """Inside the block, paths printed on stdout or stderr under ``partial`` name ``out`` instead (where the results
    will be once the run succeeds)."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_ShownAs(stream, str(partial), str(out)) for stream in streams)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
