"""The model registry: a plain dict of builders, one name each.

A builder is a function ``builder(*, in_channels, num_classes, input_size, **knobs) -> nn.Module``.
Its keyword parameters after those three are the network's ablation knobs; their defaults are the
d2l defaults. ``init`` is handled here for every network, so builders never see it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from convbench.models._layers import (
    INITS,
    activation,
    check_hidden,
    check_probability,
    initialize,
    pool2d,
    scaled,
)

COMMON_ARGS = ("in_channels", "num_classes", "input_size")


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one network."""

    name: str
    builder: Callable[..., nn.Module]
    default_input_size: int
    min_input_size: int
    summary: str
    knobs: dict[str, Any] = field(default_factory=dict)  # knob -> default


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, default_input_size: int, min_input_size: int
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name``; a second registration of the same name is an error."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if min_input_size > default_input_size:
            raise ValueError(f"model {name!r}: minimum input size above its default")
        params = inspect.signature(builder).parameters
        missing = [arg for arg in COMMON_ARGS if arg not in params]
        if missing:
            raise TypeError(f"builder for {name!r} lacks keyword(s) {missing}")
        knobs = {k: p.default for k, p in params.items() if k not in COMMON_ARGS}
        if "init" in knobs:
            raise TypeError(f"builder for {name!r} must not take 'init': build() applies it")
        knobs["init"] = "default"
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            default_input_size=default_input_size,
            min_input_size=min_input_size,
            summary=doc.splitlines()[0] if doc else "",
            knobs=knobs,
        )
        return builder

    return decorator


def names() -> list[str]:
    """Registered network names, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a ValueError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; known networks: {', '.join(names())}") from None


def check_knobs(name: str, knobs: dict[str, Any]) -> None:
    """Raise ValueError if ``knobs`` names a knob network ``name`` does not accept, or gives one a
    value it cannot take."""
    accepted = spec(name).knobs
    unknown = sorted(set(knobs) - set(accepted))
    if unknown:
        raise ValueError(
            f"network {name!r} does not accept knob(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted))}"
        )
    if "init" in knobs and knobs["init"] not in INITS:
        raise ValueError(f"network {name!r}: init must be one of {sorted(INITS)}, got {knobs['init']!r}")
    for knob, value in knobs.items():
        if knob in BOOLEAN_KNOBS and not isinstance(value, bool):
            raise ValueError(f"network {name!r}: {knob} must be true or false, got {value!r}")
        if knob in KNOB_VALUE_CHECKS:
            KNOB_VALUE_CHECKS[knob](value)


# Knob values are checked by the same functions the builders use, so a study is refused before any
# job without building a network (a meta-device build would import seconds of torch internals).
BOOLEAN_KNOBS = ("batch_norm", "shortcut")
KNOB_VALUE_CHECKS: dict[str, Callable[[Any], object]] = {
    "activation": activation,
    "pool": lambda kind: pool2d(kind, kernel_size=2),
    "dropout": lambda p: check_probability("dropout", p),
    "width": lambda width: scaled(1, width),
    "hidden": check_hidden,
}


def resolve_input_size(name: str, input_size: int | None) -> int:
    """The input size to build ``name`` at: the default when None, else checked against the minimum."""
    entry = spec(name)
    if input_size is None:
        return entry.default_input_size
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise TypeError(f"network {name!r}: input_size must be an integer, got {input_size!r}")
    if input_size < entry.min_input_size:
        raise ValueError(
            f"network {name!r} needs input_size >= {entry.min_input_size}, got {input_size}"
        )
    return input_size


def build(
    name: str,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | None = None,
    **knobs: Any,
) -> nn.Module:
    """Build network ``name``; ``input_size=None`` means its d2l default resolution."""
    entry = spec(name)
    check_knobs(name, knobs)
    size = resolve_input_size(name, input_size)
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"network {name!r}: in_channels and num_classes must be >= 1")
    init = knobs.pop("init", "default")
    model = entry.builder(
        in_channels=in_channels, num_classes=num_classes, input_size=size, **knobs
    )
    initialize(model, init)
    return model
