"""The k-space patch classifier's torch module (imports torch; built by
:func:`scanai.kspace.network.build_patch_classifier`)."""

from __future__ import annotations

from scanai.nn.backend import nn, torch
from scanai.nn.blocks import conv_bn_relu


class PatchClassifier(nn.Module):
    """Small CNN with position encoding in the fully connected head; one logit per patch.

    Body: per width w, [conv3x3 - BN - ReLU] x 2 then 2 x 2 max-pool; then global average and global max
    pooling (a spike is a point: the max keeps it, the average gives the context). Head: the pooled vector
    concatenated with MLP(position) -> FC hidden -> ReLU -> FC 1.
    forward(x (B, C, S, S) float32, pos (B, position_features) float32) -> (B,) logits.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], position_features: int, position_width: int,
                 hidden: int, patch_size: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.position_features = position_features
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [*conv_bn_relu(previous, width), *conv_bn_relu(width, width), nn.MaxPool2d(2)]
            previous = width
        self.body = nn.Sequential(*layers)
        self.position = nn.Sequential(nn.Linear(position_features, position_width), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Linear(2 * previous + position_width, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.head(torch.cat([pooled, self.position(pos)], dim=1)).squeeze(1)
