"""The multilayer perceptron of d2l's dropout chapter (Srivastava et al., 2014).

Two hidden layers of 256 units with dropout 0.2 after the first and 0.5 after the second: the
baseline every convolutional network in the zoo has to beat on Fashion-MNIST.
"""

from __future__ import annotations

import torch
from torch import nn

from convbench.models._layers import activation as make_activation
from convbench.models._layers import check_probability, scaled
from convbench.models._registry import register

HIDDEN_UNITS = 256
D2L_DROPOUTS = (0.2, 0.5)  # after the first and the second hidden layer


class MLP(nn.Module):
    """Flatten, then hidden linear layers each followed by [BN], activation, [dropout]."""

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        hidden: tuple[int, ...],
        dropouts: tuple[float, ...],
        activation: str,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for width_out, p in zip(hidden, dropouts, strict=True):
            layers.append(nn.Linear(width_in, width_out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width_out))
            layers.append(make_activation(activation))
            if p > 0:
                layers.append(nn.Dropout(p))
            width_in = width_out
        layers.append(nn.Linear(width_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# No convolution or pooling: any image size flattens to C * size * size features.
@register("mlp", default_input_size=28, min_input_size=1)
def mlp(
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    activation: str = "relu",
    dropout: float | None = None,
    width: float = 1.0,
    batch_norm: bool = False,
) -> nn.Module:
    """d2l's dropout MLP: two hidden layers of 256 units, dropout 0.2 then 0.5.

    Knobs: ``activation`` of the hidden layers; ``dropout`` None keeps d2l's pair (0.2, 0.5), a
    float sets both layers (0 removes the Dropout modules); ``width`` multiplies the 256 hidden
    units; ``batch_norm`` adds BatchNorm1d after each hidden linear layer, before the activation.
    """
    if dropout is None:
        dropouts = D2L_DROPOUTS
    else:
        p = check_probability("dropout", dropout)
        dropouts = (p, p)
    hidden = scaled(HIDDEN_UNITS, width)
    return MLP(
        in_features=in_channels * input_size * input_size,
        num_classes=num_classes,
        hidden=(hidden, hidden),
        dropouts=dropouts,
        activation=activation,
        batch_norm=batch_norm,
    )
