"""The model registry: a plain dict of builders, one name each.

A builder is a function ``builder(*, in_channels, num_classes, input_size, **knobs) -> nn.Module``.
Its keyword parameters after those three are the network's ablation knobs; their defaults are the
d2l defaults. A network with a ``stem`` knob registers its smallest input size per stem (a dict),
since d2l's stems halve the image where the low-resolution ones keep it. The weight initialization (the recipe's ``init``) is applied here for every network,
so builders never see it. ``convbench.networks`` reads the same registrations from the source,
without torch, to check studies; knob values are checked by its functions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from convbench.models._layers import initialize
from convbench.networks import COMMON_ARGS, STEMS, NetworkError, check_knobs, resolve_input_size


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one network."""

    name: str
    builder: Callable[..., nn.Module]
    default_input_size: int
    min_input_size: int  # with the default knobs
    summary: str
    knobs: dict[str, Any] = field(default_factory=dict)  # knob -> default
    min_input_size_by_stem: dict[str, int] = field(default_factory=dict)  # empty: no stem knob


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, default_input_size: int, min_input_size: int | dict[str, int]
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name``; a second registration of the same name is an error.

    ``min_input_size`` is one number, or for a builder with a ``stem`` knob one per stem it builds
    (the stems a study may then give it)."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(builder).parameters
        missing = [arg for arg in COMMON_ARGS if arg not in params]
        if missing:
            raise TypeError(f"builder for {name!r} lacks keyword(s) {missing}")
        knobs = {k: p.default for k, p in params.items() if k not in COMMON_ARGS}
        if "init" in knobs:
            raise TypeError(f"builder for {name!r} must not take 'init': build() applies it")
        by_stem = dict(min_input_size) if isinstance(min_input_size, dict) else {}
        if ("stem" in knobs) != bool(by_stem) or not set(by_stem) <= set(STEMS) \
                or (by_stem and not {"d2l", knobs["stem"]} <= set(by_stem)):
            raise TypeError(f"model {name!r}: a builder with a 'stem' knob registers min_input_size "
                            f"as a dict over the stems it builds (d2l and its default among them; "
                            f"of {list(STEMS)}), any other builder as a number")
        minimum = by_stem[knobs["stem"]] if by_stem else min_input_size
        if max(by_stem.values(), default=minimum) > default_input_size:
            raise ValueError(f"model {name!r}: minimum input size above its default")
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            default_input_size=default_input_size,
            min_input_size=minimum,
            summary=doc.splitlines()[0] if doc else "",
            knobs=knobs,
            min_input_size_by_stem=by_stem,
        )
        return builder

    return decorator


def unregister(name: str) -> None:
    """Forget ``name`` (a project's network whose file changed, before it is imported again)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Registered network names, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a NetworkError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NetworkError(f"unknown network {name!r}; known networks: {', '.join(names())}") from None


def build(
    name: str,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | None = None,
    init: str = "default",
    **knobs: Any,
) -> nn.Module:
    """Build network ``name``; ``input_size=None`` means its d2l default resolution, ``init`` the
    weight initialization (a recipe setting: ``default`` keeps PyTorch's)."""
    entry = spec(name)
    check_knobs(name, knobs)
    size = resolve_input_size(name, input_size, knobs)
    if in_channels < 1 or num_classes < 1:
        raise NetworkError(f"network {name!r}: in_channels and num_classes must be >= 1")
    model = entry.builder(
        in_channels=in_channels, num_classes=num_classes, input_size=size, **knobs
    )
    initialize(model, init)
    return model


def interface() -> dict[str, dict[str, Any]]:
    """Every network's interface as ``convbench.networks`` reads it from ``models/networks.json``."""
    return {  # the zoo's: a project's networks (convbench.user_networks) are its study's, not the package's
        name: {"module": entry.builder.__module__, "default_input_size": entry.default_input_size,
               "min_input_size": entry.min_input_size, "knobs": entry.knobs,
               "min_input_size_by_stem": entry.min_input_size_by_stem}
        for name, entry in sorted(_REGISTRY.items()) if entry.builder.__module__.startswith("convbench.")
    }
