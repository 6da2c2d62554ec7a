"""DenseNet (Huang, Liu, van der Maaten & Weinberger, 2017) as d2l builds it.

Inside a dense block every convolution sees the concatenation of all earlier outputs, so channels
grow by the growth rate per convolution; transition layers halve channels and resolution to keep
that growth affordable. d2l's version uses pre-activation BN-ReLU-conv units without bottlenecks.

d2l's stem (7x7 stride-2 convolution, 3x3 stride-2 max-pool) takes a 28 px image to 7 px, and the
three 2x2/2 transitions then leave 3 and 1 px: below 29 px the last one has nothing to pool.
``stem="lowres"`` is the DenseNet paper's CIFAR stem (Huang et al. 2017, section 3,
"Implementation Details": on CIFAR and SVHN one 3x3 convolution before the first dense block and
no pooling; kuangliu/pytorch-cifar models/densenet.py builds it the same way): a 3x3 stride-1
convolution (padding 1) to d2l's 64 channels, then [BN and] the activation as d2l's stem has, no
max-pool.
The dense blocks then see 28, 14, 7 and 3 px at 28 px input (32, 16, 8, 4 at 32 px), the same
four-resolution layout as d2l's at 96 px (24, 12, 6, 3). (pytorch-pretrained-cnns'
lowres_densenet121 keeps the 3x3/2 max-pool after its 3x3/1 convolution: models/lowresdensenet.py
at commit fcf8222.) ``stem="lowres_pool"`` is that form: the blocks then see 14, 7, 4 and 2 px at
28 px input.
"""

from __future__ import annotations

import torch
from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import GlobalAvgPool, check_stem, pool2d, scaled
from convbench.models._registry import register

STEM_CHANNELS = 64
# (growth rate, convolutions per dense block): d2l's 4 blocks of 4 convolutions, growth 32.
DENSENET_CONFIG: tuple[int, tuple[int, ...]] = (32, (4, 4, 4, 4))


def conv_block(
    in_channels: int, out_channels: int, *, activation: str, batch_norm: bool
) -> nn.Sequential:
    """Pre-activation unit: [BN,] activation, 3x3 convolution."""
    norm = [nn.BatchNorm2d(in_channels)] if batch_norm else []
    return nn.Sequential(
        *norm, make_activation(activation), nn.Conv2d(in_channels, out_channels, 3, padding=1)
    )


class DenseBlock(nn.Sequential):
    """``num_convs`` conv blocks; each one's output is concatenated to its input along channels."""

    def __init__(
        self, num_convs: int, in_channels: int, growth: int, *, activation: str, batch_norm: bool
    ) -> None:
        super().__init__(*(
            conv_block(
                in_channels + i * growth, growth, activation=activation, batch_norm=batch_norm
            )
            for i in range(num_convs)
        ))
        self.out_channels = in_channels + num_convs * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = torch.cat((x, block(x)), dim=1)
        return x


def transition_block(
    in_channels: int, out_channels: int, *, activation: str, pool: str, batch_norm: bool
) -> nn.Sequential:
    """[BN,] activation, 1x1 convolution to ``out_channels``, 2x2/2 pooling."""
    norm = [nn.BatchNorm2d(in_channels)] if batch_norm else []
    return nn.Sequential(
        *norm,
        make_activation(activation),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
        pool2d(pool, 2, stride=2),
    )


def densenet_stem(
    stem: str, in_channels: int, channels: int, *, activation: str, batch_norm: bool
) -> nn.Sequential:
    """d2l's 7x7/2 convolution and 3x3/2 max-pool (n -> n / 4), the CIFAR 3x3/1 one (n -> n), or
    that followed by d2l's 3x3/2 max-pool (n -> n / 2)."""
    norm = [nn.BatchNorm2d(channels)] if batch_norm else []
    if check_stem(stem, tuple(DENSENET_MIN_INPUT)) == "d2l":
        return nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=7, stride=2, padding=3),
            *norm,
            make_activation(activation),
            nn.MaxPool2d(3, stride=2, padding=1),
        )  # N x 64 x 24 x 24 at 96 px
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1),
        *norm,
        make_activation(activation),
        *([nn.MaxPool2d(3, stride=2, padding=1)] if stem == "lowres_pool" else []),
    )  # N x 64 x 28 x 28 at 28 px (lowres), N x 64 x 14 x 14 (lowres_pool)


class DenseNet(nn.Module):
    """A stem, dense blocks separated by halving transitions, [BN,] activation, pool, linear."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        activation: str,
        pool: str,
        batch_norm: bool,
        width: float,
        stem: str,
    ) -> None:
        super().__init__()
        growth, convs_per_block = DENSENET_CONFIG
        growth = scaled(growth, width)
        channels = scaled(STEM_CHANNELS, width)
        self.b1 = densenet_stem(stem, in_channels, channels, activation=activation, batch_norm=batch_norm)
        blocks: list[nn.Module] = []
        for index, num_convs in enumerate(convs_per_block):
            block = DenseBlock(
                num_convs, channels, growth, activation=activation, batch_norm=batch_norm
            )
            blocks.append(block)
            channels = block.out_channels
            if index < len(convs_per_block) - 1:
                transition = transition_block(
                    channels, channels // 2, activation=activation, pool=pool, batch_norm=batch_norm
                )
                blocks.append(transition)
                channels //= 2
        # 192 -> 96 (12 x 12), 224 -> 112 (6 x 6), 240 -> 120 (3 x 3), 248 x 3 x 3 at 96 px (d2l stem);
        # the same channels at 14 x 14, 7 x 7, 3 x 3 at 28 px (lowres)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            *([nn.BatchNorm2d(channels)] if batch_norm else []),
            make_activation(activation),
            GlobalAvgPool(),
            nn.Flatten(),
            nn.Linear(channels, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.b1(x)))


# Three 2x2/2 transitions need 8 px after the stem: d2l's maps n to ceil(ceil(n / 2) / 2), so
# 29; the lowres stem keeps n, so 8; lowres_pool maps n to ceil(n / 2), so 15.
DENSENET_MIN_INPUT = {"d2l": 29, "lowres": 8, "lowres_pool": 15}


@register("densenet", default_input_size=96, min_input_size=DENSENET_MIN_INPUT)
def densenet(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    pool: str = "avg",
    batch_norm: bool = True,
    width: float = 1.0,
    stem: str = "d2l",
) -> nn.Module:
    """d2l's DenseNet: 4 dense blocks of 4 convolutions, growth 32, transitions halving channels.

    Knobs: ``activation`` in every pre-activation unit; ``pool`` avg or max for the 2x2/2 pooling
    of the transitions (d2l's stem keeps its max-pool); ``batch_norm`` False drops every BN layer;
    ``width`` multiplies the stem's 64 channels and the growth rate; ``stem`` d2l (7x7/2 conv and
    3x3/2 max-pool), lowres (3x3/1 conv, no pool: the paper's CIFAR stem, for 28 to 32 px) or
    lowres_pool (3x3/1 conv and the 3x3/2 max-pool: pytorch-pretrained-cnns' lowres_densenet121).
    """
    return DenseNet(
        in_channels=in_channels, num_classes=num_classes,
        activation=activation, pool=pool, batch_norm=batch_norm, width=width, stem=stem,
    )
