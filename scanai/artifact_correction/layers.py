"""The CT motion-artifact network's torch modules (imports torch; built by
:func:`scanai.artifact_correction.network.build_artifact_network`)."""

from __future__ import annotations

from collections.abc import Sequence

from scanai.nn.backend import nn, torch
from scanai.nn.unet import UNet, unet_parts


class ResidualBlock(nn.Module):
    """2 x (3x3 conv -> InstanceNorm -> LeakyReLU) plus a (1x1 conv) shortcut: (B, cin, H, W) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True))
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.activation = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class ResidualUNet2D(UNet):
    """[B, C, H, W] -> [B, M, H, W] = baseline + residual: the classic :class:`~scanai.nn.unet.UNet` of
    :class:`ResidualBlock` levels, whose 1x1 head starts at zero, added to the baseline, output m being the mean
    of the input channels ``groups[m]`` (M = len(groups)). H and W must be multiples of 2^(len(widths) - 1)."""

    def __init__(self, channels_in: int, widths: Sequence[int], groups: Sequence[Sequence[int]]) -> None:
        super().__init__(*unet_parts(channels_in, widths, len(groups), ResidualBlock))
        self.groups = [tuple(group) for group in groups]
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, list(group)].mean(dim=1) for group in self.groups], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.baseline(x) + super().forward(x)
