"""LeNet-5 (LeCun et al., 1998) as d2l builds it, and d2l's batch-norm LeNet (Ioffe & Szegedy, 2015).

d2l's LeNet pads the first convolution by 2 so 28x28 Fashion-MNIST keeps LeNet's 32x32 geometry;
its batch-norm LeNet drops that padding (16x4x4 features into the first linear layer).
"""

from __future__ import annotations

from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import check_probability, flat_features, pool2d
from convbench.models._registry import register


class LeNet(nn.Module):
    """Two 5x5 conv + pool stages, then three linear layers (120, 84, classes)."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        input_size: int,
        first_padding: int,
        activation: str,
        pool: str,
        batch_norm: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        dropout = check_probability("dropout", dropout)

        def norm(kind: type[nn.Module], channels: int) -> list[nn.Module]:
            return [kind(channels)] if batch_norm else []

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=first_padding),
            *norm(nn.BatchNorm2d, 6),
            make_activation(activation),
            pool2d(pool, 2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            *norm(nn.BatchNorm2d, 16),
            make_activation(activation),
            pool2d(pool, 2, stride=2),
            nn.Flatten(),
        )
        # N x 400 at 28 px with padding 2 (N x 256 without)
        flat = flat_features(self.features, in_channels, input_size)
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            *norm(nn.BatchNorm1d, 120),
            make_activation(activation),
            *drop,
            nn.Linear(120, 84),
            *norm(nn.BatchNorm1d, 84),
            make_activation(activation),
            *drop,
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register("lenet", default_input_size=28, min_input_size=12)
def lenet(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "sigmoid",
    pool: str = "avg",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """LeNet as in the notes: sigmoid, average pooling, first conv padded by 2.

    Knobs: ``activation`` everywhere; ``pool`` avg or max for the two 2x2/2 poolings;
    ``batch_norm`` adds BN after every convolution and hidden linear layer (d2l's ``lenet_bn``
    placement); ``dropout`` after each hidden linear layer (0, the default, adds no modules).
    """
    return LeNet(
        in_channels=in_channels, num_classes=num_classes, input_size=input_size,
        first_padding=2, activation=activation, pool=pool, batch_norm=batch_norm, dropout=dropout,
    )


@register("lenet_bn", default_input_size=28, min_input_size=16)
def lenet_bn(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "sigmoid",
    pool: str = "avg",
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> nn.Module:
    """d2l's batch-norm LeNet: BN after every conv and hidden linear layer, first conv unpadded.

    Knobs as for ``lenet``; ``batch_norm`` False gives the unpadded LeNet without BN.
    """
    return LeNet(
        in_channels=in_channels, num_classes=num_classes, input_size=input_size,
        first_padding=0, activation=activation, pool=pool, batch_norm=batch_norm, dropout=dropout,
    )
