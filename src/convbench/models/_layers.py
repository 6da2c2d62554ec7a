"""Small pieces every family shares: activations, pooling, initialization, shape inference."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}

INITS = ("default", "xavier", "kaiming")


def activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def pool2d(kind: str, kernel_size: int, stride: int | None = None, padding: int = 0) -> nn.Module:
    """A max or average pooling layer."""
    try:
        cls = POOLS[kind]
    except KeyError:
        raise ValueError(f"pool must be one of {sorted(POOLS)}, got {kind!r}") from None
    return cls(kernel_size, stride=stride, padding=padding)


def check_probability(name: str, p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p!r}")
    return float(p)


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, at least 1."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a number > 0, got {width!r}")
    return max(1, int(channels * width))


def check_hidden(hidden: int) -> int:
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
    return hidden


def two_hidden_layers(
    in_features: int, hidden: int, num_classes: int, activation_name: str, dropout: float
) -> nn.Sequential:
    """AlexNet's and VGG's classifier: two ``hidden``-unit layers with dropout, then the output."""
    check_hidden(hidden)
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        activation(activation_name),
        *drop,
        nn.Linear(hidden, hidden),
        activation(activation_name),
        *drop,
        nn.Linear(hidden, num_classes),
    )


def flat_features(features: nn.Module, in_channels: int, input_size: int) -> int:
    """Number of features ``features`` produces for one image of the given size.

    One real forward pass of a zero image on the CPU (eval mode, no grad). The meta device would
    skip the arithmetic, but its Python kernels import torch._dynamo, which costs every job
    seconds of start-up; a batch of one at these sizes costs milliseconds.
    """
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, in_channels, input_size, input_size))
    finally:
        features.train(was_training)
    return out[0].numel()


def initialize(model: nn.Module, init: str) -> nn.Module:
    """Re-initialize conv and linear weights: ``xavier`` (d2l's train_ch6), ``kaiming`` or ``default``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    if init == "default":
        return model
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None and init == "kaiming":
                nn.init.zeros_(module.bias)
    return model
