"""Compute-device choice. torch is imported only when a device is actually needed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from scanai.core.errors import ModelError

if TYPE_CHECKING:
    import torch

DevicePreference = Literal["auto", "cpu", "cuda"]


def torch_available() -> bool:
    """True when torch can be imported (in Slicer: the PyTorch extension has installed it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def import_torch():
    """Import torch, or raise a :class:`ModelError` that says how to install it."""
    try:
        import torch
    except ImportError as error:
        raise ModelError(
            "PyTorch is not installed, and this step runs a neural network.",
            "In Slicer, install the 'PyTorch' extension from the Extensions Manager and restart; "
            "in Python, run `pip install torch`.",
        ) from error
    return torch


def choose_device(preference: DevicePreference = "auto") -> torch.device:
    """Return the torch device to run on.

    ``auto`` takes CUDA when a usable GPU is present and falls back to the CPU otherwise (also when
    ``SCANAI_DEVICE=cpu`` is set). ``cuda`` without a GPU raises a :class:`ModelError` instead of silently
    running elsewhere.
    """
    torch = import_torch()
    preference = os.environ.get("SCANAI_DEVICE", preference) if preference == "auto" else preference
    if preference not in ("auto", "cpu", "cuda"):
        raise ModelError(f"Unknown device '{preference}'.", "Choose auto, cpu or cuda.")
    if preference == "cpu":
        return torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    if preference == "cuda" and not has_cuda:
        raise ModelError("A GPU (CUDA) was requested but none is available.", "Choose 'auto' or 'cpu'.")
    return torch.device("cuda" if has_cuda else "cpu")


def set_determinism(seed: int, threads: int) -> None:
    """Fix every seed, use deterministic torch algorithms and a fixed number of CPU threads (for training)."""
    import numpy as np

    torch = import_torch()
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(threads)
