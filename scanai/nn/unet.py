"""The U-Net shape shared by the chest, PET and CT motion-artifact networks (imports torch).

:class:`UNet` is the wiring only: encoder levels joined by 2x2 max-pooling, decoder steps that up-sample, concatenate
the skip connection and merge, a head. The blocks are passed in, so each network keeps its own block type, widths
and parameter names (``down.*``, ``up.*``, ``merge.*``, ``head.*``); :func:`unet_parts` makes the parts of the
classic symmetric U-Net.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scanai.nn.backend import functional, nn, torch


class UNet(nn.Module):
    """2-D U-Net from its parts: forward((B, C_in, H, W)) -> head output (B, C_out, H, W).

    down:  L encoder blocks; block 0 sees the input at full resolution, block l the 2x2 max-pool of block l-1's
           output (so H and W must be multiples of 2^(L-1)).
    up:    L-1 up-samplers, from the coarsest level: each doubles H and W.
    merge: L-1 blocks; step i takes ``cat([up[i](x), skip], dim=1)`` with skip = the output of down[L-2-i].
    head:  applied to the last merge's output (full resolution).
    """

    def __init__(self, down: Sequence[nn.Module], up: Sequence[nn.Module], merge: Sequence[nn.Module],
                 head: nn.Module) -> None:
        super().__init__()
        if not len(up) == len(merge) == len(down) - 1:
            raise ValueError(f"A U-Net of {len(down)} levels needs {len(down) - 1} up-samplers and merge blocks, "
                             f"got {len(up)} and {len(merge)}.")
        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(up)
        self.merge = nn.ModuleList(merge)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else functional.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def unet_parts(channels_in: int, widths: Sequence[int], channels_out: int, block: Callable[[int, int], nn.Module]
               ) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module], nn.Module]:
    """(down, up, merge, head) of the classic U-Net, for :class:`UNet`.

    Level l is ``block(previous width, widths[l])``; each decoder step up-samples with a 2x2 transposed convolution
    (stride 2) to the skip's width w and merges with ``block(2 w, w)``; the head is a 1x1 convolution to
    ``channels_out``. Modules are created in the order the original networks created them (down blocks, then
    up/merge pairs, then the head), so a seeded initialisation is unchanged.
    """
    down, up, merge = [], [], []
    channels = channels_in
    for width in widths:
        down.append(block(channels, width))
        channels = width
    for width in reversed(list(widths)[:-1]):
        up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
        merge.append(block(2 * width, width))
        channels = width
    return down, up, merge, nn.Conv2d(channels, channels_out, 1)
