"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) as d2l builds it for 1-channel 224 px input.

d2l pads the first 11x11 convolution by 1 so a 224 px image gives 54x54 maps and 256x5x5 = 6400
features into the classifier; the single-GPU layout has none of the paper's two-tower split.

The 11x11 stride-4 first convolution is AlexNet's stem: it needs 65 px, so the chapter study
upsamples 28 px images to 84. ``stem="lowres"`` replaces it by a 3x3 stride-1 convolution
(padding 1) to the same 96 channels, the first layer of pytorch-pretrained-cnns' lowres_alexnet
(models/lowresalexnet.py, commit fcf8222), whose Fashion-MNIST number reference/native.yaml quotes.
Only the first convolution changes: d2l's channels, its three 3x3/2 poolings and its classifier
stay (lowres_alexnet also has torchvision's 64-192-384-256-256 channels and 2x2/2 poolings; those
are a different network, not a different stem). At 28 px the maps are then 28, 13, 6 and 2 px,
so the classifier gets 256 x 2 x 2 = 1024 features.
"""

from __future__ import annotations

import torch
from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import check_probability, check_stem, flat_features, pool2d, scaled
from convbench.models._layers import two_hidden_layers
from convbench.models._registry import register

HIDDEN_UNITS = 4096


class AlexNet(nn.Module):
    """Five convolutions (11x11, 5x5, three 3x3), three 3x3/2 poolings, three linear layers."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        activation: str,
        pool: str,
        batch_norm: bool,
        dropout: float,
        width: float,
        hidden: int,
        stem: str,
    ) -> None:
        super().__init__()
        dropout = check_probability("dropout", dropout)
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (96, 256, 384, 384, 256))

        def conv(c_in: int, c_out: int, kernel_size: int, **kwargs: int) -> list[nn.Module]:
            norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
            return [nn.Conv2d(c_in, c_out, kernel_size, **kwargs), *norm, make_activation(activation)]

        first = {"d2l": {"kernel_size": 11, "stride": 4, "padding": 1},
                 "lowres": {"kernel_size": 3, "stride": 1, "padding": 1}}[check_stem(stem, tuple(ALEXNET_MIN_INPUT))]
        self.features = nn.Sequential(
            *conv(in_channels, c1, **first),  # N x 96 x 54 x 54 at 224 px (lowres: 28 x 28 at 28 px)
            pool2d(pool, 3, stride=2),  # N x 96 x 26 x 26
            *conv(c1, c2, 5, padding=2),
            pool2d(pool, 3, stride=2),  # N x 256 x 12 x 12
            *conv(c2, c3, 3, padding=1),
            *conv(c3, c4, 3, padding=1),
            *conv(c4, c5, 3, padding=1),
            pool2d(pool, 3, stride=2),  # N x 256 x 5 x 5
            nn.Flatten(),  # N x 6400
        )
        flat = flat_features(self.features, in_channels, input_size)
        self.classifier = two_hidden_layers(flat, hidden, num_classes, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# Three 3x3/2 poolings need 3x3 maps before the last one, so 7x7 before the second and 15x15
# after the first convolution: (size + 2 - 11) // 4 + 1 >= 15 gives size >= 65 with d2l's stem;
# the lowres 3x3/1 convolution keeps the size, so 15.
ALEXNET_MIN_INPUT = {"d2l": 65, "lowres": 15}  # the stems it builds, each with its smallest input


@register("alexnet", default_input_size=224, min_input_size=ALEXNET_MIN_INPUT)
def alexnet(
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
    stem: str = "d2l",
) -> nn.Module:
    """d2l's AlexNet: 5 convs (first padded by 1), 3 max-pools, two 4096-unit layers with dropout.

    Knobs: ``activation`` everywhere; ``pool`` max or avg for the three 3x3/2 poolings;
    ``batch_norm`` adds BatchNorm2d after every convolution (torchvision's ``*_bn`` convention,
    the classifier keeps only dropout); ``dropout`` of the two hidden linear layers (0 removes the
    modules); ``width`` multiplies the convolution channels (the 4096 hidden units stay, as in d2l's
    narrow VGG); ``hidden`` units of the two hidden linear layers (4096); ``stem`` d2l (the 11x11/4
    first convolution) or lowres (a 3x3/1 one, as lowres_alexnet's, for 28 to 32 px).
    """
    return AlexNet(
        in_channels=in_channels, num_classes=num_classes, input_size=input_size,
        activation=activation, pool=pool, batch_norm=batch_norm, dropout=dropout, width=width,
        hidden=hidden, stem=stem,
    )
