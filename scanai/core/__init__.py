"""Shared foundations: errors, progress and cancel, device choice, geometry-carrying images, model catalog."""

from scanai.core.errors import (
    Cancelled,
    FileFormatError,
    GeometryError,
    InputError,
    ModelError,
    ScanAIError,
)
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.core.progress import CancelToken, Progress

__all__ = [
    "Cancelled",
    "CancelToken",
    "FileFormatError",
    "Geometry",
    "GeometryError",
    "InputError",
    "ModelError",
    "Progress",
    "ScanAIError",
    "Volume",
    "VolumeSequence",
]
