"""Published reference numbers, and which of a study's experiments they describe.

``d2l.yaml`` holds d2l's test accuracies for the chapter (its latest build, plus the range and
median over its 20 published builds), each with its source. An experiment has a d2l counterpart
when it trains the same network with the same knobs, at d2l's resolution, on the same data set,
with d2l's recipe; performance-only settings (memory format, compilation, determinism, evaluation
batch size) do not change what is learned and are ignored.

``native.yaml`` holds, per family, a published result at native resolution (28 or 32 px), with
its source: not the same network or recipe, a yardstick for a study at native resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from convbench.recipe import Recipe, resolve_recipe

# Recipe fields that decide how a run is executed, not what it learns.
EXECUTION_ONLY = ("channels_last", "compile", "deterministic", "eval_batch_size")


@dataclass(frozen=True)
class BookResult:
    """One network's published numbers."""

    key: str
    title: str
    arch: str
    knobs: dict[str, Any]
    input_size: int
    lr: float
    batch_size: int
    params: int
    test_acc: float
    test_acc_low: float
    test_acc_high: float
    test_acc_median: float
    train_acc: float
    train_loss: float
    examples_per_s: float

    def verdict(self, accuracy: float) -> str:
        """Where ``accuracy`` falls against the published range."""
        if accuracy < self.test_acc_low:
            return "below d2l's range"
        if accuracy > self.test_acc_high:
            return "above d2l's range"
        return "inside d2l's range"


@dataclass(frozen=True)
class Book:
    source: str
    dataset: str
    epochs: int
    results: dict[str, BookResult]

    def counterpart(
        self, dataset: str, arch: str, knobs: dict[str, Any], input_size: int, recipe: Recipe
    ) -> BookResult | None:
        """The published result for this experiment's setting, or None if d2l has none."""
        if dataset != self.dataset:
            return None
        for result in self.results.values():
            same_net = (result.arch, result.knobs, result.input_size) == (arch, knobs, input_size)
            if same_net and _learning_settings(recipe) == _learning_settings(d2l_recipe(arch)):
                return result
        return None


def d2l_recipe(arch: str) -> Recipe:
    return resolve_recipe({"preset": "d2l"}, arch)


def _learning_settings(recipe: Recipe) -> dict[str, Any]:
    return {k: v for k, v in recipe.to_dict().items() if k not in EXECUTION_ONLY}


@cache
def d2l() -> Book:
    """d2l's published numbers (``d2l.yaml``), read once."""
    raw = yaml.safe_load(files(__package__).joinpath("d2l.yaml").read_text(encoding="utf-8"))
    results = {}
    for key, entry in raw["networks"].items():
        entry = dict(entry)
        low, high = entry.pop("test_acc_range")
        results[key] = BookResult(key=key, test_acc_low=low, test_acc_high=high, **entry)
    return Book(source=" ".join(raw["source"].split()), dataset=raw["dataset"],
                epochs=raw["epochs"], results=results)


@dataclass(frozen=True)
class NativeResult:
    """A published Fashion-MNIST result at native resolution for one family (``native.yaml``)."""

    arch: str
    family: str
    test_acc: float | None  # None: no published result found
    network: str
    source: str | None  # the source's key in ``native.yaml``'s sources
    source_text: str | None


@dataclass(frozen=True)
class Native:
    dataset: str
    families: dict[str, NativeResult]  # by convbench network name (an experiment's arch)
    under_100k: NativeResult


@cache
def native() -> Native:
    """Published native-resolution results per family (``native.yaml``), read once."""
    raw = yaml.safe_load(files(__package__).joinpath("native.yaml").read_text(encoding="utf-8"))
    sources = {key: " ".join(text.split()) for key, text in raw["sources"].items()}

    def result(arch: str, entry: dict[str, Any]) -> NativeResult:
        source = entry.get("source")
        if source is not None and source not in sources:
            raise ValueError(f"native.yaml: {arch}: source {source!r} is not among {sorted(sources)}")
        return NativeResult(arch=arch, family=entry.get("family", arch), test_acc=entry["test_acc"],
                            network=entry["network"], source=source,
                            source_text=sources.get(source) if source else None)

    return Native(dataset=raw["dataset"],
                  families={arch: result(arch, entry) for arch, entry in raw["families"].items()},
                  under_100k=result("under_100k", raw["under_100k"]))


def d2l_by_arch() -> dict[str, BookResult]:
    """d2l's result for each network name (d2l trains each family once, at its resolution)."""
    by_arch: dict[str, BookResult] = {}
    for result in d2l().results.values():
        by_arch.setdefault(result.arch, result)
    return by_arch

