"""Small layer blocks shared by the networks (imports torch).

Every block keeps the parameter layout the shipped weights were saved with: :func:`conv_bn_relu` returns a flat
list so that a caller's ``nn.Sequential`` numbers its layers as before.
"""

from __future__ import annotations

from collections.abc import Mapping

from scanai.nn.backend import nn, torch


def conv_bn_relu(channels_in: int, channels_out: int) -> list[nn.Module]:
    """[3x3 convolution (padding 1, no bias), BatchNorm2d, ReLU]: (B, channels_in, H, W) -> (B, channels_out, H, W)."""
    return [nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True)]


def double_conv(channels_in: int, channels_out: int) -> nn.Sequential:
    """:func:`conv_bn_relu` twice as one ``nn.Sequential`` (layers 0-5): (B, channels_in, H, W) ->
    (B, channels_out, H, W)."""
    return nn.Sequential(*conv_bn_relu(channels_in, channels_out), *conv_bn_relu(channels_out, channels_out))


def map_state_dict_keys(state_dict: Mapping[str, torch.Tensor], key_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``state_dict`` with every key that starts with a prefix of ``key_map`` renamed to the mapped prefix.

    Lets a network whose attributes were renamed load weights saved under the old names, unchanged (the tensors
    are the same objects). Keys that match no prefix are kept; prefixes should end with ``.``.
    """
    renamed = {}
    for key, value in state_dict.items():
        old = next((prefix for prefix in key_map if key.startswith(prefix)), None)
        renamed[key if old is None else key_map[old] + key[len(old):]] = value
    return renamed
