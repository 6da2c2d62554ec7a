"""An example of a network of your own: a small residual network with squeeze-and-excitation.

Squeeze-and-excitation (Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018) rescales
each block's channels by weights computed from the block's own globally pooled features. Its
``squeeze_excite`` knob switches that off, so a study can ask whether the block earns its keep
(conf/study/your_network.yaml does, beside the chapter's networks).

A study names this file (``networks: [networks/se_resnet.py]``) and its experiments use
``arch: se_resnet``. The builder takes the zoo's three keywords (``in_channels``, ``num_classes``,
``input_size``); its other keyword parameters are the network's knobs, with their defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from convbench.models import register

STAGES = (16, 32, 64)  # channels of the three stages; each after the first halves the map


class SqueezeExcite(nn.Module):
    """Channel weights from the globally pooled features: pool, reduce, expand, sigmoid."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class Block(nn.Module):
    """Two 3x3 convolutions with batch norm, optionally squeeze-and-excitation, plus the input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, squeeze_excite: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels) if squeeze_excite else nn.Identity(),
        )
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SEResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: float, squeeze_excite: bool) -> None:
        super().__init__()
        channels = [max(4, round(c * width)) for c in STAGES]
        layers: list[nn.Module] = [  # a 3x3 stride-1 stem: the image's resolution reaches the blocks
            nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        ]
        previous = channels[0]
        for i, out in enumerate(channels):  # N x C x S x S, then S/2, then S/4
            layers.append(Block(previous, out, 1 if i == 0 else 2, squeeze_excite))
            previous = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register("se_resnet", default_input_size=28, min_input_size=4)
def se_resnet(*, in_channels: int, num_classes: int, input_size: int, width: float = 1.0,
              squeeze_excite: bool = True) -> nn.Module:
    """A small residual network (16-32-64 channels) with squeeze-and-excitation (Hu et al. 2018)."""
    del input_size  # global pooling: any size from min_input_size up
    if not isinstance(squeeze_excite, bool):
        raise ValueError(f"squeeze_excite must be true or false, got {squeeze_excite!r}")
    return SEResNet(in_channels, num_classes, width, squeeze_excite)
