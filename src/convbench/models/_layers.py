"""Small pieces every family shares: activations, pooling, initialization, shape inference."""

from __future__ import annotations

import torch
from torch import nn

from convbench.networks import ACTIVATIONS as ACTIVATION_CLASSES
from convbench.networks import POOLS as POOL_CLASSES
from convbench.networks import check_activation, check_hidden, check_pool, check_probability, check_stem, check_width
from convbench.recipe import INITS

ACTIVATIONS: dict[str, type[nn.Module]] = {name: getattr(nn, cls) for name, cls in ACTIVATION_CLASSES.items()}
POOLS: dict[str, type[nn.Module]] = {name: getattr(nn, cls) for name, cls in POOL_CLASSES.items()}

__all__ = ["ACTIVATIONS", "INITS", "POOLS", "GlobalAvgPool", "activation", "check_hidden", "check_probability",
           "check_stem", "flat_features", "initialize", "pool2d", "scaled", "two_hidden_layers"]


def activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    return ACTIVATIONS[check_activation(name)]()


def pool2d(kind: str, kernel_size: int, stride: int | None = None, padding: int = 0) -> nn.Module:
    """A max or average pooling layer."""
    return POOLS[check_pool(kind)](kernel_size, stride=stride, padding=padding)


class GlobalAvgPool(nn.Module):
    """Each channel's mean over its pixels, N x C x H x W -> N x C x 1 x 1: what
    ``nn.AdaptiveAvgPool2d(1)`` computes, but with a deterministic CUDA backward. PyTorch's
    deterministic mode (``recipe.deterministic``) raises a RuntimeError at the first backward of
    ``AdaptiveAvgPool2d`` on a GPU (``torch.use_deterministic_algorithms``' list); a mean's
    backward is a broadcast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, at least 1."""
    return max(1, int(channels * check_width(width)))


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
