"""Progress and cancel protocol shared by every long-running function.

A long function takes ``progress: Progress | None = None`` and calls ``progress(fraction, message)``
between steps. Each call checks the cancel token and raises :class:`~scanai.core.errors.Cancelled` when the
user asked to stop, so work is abandoned between steps and nothing half-written escapes. Front ends adapt it:
:func:`tqdm_progress` for the CLI, ``scanai.mrml.slicer_progress`` for the Slicer widgets.

Example::

    def register_all(frames, progress=None):
        progress = Progress.ensure(progress)
        for i, frame in progress.iterate(frames, "Registering frame"):
            ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from scanai.core.errors import Cancelled

ProgressCallback = Callable[[float, str], None]
T = TypeVar("T")


class CancelToken:
    """A flag the front end sets and the computation polls."""

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        """Ask the running computation to stop at its next step."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise Cancelled()


@dataclass
class Progress:
    """Reports a fraction in [0, 1] and a message; checks for cancel on every report.

    ``start`` and ``end`` map this reporter's [0, 1] onto a sub-range of its parent, so a function can hand
    a slice of its progress to a helper with :meth:`sub`.
    """

    callback: ProgressCallback | None = None
    token: CancelToken = field(default_factory=CancelToken)
    start: float = 0.0
    end: float = 1.0

    @staticmethod
    def ensure(progress: Progress | None) -> Progress:
        """Return ``progress`` or a silent reporter that never cancels."""
        return progress if progress is not None else Progress()

    def __call__(self, fraction: float, message: str = "") -> None:
        self.token.raise_if_cancelled()
        if self.callback is not None:
            clipped = min(max(float(fraction), 0.0), 1.0)
            self.callback(self.start + (self.end - self.start) * clipped, message)

    def sub(self, start: float, end: float) -> Progress:
        """A reporter for the part [start, end] of this one (both fractions of this reporter)."""
        span = self.end - self.start
        return Progress(self.callback, self.token, self.start + span * start, self.start + span * end)

    def iterate(self, items: Iterable[T], message: str, total: int | None = None) -> Iterator[tuple[int, T]]:
        """Yield ``(index, item)``, reporting ``message i/N`` before each item and 1.0 at the end."""
        if total is None:
            items = list(items)
            total = len(items)
        for index, item in enumerate(items):
            self(index / max(total, 1), f"{message} {index + 1}/{total}")
            yield index, item
        self(1.0, f"{message}: done")


@contextlib.contextmanager
def tqdm_progress(description: str, disable: bool = False, step_percent: int = 10) -> Iterator[Progress]:
    """A :class:`Progress` for the CLI and batch scripts, on stderr.

    On a terminal, a tqdm bar. Elsewhere (a log file, a pipe, a CI job: stderr is not a TTY) a bar's carriage
    returns would fill the log, so plain lines are printed instead, one each time another ``step_percent`` is
    reached: ``"Motion (network):  40% Estimating motion in slice 1 of 1"``.
    """
    import sys

    if disable:
        yield Progress()
        return
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        shown = [-1]

        def line(fraction: float, message: str) -> None:
            step = int(100 * fraction) // step_percent
            if step > shown[0]:
                shown[0] = step
                print(f"{description}: {step * step_percent:3d}% {message}".rstrip(), file=sys.stderr, flush=True)

        yield Progress(line)
        return
    from tqdm import tqdm

    with tqdm(total=1000, desc=description, unit="‰", leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:

        def update(fraction: float, message: str) -> None:
            bar.update(max(int(fraction * 1000) - bar.n, 0))
            bar.set_postfix_str(message, refresh=True)

        yield Progress(update)
