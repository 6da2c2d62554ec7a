"""GoogLeNet (Szegedy et al., 2015) as d2l builds it, and the small Inception net of the PyTorch course.

d2l's GoogLeNet keeps the paper's nine Inception blocks but drops the auxiliary classifiers and the
local response normalization, and is trained at 96 px. The course net ("mini Inception") wraps two
88-channel Inception blocks around two plain convolutions for 28 px MNIST.

d2l's stem halves the image three times before the first Inception block (b1: 7x7/2 convolution
and 3x3/2 max-pool; b2: 1x1 and 3x3 convolutions and a 3x3/2 max-pool), so at 28 px Inception
3a/3b see 4x4 maps, 4a-4e 2x2 and 5a/5b 1x1. ``stem="lowres"`` is the CIFAR GoogLeNet's stem, exactly what
kuangliu/pytorch-cifar models/googlenet.py (``pre_layers``, commit 49b7aa9) and
pytorch-pretrained-cnns' lowres_googlenet (models/lowresgooglenet.py, commit fcf8222) do: b1 and b2
are replaced by one 3x3 stride-1 convolution (padding 1) to b2's 192 channels, followed by [BN and]
the activation, with no pooling. The nine Inception blocks, the two 3x3/2 max-pools between the
Inception groups and the head stay d2l's, so at 28 px the groups see 28, 14 and 7 px. The ``b2``
attribute is then an identity, so that d2l's form keeps its parameter names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import GlobalAvgPool, check_stem, flat_features, pool2d, scaled
from convbench.models._registry import register

# One Inception block: c1, (c2 reduce, c2), (c3 reduce, c3), c4 -- see ``Inception``.
InceptionConfig = tuple[int, tuple[int, int], tuple[int, int], int]

# The Inception blocks of d2l's b3, b4 and b5; a 3x3/2 max-pool follows every stage but the last.
GOOGLENET_STAGES: tuple[tuple[InceptionConfig, ...], ...] = (
    (  # b3 (3a, 3b)
        (64, (96, 128), (16, 32), 32),
        (128, (128, 192), (32, 96), 64),
    ),
    (  # b4 (4a-4e)
        (192, (96, 208), (16, 48), 64),
        (160, (112, 224), (24, 64), 64),
        (128, (128, 256), (24, 64), 64),
        (112, (144, 288), (32, 64), 64),
        (256, (160, 320), (32, 128), 128),
    ),
    (  # b5 (5a, 5b)
        (256, (160, 320), (32, 128), 128),
        (384, (192, 384), (48, 128), 128),
    ),
)


def conv_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    activation: str,
    batch_norm: bool,
    **kwargs: int,
) -> list[nn.Module]:
    """A convolution, [BatchNorm2d,] activation: GoogLeNet's unit everywhere."""
    norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, **kwargs)
    return [conv, *norm, make_activation(activation)]


class Inception(nn.Module):
    """Four parallel branches concatenated along channels.

    1x1 (c1); 1x1 reduce then 3x3 (c2); 1x1 reduce then 5x5 (c3); 3x3/1 max-pool then 1x1 (c4).
    The 1x1 reductions are the point: they keep the 3x3 and 5x5 convolutions cheap.
    """

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c2: tuple[int, int],
        c3: tuple[int, int],
        c4: int,
        *,
        activation: str,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        options = {"activation": activation, "batch_norm": batch_norm}
        self.branch1 = nn.Sequential(*conv_act(in_channels, c1, 1, **options))
        self.branch2 = nn.Sequential(
            *conv_act(in_channels, c2[0], 1, **options),
            *conv_act(c2[0], c2[1], 3, padding=1, **options),
        )
        self.branch3 = nn.Sequential(
            *conv_act(in_channels, c3[0], 1, **options),
            *conv_act(c3[0], c3[1], 5, padding=2, **options),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            *conv_act(in_channels, c4, 1, **options),
        )
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], dim=1)


def googlenet_stem(
    stem: str, in_channels: int, width: float, *, activation: str, batch_norm: bool
) -> tuple[nn.Module, nn.Module]:
    """d2l's b1 and b2 (n -> n / 8, 192 channels), or the CIFAR 3x3/1 convolution to 192 and an
    identity (n -> n)."""
    options = {"activation": activation, "batch_norm": batch_norm}
    c64, c192 = scaled(64, width), scaled(192, width)
    if check_stem(stem, tuple(GOOGLENET_MIN_INPUT)) == "lowres":
        return nn.Sequential(*conv_act(in_channels, c192, 3, padding=1, **options)), nn.Identity()
    b1 = nn.Sequential(
        *conv_act(in_channels, c64, 7, stride=2, padding=3, **options),
        nn.MaxPool2d(3, stride=2, padding=1),
    )  # N x 64 x 24 x 24 at 96 px
    b2 = nn.Sequential(
        *conv_act(c64, c64, 1, **options),
        *conv_act(c64, c192, 3, padding=1, **options),
        nn.MaxPool2d(3, stride=2, padding=1),
    )  # N x 192 x 12 x 12
    return b1, b2


class GoogLeNet(nn.Module):
    """Stem (b1, b2), three Inception stages from ``GOOGLENET_STAGES``, global pooling, one linear."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        activation: str,
        batch_norm: bool,
        width: float,
        stem: str,
    ) -> None:
        super().__init__()
        options = {"activation": activation, "batch_norm": batch_norm}
        # N x 192 x 12 x 12 at 96 px (d2l), N x 192 x 28 x 28 at 28 px (lowres)
        self.b1, self.b2 = googlenet_stem(stem, in_channels, width, **options)
        channels = scaled(192, width)
        stages: list[nn.Module] = []
        for index, stage in enumerate(GOOGLENET_STAGES):
            blocks: list[nn.Module] = []
            for c1, c2, c3, c4 in stage:
                block = Inception(
                    channels,
                    scaled(c1, width),
                    (scaled(c2[0], width), scaled(c2[1], width)),
                    (scaled(c3[0], width), scaled(c3[1], width)),
                    scaled(c4, width),
                    **options,
                )
                blocks.append(block)
                channels = block.out_channels
            if index < len(GOOGLENET_STAGES) - 1:
                blocks.append(nn.MaxPool2d(3, stride=2, padding=1))
            else:
                blocks += [GlobalAvgPool(), nn.Flatten()]
            stages.append(nn.Sequential(*blocks))
        # b3: N x 480 x 6 x 6, b4: N x 832 x 3 x 3, b5: N x 1024 at 96 px (d2l stem);
        # b3: N x 480 x 14 x 14, b4: N x 832 x 7 x 7 at 28 px (lowres)
        self.b3, self.b4, self.b5 = stages
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b2(self.b1(x))
        x = self.b5(self.b4(self.b3(x)))
        return self.fc(x)


class InceptionA(nn.Module):
    """The course's Inception block: 16 + 24 + 24 + 24 = 88 channels, no activations inside."""

    out_channels = 88

    def __init__(self, in_channels: int, *, batch_norm: bool) -> None:
        super().__init__()

        def conv(c_in: int, c_out: int, kernel_size: int, padding: int = 0) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, kernel_size, padding=padding)
            return nn.Sequential(layer, nn.BatchNorm2d(c_out)) if batch_norm else layer

        self.branch1x1 = conv(in_channels, 16, 1)
        self.branch5x5_1 = conv(in_channels, 16, 1)
        self.branch5x5_2 = conv(16, 24, 5, padding=2)
        self.branch3x3_1 = conv(in_channels, 16, 1)
        self.branch3x3_2 = conv(16, 24, 3, padding=1)
        self.branch3x3_3 = conv(24, 24, 3, padding=1)
        self.branch_pool = conv(in_channels, 24, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([branch1x1, branch5x5, branch3x3, branch_pool], dim=1)


class MiniInception(nn.Module):
    """conv 5x5 (10) -> pool -> Inception -> conv 5x5 (20) -> pool -> Inception -> linear."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str,
        pool: str,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(InceptionA.out_channels, 20, kernel_size=5)
        self.bn1 = nn.BatchNorm2d(10) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(20) if batch_norm else nn.Identity()
        self.incep1 = InceptionA(10, batch_norm=batch_norm)
        self.incep2 = InceptionA(20, batch_norm=batch_norm)
        self.mp = pool2d(pool, 2)  # shared by both stages, as in the course
        self.act = make_activation(activation)
        self.fc = nn.Identity()  # placeholder, so that probing the net yields the flat features
        self.fc = nn.Linear(flat_features(self, in_channels, input_size), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.mp(self.bn1(self.conv1(x))))  # N x 10 x 12 x 12
        x = self.incep1(x)  # N x 88 x 12 x 12
        x = self.act(self.mp(self.bn2(self.conv2(x))))  # N x 20 x 4 x 4
        x = self.incep2(x)  # N x 88 x 4 x 4
        return self.fc(torch.flatten(x, 1))  # N x 1408 into the linear layer


# Default size 96 gives 3x3 maps before the global pooling; every stride-2 step here (7x7/2 conv
# padded by 3, 3x3/2 max-pools padded by 1) maps n to ceil(n / 2) >= 1 and the lowres stem keeps
# n, so even 1 px runs with either stem.
GOOGLENET_MIN_INPUT = {"d2l": 1, "lowres": 1}  # the stems it builds, each with its smallest input


@register("googlenet", default_input_size=96, min_input_size=GOOGLENET_MIN_INPUT)
def googlenet(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    batch_norm: bool = False,
    width: float = 1.0,
    stem: str = "d2l",
) -> nn.Module:
    """d2l's GoogLeNet: 9 Inception blocks in three stages, global average pooling, one linear layer.

    Knobs: ``activation`` after every convolution; ``batch_norm`` adds BatchNorm2d after every
    convolution (the Inception-v2 recipe); ``width`` multiplies every convolution's channels, the
    branch widths of the table included; ``stem`` d2l (b1 and b2, halving three times) or lowres
    (one 3x3/1 convolution to 192 channels: the CIFAR GoogLeNet's, for 28 to 32 px).
    """
    return GoogLeNet(
        in_channels=in_channels, num_classes=num_classes,
        activation=activation, batch_norm=batch_norm, width=width, stem=stem,
    )


# Two 5x5 valid convolutions each followed by a 2x2/2 pool: ((size - 4) // 2 - 4) // 2 >= 1 needs 16.
@register("mini_inception", default_input_size=28, min_input_size=16)
def mini_inception(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    pool: str = "max",
    batch_norm: bool = False,
) -> nn.Module:
    """The PyTorch course's MNIST Inception net: two 88-channel Inception blocks, fc 1408 -> classes.

    Knobs: ``activation`` after the two pooled convolutions (the Inception blocks have none, as in
    the course); ``pool`` max or avg for the shared 2x2 pooling; ``batch_norm`` adds BatchNorm2d
    after every convolution.
    """
    return MiniInception(
        in_channels=in_channels, num_classes=num_classes, input_size=input_size,
        activation=activation, pool=pool, batch_norm=batch_norm,
    )
