"""The short-scan Ki network's torch module (imports torch; built by :func:`scanai.pet.network.build_ki_network`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scanai.nn.backend import functional, nn, torch
from scanai.nn.blocks import conv_bn_relu, map_state_dict_keys
from scanai.nn.unet import UNet

#: The attribute names of the shipped ``pet_ki_network.pt`` (KiNet before :class:`~scanai.nn.unet.UNet`) -> the
#: U-Net's: the three encoder levels are ``down.0-2``, the two decoder blocks ``merge.0-1``; ``head`` is unchanged.
#: Applied by :meth:`KiNet.load_state_dict`, so the weights file (and its sha256) stays as it is.
KEY_MAP = {"enc1.": "down.0.", "enc2.": "down.1.", "enc3.": "down.2.", "dec2.": "merge.0.", "dec1.": "merge.1."}


def _conv(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(channels_in, channels_out))


class KiNet(UNet):
    """2-level U-Net. forward(x (B, C, H, W), H and W multiples of 4) -> (B, 2, H, W): Ki (1/min), V.

    down: conv(C, w0); pool, conv(w0, w1), conv(w1, w1); pool, conv(w1, w2) x 2 (conv = 3x3 conv-BN-ReLU);
    up: bilinear x 2 (no parameters); merge: concat skip, conv(w1 + w2, w0); concat skip, conv(2 w0, head_width);
    head: 1x1 conv -> 2; softplus; Ki multiplied by ki_scale.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, int, int], head_width: int,
                 ki_scale: float) -> None:
        w0, w1, w2 = widths
        bilinear = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False) for _ in range(2)]
        super().__init__(down=[_conv(in_channels, w0), nn.Sequential(_conv(w0, w1), _conv(w1, w1)),
                               nn.Sequential(_conv(w1, w2), _conv(w2, w2))],
                         up=bilinear, merge=[_conv(w1 + w2, w0), _conv(2 * w0, head_width)],
                         head=nn.Conv2d(head_width, out_channels, 1))
        self.in_channels = in_channels
        self.ki_scale = ki_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.softplus(super().forward(x))
        scale = torch.ones(out.shape[1], device=out.device, dtype=out.dtype)
        scale[0] = self.ki_scale
        return out * scale.view(1, -1, 1, 1)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any):
        """``nn.Module.load_state_dict`` that also takes the shipped weights' names (:data:`KEY_MAP`)."""
        return super().load_state_dict(map_state_dict_keys(state_dict, KEY_MAP), *args, **kwargs)
