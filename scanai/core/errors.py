"""The ScanAI error hierarchy.

Every error a user can cause is a :class:`ScanAIError` whose message says, in a clinician's words, what is
wrong and what to do about it. The Slicer widgets show ``str(error)`` as it is; the CLI prints it without a
traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ScanAIError(Exception):
    """Base class. ``problem`` says what is wrong, ``action`` what the user can do about it."""

    def __init__(self, problem: str, action: str | None = None) -> None:
        self.problem = problem
        self.action = action
        super().__init__(problem if not action else f"{problem} {action}")


class InputError(ScanAIError, ValueError):
    """The input data cannot be used as given (wrong shape, missing timing, NaNs, empty, ...)."""


class GeometryError(InputError):
    """Images that must share a grid do not (spacing, origin, direction or size differ)."""


class FileFormatError(InputError):
    """A file is missing, unreadable, corrupt or not of the expected kind."""


class ModelError(ScanAIError):
    """A model's weights are missing or damaged, or the model does not fit the input."""


class Cancelled(ScanAIError):
    """The user cancelled a long computation; nothing was written."""

    def __init__(self, problem: str = "The computation was cancelled.", action: str | None = None) -> None:
        super().__init__(problem, action)


def require(condition: bool, problem: str, action: str | None = None, error: type[ScanAIError] = InputError) -> None:
    """Raise ``error(problem, action)`` unless ``condition`` holds."""
    if not condition:
        raise error(problem, action)


def with_defaults(options: Mapping[str, Any], defaults: Mapping[str, Any], unknown_problem: str) -> dict[str, Any]:
    """``{**defaults, **options}``; an :class:`InputError` when ``options`` names a key ``defaults`` lacks, its
    message ``"<unknown_problem>: a, b."`` followed by the valid names (sorted)."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(f"{unknown_problem}: {', '.join(unknown)}.", f"Valid options: {', '.join(sorted(defaults))}.")
    return {**defaults, **options}
