"""torch for every torch-side module of ScanAI, imported here and nowhere else at module level.

``from scanai.nn.backend import functional, nn, torch`` raises :class:`~scanai.core.errors.ModelError` with install
advice when PyTorch is missing. Only modules that hold ``torch.nn.Module`` code import this one at their top
(:mod:`scanai.nn.blocks`, :mod:`scanai.nn.unet` and each domain's ``layers`` module); everything else imports them
inside the functions that build or run a network, so that importing ``scanai`` never imports torch.
"""

from scanai.core.device import import_torch

torch = import_torch()
nn = torch.nn
functional = torch.nn.functional

__all__ = ["functional", "nn", "torch"]
