"""Published reference numbers, and which of a study's experiments they describe.

``d2l.yaml`` holds d2l's test accuracies for the chapter (its latest build, plus the range and
median over its 20 published builds), each with its source. An experiment has a d2l counterpart
when it trains the same network with the same knobs, at d2l's resolution, on the same data set,
with d2l's recipe; performance-only settings (memory format, compilation, determinism, evaluation
batch size) do not change what is learned and are ignored.

``native.yaml`` holds, per family, a published result at native resolution (28 or 32 px), with
its source and the form the source trained it in (stem, resolution, epochs, augmentation): not the
same network or recipe, a yardstick for a study at native resolution, and the form says how far.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from convbench.networks import STEMS
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
class NativeForm:
    """How a published native-resolution result was trained; None is "not stated"."""

    stem: str | None  # in words; "n/a": the network has no stem to choose
    stem_knob: str | None  # convbench's ``stem`` value that builds the same stem; None: none does
    input_px: int | None
    epochs: int | None
    epochs_up_to: bool  # at most ``epochs``, the best epoch taken
    augmentation: str | None  # "none", or what it was


FORM_FIELDS = ("stem", "stem_knob", "input_px", "epochs", "epochs_up_to", "augmentation")


@dataclass(frozen=True)
class NativeResult:
    """A published Fashion-MNIST result at native resolution for one family (``native.yaml``)."""

    arch: str
    family: str
    test_acc: float | None  # None: no published result found
    network: str
    source: str | None  # the source's key in ``native.yaml``'s sources
    source_text: str | None
    form: NativeForm | None = None  # None exactly when there is no result


@dataclass(frozen=True)
class Native:
    dataset: str
    families: dict[str, NativeResult]  # by convbench network name (an experiment's arch)
    under_100k: NativeResult


def native_form(arch: str, test_acc: float | None, raw: Any) -> NativeForm | None:
    """``native.yaml``'s ``form`` of entry ``arch``, checked: one with a result, none without."""
    where = f"native.yaml: {arch}: form"
    if raw is None:
        if test_acc is not None:
            raise ValueError(f"{where}: missing; a published result says how it was trained "
                             f"({', '.join(FORM_FIELDS)}; null where the source does not say)")
        return None
    if test_acc is None:
        raise ValueError(f"{where}: given without a result (test_acc: null)")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a mapping of {', '.join(FORM_FIELDS)}, got {raw!r}")
    raw = {"epochs_up_to": False, **raw}
    if sorted(raw) != sorted(FORM_FIELDS):
        raise ValueError(f"{where}: needs exactly {', '.join(FORM_FIELDS)}, got {', '.join(raw)}")
    for key in ("stem", "augmentation"):
        if raw[key] is not None and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise ValueError(f"{where}.{key}: must be text or null (not stated), got {raw[key]!r}")
    if raw["stem_knob"] is not None and raw["stem_knob"] not in STEMS:
        raise ValueError(f"{where}.stem_knob: must be one of {list(STEMS)} or null, got {raw['stem_knob']!r}")
    for key in ("input_px", "epochs"):
        value = raw[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}.{key}: must be a positive integer or null (not stated), got {value!r}")
    if not isinstance(raw["epochs_up_to"], bool) or (raw["epochs_up_to"] and raw["epochs"] is None):
        raise ValueError(f"{where}.epochs_up_to: must be true or false, and true only with epochs, "
                         f"got {raw['epochs_up_to']!r}")
    return NativeForm(**raw)


def parse_native(raw: dict[str, Any]) -> Native:
    """``native.yaml``'s content as checked results; a ValueError names the entry and the field."""
    sources = {key: " ".join(text.split()) for key, text in raw["sources"].items()}

    def result(arch: str, entry: dict[str, Any]) -> NativeResult:
        source = entry.get("source")
        if source is not None and source not in sources:
            raise ValueError(f"native.yaml: {arch}: source {source!r} is not among {sorted(sources)}")
        return NativeResult(arch=arch, family=entry.get("family", arch), test_acc=entry["test_acc"],
                            network=entry["network"], source=source,
                            source_text=sources.get(source) if source else None,
                            form=native_form(arch, entry["test_acc"], entry.get("form")))

    return Native(dataset=raw["dataset"],
                  families={arch: result(arch, entry) for arch, entry in raw["families"].items()},
                  under_100k=result("under_100k", raw["under_100k"]))


@cache
def native() -> Native:
    """Published native-resolution results per family (``native.yaml``), read once."""
    return parse_native(native_yaml())


def native_yaml() -> dict[str, Any]:
    """``native.yaml`` as YAML reads it, unchecked (:func:`parse_native` checks it)."""
    return yaml.safe_load(files(__package__).joinpath("native.yaml").read_text(encoding="utf-8"))


def d2l_by_arch() -> dict[str, BookResult]:
    """d2l's result for each network name (d2l trains each family once, at its resolution)."""
    by_arch: dict[str, BookResult] = {}
    for result in d2l().results.values():
        by_arch.setdefault(result.arch, result)
    return by_arch

