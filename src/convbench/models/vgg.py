"""VGG (Simonyan & Zisserman, 2015) as d2l builds it: blocks of 3x3 convolutions, each block halving.

The four depths differ only in their stage table, so the table is the architecture. d2l trains
VGG-11 with the convolution channels divided by 4 (``width=0.25``) and the 4096-unit classifier
untouched, which is why ``width`` scales the convolutions only.

VGG has no ``stem`` knob: it has no stem to change. Its first layer is already a 3x3 stride-1
convolution and every block halves alike, so the low-resolution VGGs of the CIFAR literature
(pytorch-pretrained-cnns' lowres_vgg11, kuangliu/pytorch-cifar's VGG) are this network at 32 px
with a smaller classifier, which ``hidden`` gives. Five 2x2/2 poolings need 32 px, so 28 px
images are padded or resized to 32.
"""

from __future__ import annotations

import torch
from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import check_probability, flat_features, pool2d, scaled
from convbench.models._layers import two_hidden_layers
from convbench.models._registry import register

HIDDEN_UNITS = 4096

# (num_convs, channels) per stage; every stage ends with a 2x2/2 pooling.
VGG_STAGES: dict[str, tuple[tuple[int, int], ...]] = {
    "vgg11": ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),
    "vgg13": ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),
    "vgg16": ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    "vgg19": ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}


def vgg_block(
    num_convs: int,
    in_channels: int,
    out_channels: int,
    *,
    activation: str,
    pool: str,
    batch_norm: bool,
) -> nn.Sequential:
    """``num_convs`` 3x3 same-size convolutions, then a 2x2/2 pooling that halves the map."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(make_activation(activation))
        in_channels = out_channels
    layers.append(pool2d(pool, 2, stride=2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG blocks from a stage table, then two 4096-unit layers with dropout."""

    def __init__(
        self,
        *,
        stages: tuple[tuple[int, int], ...],
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str,
        pool: str,
        batch_norm: bool,
        dropout: float,
        width: float,
        hidden: int,
    ) -> None:
        super().__init__()
        dropout = check_probability("dropout", dropout)
        blocks: list[nn.Module] = []
        channels = in_channels
        for num_convs, out_channels in stages:
            out_channels = scaled(out_channels, width)
            blocks.append(
                vgg_block(num_convs, channels, out_channels,
                          activation=activation, pool=pool, batch_norm=batch_norm)
            )
            channels = out_channels
        # N x 512 x 7 x 7 at 224 px (N x 128 x 7 x 7 with width 0.25)
        self.features = nn.Sequential(*blocks, nn.Flatten())
        flat = flat_features(self.features, in_channels, input_size)
        self.classifier = two_hidden_layers(flat, hidden, num_classes, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# Five 2x2/2 poolings: the map must be at least 2**5 = 32 px to survive them.
VGG_MIN_INPUT = 32


VGG_SUMMARIES = {
    "vgg11": "VGG-11 (configuration A): 8 convolutions in 5 blocks, then three linear layers.",
    "vgg13": "VGG-13 (configuration B): 10 convolutions, two per block, then three linear layers.",
    "vgg16": "VGG-16 (configuration D): 13 convolutions (2, 2, 3, 3, 3), then three linear layers.",
    "vgg19": "VGG-19 (configuration E): 16 convolutions (2, 2, 4, 4, 4), then three linear layers.",
}


def _vgg_builder(depth: str):
    """A registered builder for one row of VGG_STAGES (the depths differ in nothing else)."""

    def builder(
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str = "relu",
        pool: str = "max",
        batch_norm: bool = False,
        dropout: float = 0.5,
        width: float = 1.0,
        hidden: int = HIDDEN_UNITS,
    ) -> nn.Module:
        return VGG(
            stages=VGG_STAGES[depth],
            in_channels=in_channels, num_classes=num_classes, input_size=input_size,
            activation=activation, pool=pool, batch_norm=batch_norm, dropout=dropout, width=width,
            hidden=hidden,
        )

    builder.__name__ = builder.__qualname__ = depth
    builder.__doc__ = f"""{VGG_SUMMARIES[depth]}

    Knobs: ``activation`` everywhere; ``pool`` max or avg for the five 2x2/2 poolings;
    ``batch_norm`` adds BatchNorm2d after every convolution (torchvision's ``vgg*_bn``); ``dropout``
    of the two hidden linear layers (0 removes the modules); ``width`` multiplies the convolution
    channels only (d2l's narrow VGG-11 is ``width=0.25``); ``hidden`` units of the two hidden
    linear layers (4096; small data sets need far fewer).
    """
    return register(depth, default_input_size=224, min_input_size=VGG_MIN_INPUT)(builder)


vgg11 = _vgg_builder("vgg11")
vgg13 = _vgg_builder("vgg13")
vgg16 = _vgg_builder("vgg16")
vgg19 = _vgg_builder("vgg19")
