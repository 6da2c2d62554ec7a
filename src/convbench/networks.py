"""What every network is, without importing torch: name, module, input sizes, knobs and their values.

A study is checked before any job (by ``convbench study``, Snakemake's parse and every stage's
command), and importing torch to do it would cost each of those seconds. So the registry's
interface (``convbench.models``: each builder's registered input sizes and its keyword knobs with
their defaults) is written to ``models/networks.json`` by ``python -m convbench.models``,
and read from there. The registry stays the one source: a test rebuilds the file from it and fails
when the two differ, saying to run that command.

The knob value checks live here too, torch-free, and the model code calls the same functions.
So does the smallest input size, which for a network with a ``stem`` knob depends on the stem:
d2l's 7x7 stride-2 stems halve the image twice before the first block, the low-resolution ones
(``stem: lowres``) keep it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

CATALOG_PATH = Path(__file__).resolve().parent / "models" / "networks.json"
COMMON_ARGS = ("in_channels", "num_classes", "input_size")

# Knob values -> the torch.nn class that implements them (convbench.models._layers resolves them).
ACTIVATIONS: dict[str, str] = {
    "sigmoid": "Sigmoid",
    "relu": "ReLU",
    "tanh": "Tanh",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
    "gelu": "GELU",
    "silu": "SiLU",
}
POOLS: dict[str, str] = {"max": "MaxPool2d", "avg": "AvgPool2d"}
# The first layers before a network's first block: d2l's, designed for 224 or 96 px, or the
# low-resolution form the CIFAR literature uses at 28 to 32 px (each model file says what it is).
# d2l's ImageNet stem; the CIFAR stem of He et al. (one 3x3/1 convolution, no pooling); the same
# convolution followed by a 3x3/2 max-pool (pytorch-pretrained-cnns' lowres_resnet18 and
# lowres_densenet121). A network takes the stems its min_input_size_by_stem names.
STEMS: tuple[str, ...] = ("d2l", "lowres", "lowres_pool")


@dataclass(frozen=True)
class Network:
    """One registered network, as its model file declares it."""

    name: str
    module: str  # the models module that defines its builder, e.g. "convbench.models.lenet"
    default_input_size: int
    min_input_size: int  # with the default knobs
    knobs: dict[str, Any] = field(default_factory=dict)  # knob -> default
    min_input_size_by_stem: dict[str, int] = field(default_factory=dict)  # empty: no stem knob


# ------------------------------------------------------------------------------ knob values


class NetworkError(ValueError):
    """A network name, knob or input size the catalogue refuses; the message says which and why."""



def check_activation(name: object) -> str:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise NetworkError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return str(name)


def check_pool(kind: object) -> str:
    if not isinstance(kind, str) or kind not in POOLS:
        raise NetworkError(f"pool must be one of {sorted(POOLS)}, got {kind!r}")
    return str(kind)


def check_stem(stem: object, stems: tuple[str, ...] = STEMS) -> str:
    if not isinstance(stem, str) or stem not in stems:
        raise NetworkError(f"stem must be one of {list(stems)}, got {stem!r}")
    return str(stem)


def check_probability(name: str, p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
        raise NetworkError(f"{name} must be in [0, 1), got {p!r}")
    return float(p)


def check_width(width: object) -> float:
    if (isinstance(width, bool) or not isinstance(width, (int, float))
            or not math.isfinite(width) or width <= 0):
        raise NetworkError(f"width must be a number > 0, got {width!r}")
    return float(width)


def check_hidden(hidden: object) -> int:
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise NetworkError(f"hidden must be a positive integer, got {hidden!r}")
    return hidden


def _check_bool(knob: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise NetworkError(f"{knob} must be true or false, got {value!r}")
        return value

    return check


KNOB_CHECKS: dict[str, Callable[[Any], object]] = {
    "activation": check_activation,
    "pool": check_pool,
    "stem": check_stem,
    "dropout": lambda p: check_probability("dropout", p),
    "width": check_width,
    "hidden": check_hidden,
    "batch_norm": _check_bool("batch_norm"),
    "shortcut": _check_bool("shortcut"),
}


# --------------------------------------------------------------------------- the catalogue


@functools.lru_cache(maxsize=None)
def zoo() -> dict[str, Network]:
    """The package's own networks by name (from ``models/networks.json``)."""
    entries = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    return {name: Network(name=name, **entries[name]) for name in sorted(entries)}


# Networks of the user's project that this process imported (convbench.user_networks): their
# ``module`` is the file, as the study names it.
_PROJECT: dict[str, Network] = {}


def add_project_network(network: Network) -> None:
    _PROJECT[network.name] = network


def remove_project_networks(names: list[str]) -> None:
    for name in names:
        _PROJECT.pop(name, None)


def project_file(name: str) -> str | None:
    """The project file that defines network ``name``, or None for the zoo's."""
    entry = _PROJECT.get(name)
    return entry.module if entry is not None else None


def catalog() -> dict[str, Network]:
    """Every network by name, in name order: the zoo's and those of the project's files imported."""
    merged = {**zoo(), **_PROJECT}
    return {name: merged[name] for name in sorted(merged)}


def names() -> list[str]:
    """Registered network names, sorted."""
    return list(catalog())


def network(name: str) -> Network:
    """The catalogue entry for ``name``, or a ValueError listing the known names."""
    try:
        return catalog()[name]
    except KeyError:
        raise NetworkError(f"unknown network {name!r}; known networks: {', '.join(names())}") from None


def check_knobs(name: str, knobs: dict[str, Any]) -> None:
    """Raise NetworkError if ``knobs`` names a knob network ``name`` does not accept, or gives one a
    value it cannot take."""
    accepted = network(name).knobs
    if "init" in knobs:
        raise NetworkError("init is a recipe setting, not a network knob: set recipe.init")
    unknown = sorted(set(knobs) - set(accepted))
    if unknown:
        raise NetworkError(
            f"network {name!r} does not accept knob(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted))}"
        )
    for knob, value in knobs.items():
        if value is None and accepted[knob] is None:  # the network's own default (mlp's dropout)
            continue
        if knob in KNOB_CHECKS:
            KNOB_CHECKS[knob](value)
    stems = network(name).min_input_size_by_stem
    if "stem" in knobs and stems and knobs["stem"] not in stems:
        raise NetworkError(f"network {name!r} has no stem {knobs['stem']!r}; its stems: {', '.join(stems)}")


def min_input_size(name: str, knobs: dict[str, Any] | None = None) -> int:
    """The smallest input size network ``name`` runs at with ``knobs`` (its stem decides it)."""
    entry = network(name)
    if not entry.min_input_size_by_stem:
        return entry.min_input_size
    stem = check_stem((knobs or {}).get("stem", entry.knobs["stem"]))
    return entry.min_input_size_by_stem[stem]


def resolve_input_size(name: str, input_size: int | None, knobs: dict[str, Any] | None = None) -> int:
    """The input size to build ``name`` at: the default when None, else checked against the minimum
    for ``knobs``."""
    entry = network(name)
    if input_size is None:
        return entry.default_input_size
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise NetworkError(f"network {name!r}: input_size must be an integer, got {input_size!r}")
    minimum = min_input_size(name, knobs)
    if input_size < minimum:
        with_stem = (f" with stem {(knobs or {}).get('stem', entry.knobs['stem'])!r}"
                     if entry.min_input_size_by_stem else "")
        raise NetworkError(f"network {name!r}{with_stem} needs input_size >= {minimum}, got {input_size}")
    return input_size
