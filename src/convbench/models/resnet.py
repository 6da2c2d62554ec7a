"""ResNet (He, Zhang, Ren & Sun, 2016) as d2l builds it, and the small residual net of the PyTorch course.

d2l's ResNet keeps the bias on every convolution and uses a plain 1x1 convolution (no BN) as the
shortcut of the blocks that change shape. ``shortcut=False`` gives the "plain" network of the
paper's degradation experiment: the same layers without the identity additions and without the
1x1 projections, so the two can be compared at equal depth.

d2l's stem (a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool) is ImageNet's: it takes a
28 px image to 7 px before the first stage, and the last stage then works on 1x1 maps.
``stem="lowres"`` is the CIFAR form of He et al. (2016, section 4.2: "The first layer is 3x3
convolutions", no pooling before the first stage), as torchvision-style CIFAR ResNets build it
(kuangliu/pytorch-cifar models/resnet.py): a 3x3 stride-1 convolution (padding 1), BN and the
activation, no max-pool, so at 28 px the four stages see 28, 14, 7 and 4 px. Only the stem
changes; the stages, their strides and the head stay d2l's. (pytorch-pretrained-cnns'
lowres_resnet18, whose Fashion-MNIST number reference/native.yaml quotes, swaps the 7x7/2
convolution for a 3x3/1 but keeps the 3x3/2 max-pool: models/lowresresnet.py at commit fcf8222.)
``stem="lowres_pool"`` is that form: the 3x3/1 convolution, BN and the activation, then d2l's 3x3/2
max-pool, so at 28 px the stages see 14, 7, 4 and 2 px, at about a third of lowres' cost.
"""

from __future__ import annotations

import torch
from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import GlobalAvgPool, check_stem, flat_features, pool2d, scaled
from convbench.models._registry import register

STAGE_CHANNELS = (64, 128, 256, 512)

# Residual blocks per stage; every network here uses d2l's two-convolution basic block.
RESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}


def norm2d(channels: int, batch_norm: bool) -> nn.Module:
    """BatchNorm2d, or an identity when the ablation turns batch norm off."""
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class Residual(nn.Module):
    """Two 3x3 convolutions with BN; the input (projected by a 1x1 conv if needed) is added back."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        activation: str,
        shortcut: bool,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = norm2d(out_channels, batch_norm)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = norm2d(out_channels, batch_norm)
        self.act2 = make_activation(activation)
        self.shortcut = shortcut
        changes_shape = stride != 1 or in_channels != out_channels
        self.conv3 = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride)
            if shortcut and changes_shape
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.shortcut:
            y = y + (self.conv3(x) if self.conv3 is not None else x)
        return self.act2(y)


def resnet_stem(
    stem: str, in_channels: int, channels: int, *, activation: str, batch_norm: bool
) -> nn.Sequential:
    """d2l's 7x7/2 convolution and 3x3/2 max-pool (n -> n / 4), the CIFAR 3x3/1 one (n -> n), or
    that followed by d2l's 3x3/2 max-pool (n -> n / 2)."""
    if check_stem(stem, RESNET_STEMS) == "d2l":
        return nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=7, stride=2, padding=3),
            norm2d(channels, batch_norm),
            make_activation(activation),
            nn.MaxPool2d(3, stride=2, padding=1),
        )  # N x 64 x 24 x 24 at 96 px
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1),
        norm2d(channels, batch_norm),
        make_activation(activation),
        *([nn.MaxPool2d(3, stride=2, padding=1)] if stem == "lowres_pool" else []),
    )  # N x 64 x 28 x 28 at 28 px (lowres), N x 64 x 14 x 14 (lowres_pool)


class ResNet(nn.Module):
    """A stem, four stages of residual blocks (64 to 512 channels), global pooling, one linear."""

    def __init__(
        self,
        *,
        layers: tuple[int, ...],
        in_channels: int,
        num_classes: int,
        activation: str,
        shortcut: bool,
        batch_norm: bool,
        width: float,
        stem: str,
    ) -> None:
        super().__init__()
        options = {"activation": activation, "shortcut": shortcut, "batch_norm": batch_norm}
        channels = scaled(STAGE_CHANNELS[0], width)
        self.b1 = resnet_stem(stem, in_channels, channels, activation=activation, batch_norm=batch_norm)
        stages: list[nn.Module] = []
        for index, (num_blocks, stage_channels) in enumerate(zip(layers, STAGE_CHANNELS)):
            out_channels = scaled(stage_channels, width)
            # the first stage keeps the stem's resolution (d2l's stem ends with a max-pool)
            stride = 1 if index == 0 else 2
            blocks = [Residual(channels, out_channels, stride, **options)]
            blocks += [Residual(out_channels, out_channels, **options) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out_channels
        # N x 64 x 24 x 24, N x 128 x 12 x 12, N x 256 x 6 x 6, N x 512 x 3 x 3 at 96 px (d2l stem);
        # N x 64 x 28 x 28, N x 128 x 14 x 14, N x 256 x 7 x 7, N x 512 x 4 x 4 at 28 px (lowres)
        self.b2, self.b3, self.b4, self.b5 = stages
        self.head = nn.Sequential(
            GlobalAvgPool(), nn.Flatten(), nn.Linear(channels, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b1(x)
        x = self.b5(self.b4(self.b3(self.b2(x))))
        return self.head(x)


class ResidualBlock(nn.Module):
    """The course's residual block: two same-size 3x3 convolutions, ``act(x + conv2(act(conv1(x))))``."""

    def __init__(self, channels: int, *, activation: str, shortcut: bool, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = norm2d(channels, batch_norm)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = norm2d(channels, batch_norm)
        self.act2 = make_activation(activation)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(x + y if self.shortcut else y)


class MiniResNet(nn.Module):
    """conv 5x5 (16) -> pool -> residual block -> conv 5x5 (32) -> pool -> residual block -> linear."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str,
        pool: str,
        shortcut: bool,
        batch_norm: bool,
        width: float,
    ) -> None:
        super().__init__()
        options = {"activation": activation, "shortcut": shortcut, "batch_norm": batch_norm}
        c1, c2 = scaled(16, width), scaled(32, width)
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5)
        self.bn1 = norm2d(c1, batch_norm)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.bn2 = norm2d(c2, batch_norm)
        self.mp = pool2d(pool, 2)  # shared by both stages, as in the course
        self.act = make_activation(activation)
        self.rblock1 = ResidualBlock(c1, **options)
        self.rblock2 = ResidualBlock(c2, **options)
        self.fc = nn.Identity()  # placeholder, so that probing the net yields the flat features
        self.fc = nn.Linear(flat_features(self, in_channels, input_size), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mp(self.act(self.bn1(self.conv1(x))))  # N x 16 x 12 x 12
        x = self.rblock1(x)
        x = self.mp(self.act(self.bn2(self.conv2(x))))  # N x 32 x 4 x 4
        x = self.rblock2(x)
        return self.fc(torch.flatten(x, 1))  # N x 512 into the linear layer


# Every stride-2 step (7x7/2 conv padded by 3, 3x3/2 pool padded by 1, 3x3/2 conv padded by 1,
# 1x1/2 conv) maps n to ceil(n / 2) >= 1, and the lowres stem keeps n, so even 1 px runs with
# any stem (with a batch of 2 or more in train mode, since BN then sees 1x1 maps).
RESNET_MIN_INPUT = {"d2l": 1, "lowres": 1, "lowres_pool": 1}
RESNET_STEMS = tuple(RESNET_MIN_INPUT)


@register("resnet18", default_input_size=96, min_input_size=RESNET_MIN_INPUT)
def resnet18(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    shortcut: bool = True,
    batch_norm: bool = True,
    width: float = 1.0,
    stem: str = "d2l",
) -> nn.Module:
    """d2l's ResNet-18: a 7x7 stem, 4 stages of 2 basic residual blocks, global pooling, one linear.

    Knobs: ``activation`` everywhere; ``shortcut`` False builds the plain network (no identity
    additions, no 1x1 projections); ``batch_norm`` False drops every BN layer (stem included);
    ``width`` multiplies every stage's channels (64, 128, 256, 512); ``stem`` d2l (7x7/2 conv and
    3x3/2 max-pool), lowres (3x3/1 conv, no pool: the CIFAR ResNet's, for 28 to 32 px) or
    lowres_pool (3x3/1 conv and the 3x3/2 max-pool: pytorch-pretrained-cnns' lowres_resnet18).
    """
    return ResNet(
        layers=RESNET_LAYERS["resnet18"], in_channels=in_channels, num_classes=num_classes,
        activation=activation, shortcut=shortcut, batch_norm=batch_norm, width=width, stem=stem,
    )


@register("resnet34", default_input_size=96, min_input_size=RESNET_MIN_INPUT)
def resnet34(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    shortcut: bool = True,
    batch_norm: bool = True,
    width: float = 1.0,
    stem: str = "d2l",
) -> nn.Module:
    """ResNet-34 in d2l's style: 3, 4, 6, 3 basic residual blocks per stage.

    Knobs as for ``resnet18``.
    """
    return ResNet(
        layers=RESNET_LAYERS["resnet34"], in_channels=in_channels, num_classes=num_classes,
        activation=activation, shortcut=shortcut, batch_norm=batch_norm, width=width, stem=stem,
    )


# Two 5x5 valid convolutions each followed by a 2x2/2 pool: ((size - 4) // 2 - 4) // 2 >= 1 needs 16.
@register("mini_resnet", default_input_size=28, min_input_size=16)
def mini_resnet(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    shortcut: bool = True,
    pool: str = "max",
    batch_norm: bool = False,
    width: float = 1.0,
) -> nn.Module:
    """The PyTorch course's MNIST residual net: two residual blocks, fc 512 -> classes.

    Knobs: ``activation`` everywhere; ``shortcut`` False drops the two identity additions;
    ``pool`` max or avg for the shared 2x2 pooling; ``batch_norm`` adds BatchNorm2d after every
    convolution (the course net has none); ``width`` multiplies both stages' channels (16, 32).
    """
    return MiniResNet(
        in_channels=in_channels, num_classes=num_classes, input_size=input_size,
        activation=activation, pool=pool, shortcut=shortcut, batch_norm=batch_norm, width=width,
    )
