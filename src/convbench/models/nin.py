"""Network in Network (Lin, Chen & Yan, 2014) as d2l builds it.

Each block is one spatial convolution followed by two 1x1 convolutions (the "micro network"), and
the classifier is gone: the last block emits one map per class and global average pooling turns
the maps into logits, which is why NiN has 2M parameters where AlexNet has 47M.

The first block's 11x11 stride-4 convolution is NiN's stem: it needs 67 px, so the chapter study
upsamples 28 px images to 84. ``stem="lowres"`` makes it a 5x5 stride-1 convolution (padding 2),
the first layer of the paper's own CIFAR-10 network (Lin et al. 2014, section 4.2; the authors'
configuration mavenlin/cuda-convnet NIN: conv1 5x5, stride 1, padding 2). Only that convolution
changes: d2l's channels (96, 256, 384), its 1x1 convolutions and its three 3x3/2 poolings stay
(the CIFAR network's 192-160-96 channels and its two poolings are a different network, not a
different stem). At 28 px the maps are then 28, 13, 6 and 2 px.
"""

from __future__ import annotations

import torch
from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import GlobalAvgPool, check_probability, check_stem, pool2d, scaled
from convbench.models._registry import register


def nin_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    *,
    activation: str,
    batch_norm: bool,
) -> nn.Sequential:
    """A k x k convolution and two 1x1 convolutions, each followed by [BN and] the activation."""
    layers: list[nn.Module] = []
    for conv in (
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
    ):
        layers.append(conv)
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class NiN(nn.Module):
    """Four NiN blocks separated by 3x3/2 poolings; the last block has one channel per class."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        activation: str,
        pool: str,
        batch_norm: bool,
        dropout: float,
        width: float,
        stem: str,
    ) -> None:
        super().__init__()
        dropout = check_probability("dropout", dropout)
        c1, c2, c3 = (scaled(c, width) for c in (96, 256, 384))
        options = {"activation": activation, "batch_norm": batch_norm}
        kernel_size, stride, padding = {"d2l": (11, 4, 0), "lowres": (5, 1, 2)}[check_stem(stem, tuple(NIN_MIN_INPUT))]
        self.net = nn.Sequential(
            # N x 96 x 54 x 54 at 224 px (lowres: N x 96 x 28 x 28 at 28 px)
            nin_block(in_channels, c1, kernel_size, stride, padding, **options),
            pool2d(pool, 3, stride=2),  # N x 96 x 26 x 26
            nin_block(c1, c2, 5, 1, 2, **options),
            pool2d(pool, 3, stride=2),  # N x 256 x 12 x 12
            nin_block(c2, c3, 3, 1, 1, **options),
            pool2d(pool, 3, stride=2),  # N x 384 x 5 x 5
            *([nn.Dropout(dropout)] if dropout > 0 else []),
            nin_block(c3, num_classes, 3, 1, 1, **options),  # N x classes x 5 x 5
            GlobalAvgPool(),
            nn.Flatten(),  # N x classes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# Three 3x3/2 poolings need 15x15 maps after the first block: (size - 11) // 4 + 1 >= 15 gives 67
# with d2l's stem; the lowres 5x5/1 convolution padded by 2 keeps the size, so 15.
NIN_MIN_INPUT = {"d2l": 67, "lowres": 15}  # the stems it builds, each with its smallest input


@register("nin", default_input_size=224, min_input_size=NIN_MIN_INPUT)
def nin(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    pool: str = "max",
    batch_norm: bool = False,
    dropout: float = 0.5,
    width: float = 1.0,
    stem: str = "d2l",
) -> nn.Module:
    """d2l's NiN: four conv + 1x1 + 1x1 blocks, global average pooling instead of linear layers.

    Knobs: ``activation`` after every convolution, including the class maps, as in d2l;
    ``pool`` max or avg for the three 3x3/2 poolings (the final global pooling stays an average);
    ``batch_norm`` adds BatchNorm2d after every convolution; ``dropout`` before the last block (0
    removes the module); ``width`` multiplies the channels of the first three blocks (the last one
    always has one channel per class); ``stem`` d2l (the 11x11/4 first convolution) or lowres (a
    5x5/1 one, as the paper's CIFAR-10 network has, for 28 to 32 px).
    """
    return NiN(
        in_channels=in_channels, num_classes=num_classes, activation=activation, pool=pool,
        batch_norm=batch_norm, dropout=dropout, width=width, stem=stem,
    )
