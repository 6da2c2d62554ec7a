"""Training recipes: every setting of the trainer in one validated, serializable record.

A recipe is built from a plain dict (params.yaml, the CLI) so that a result can always say exactly
how it was trained. The ``d2l`` preset reproduces ``train_ch6``: plain SGD at a fixed learning rate,
Xavier-uniform initialization, no weight decay, no augmentation, no normalization, 10 epochs, with
d2l's per-network learning rate, batch size and resolution.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("none", "crop_flip")
PRECISIONS = ("fp32", "bf16", "fp16")
INITS = ("default", "xavier", "kaiming")


@dataclass(frozen=True)
class Recipe:
    """How to train. Defaults are a sensible modern recipe, not d2l's (use the ``d2l`` preset)."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    batch_size: int = 128
    epochs: int = 10
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augmentation: str = "none"
    init: str = "xavier"
    normalize: bool = True
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float = 0.0
    deterministic: bool = False
    eval_batch_size: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# d2l's train_ch6 settings per network: (lr, batch_size, input_size). The VGG/ResNet/mini variants
# reuse their family's values; mlp is the dropout chapter's.
D2L_SETTINGS: dict[str, tuple[float, int, int]] = {
    "lenet": (0.9, 256, 28),
    "lenet_bn": (1.0, 256, 28),
    "mlp": (0.5, 256, 28),
    "alexnet": (0.01, 128, 224),
    "vgg11": (0.05, 128, 224),
    "vgg13": (0.05, 128, 224),
    "vgg16": (0.05, 128, 224),
    "vgg19": (0.05, 128, 224),
    "nin": (0.1, 128, 224),
    "googlenet": (0.1, 128, 96),
    "resnet18": (0.05, 256, 96),
    "resnet34": (0.05, 256, 96),
    "densenet": (0.1, 256, 96),
    "mini_inception": (0.1, 64, 28),
    "mini_resnet": (0.1, 64, 28),
}

D2L_RECIPE: dict[str, Any] = {
    "optimizer": "sgd",
    "momentum": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "epochs": 10,
    "schedule": "constant",
    "warmup_epochs": 0.0,
    "label_smoothing": 0.0,
    "augmentation": "none",
    "init": "xavier",
    "normalize": False,
    "grad_clip": 0.0,
}

PRESETS = ("d2l",)


def d2l_input_size(arch: str) -> int | None:
    """d2l's training resolution for ``arch``, or None when d2l does not train it."""
    settings = D2L_SETTINGS.get(arch)
    return settings[2] if settings else None


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"recipe.{key}: must be one of {list(choices)}, got {value!r}")


def _check_number(key: str, value: Any, *, minimum: float, strict: bool, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"recipe.{key}: must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"recipe.{key}: must be finite, got {value!r}")
    if value < minimum or (strict and value == minimum):
        bound = ">" if strict else ">="
        raise ValueError(f"recipe.{key}: must be {bound} {minimum}, got {value!r}")


def _validate(recipe: Recipe) -> Recipe:
    _check_choice("optimizer", recipe.optimizer, OPTIMIZERS)
    _check_choice("schedule", recipe.schedule, SCHEDULES)
    _check_choice("augmentation", recipe.augmentation, AUGMENTATIONS)
    _check_choice("precision", recipe.precision, PRECISIONS)
    _check_choice("init", recipe.init, INITS)
    _check_number("lr", recipe.lr, minimum=0, strict=True, integer=False)
    _check_number("momentum", recipe.momentum, minimum=0, strict=False, integer=False)
    _check_number("weight_decay", recipe.weight_decay, minimum=0, strict=False, integer=False)
    _check_number("batch_size", recipe.batch_size, minimum=1, strict=False, integer=True)
    _check_number("eval_batch_size", recipe.eval_batch_size, minimum=1, strict=False, integer=True)
    _check_number("epochs", recipe.epochs, minimum=1, strict=False, integer=True)
    _check_number("warmup_epochs", recipe.warmup_epochs, minimum=0, strict=False, integer=False)
    _check_number("grad_clip", recipe.grad_clip, minimum=0, strict=False, integer=False)
    _check_number("label_smoothing", recipe.label_smoothing, minimum=0, strict=False, integer=False)
    if recipe.label_smoothing >= 1:
        raise ValueError(f"recipe.label_smoothing: must be < 1, got {recipe.label_smoothing!r}")
    if recipe.momentum >= 1:
        raise ValueError(f"recipe.momentum: must be < 1, got {recipe.momentum!r}")
    if recipe.warmup_epochs > recipe.epochs:
        raise ValueError(
            f"recipe.warmup_epochs: {recipe.warmup_epochs} is longer than the {recipe.epochs} epochs"
        )
    if recipe.nesterov and (recipe.optimizer != "sgd" or recipe.momentum == 0):
        raise ValueError("recipe.nesterov: needs optimizer 'sgd' with momentum > 0")
    for key in ("nesterov", "normalize", "channels_last", "compile", "deterministic"):
        if not isinstance(getattr(recipe, key), bool):
            raise ValueError(f"recipe.{key}: must be true or false, got {getattr(recipe, key)!r}")
    return recipe


def resolve_recipe(settings: dict[str, Any] | None, arch: str) -> Recipe:
    """A validated Recipe from a dict of settings; ``preset: d2l`` fills in d2l's values first.

    Keys given next to the preset override it, so ``{preset: d2l, epochs: 2}`` is d2l's recipe
    for two epochs. Unknown keys are errors that name the key.
    """
    settings = dict(settings or {})
    preset = settings.pop("preset", None)
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(f"recipe: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    if preset is not None:
        _check_choice("preset", preset, PRESETS)
        values.update(D2L_RECIPE)
        if arch in D2L_SETTINGS:
            lr, batch_size, _ = D2L_SETTINGS[arch]
            values.update(lr=lr, batch_size=batch_size)
    values.update(settings)
    # YAML writes 1e-3 as a string under some loaders; accept numeric strings for numeric fields.
    for f in dataclasses.fields(Recipe):
        if f.name in values and f.type in ("float", "int") and isinstance(values[f.name], str):
            try:
                values[f.name] = float(values[f.name]) if f.type == "float" else int(values[f.name])
            except ValueError:
                raise ValueError(f"recipe.{f.name}: must be a number, got {values[f.name]!r}") from None
        if f.name in values and f.type == "float" and isinstance(values[f.name], int) and not isinstance(values[f.name], bool):
            values[f.name] = float(values[f.name])
    return _validate(Recipe(**values))


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): a pure function, so resuming needs no state.

    Warm-up is linear from lr/10 (or from 0 for onecycle's start) over ``warmup_epochs``; cosine then
    decays to 0; onecycle is warm-up to lr then a linear decay to 0 (30% warm-up if none is given).
    """
    import math

    total = recipe.epochs * steps_per_epoch
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    if recipe.schedule == "onecycle" and warmup == 0:
        warmup = max(1, int(0.3 * total))
    if step < warmup:
        start = 0.0 if recipe.schedule == "onecycle" else recipe.lr / 10
        return start + (recipe.lr - start) * (step + 1) / warmup
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - warmup) / max(1, total - warmup)
    if recipe.schedule == "cosine":
        return 0.5 * recipe.lr * (1 + math.cos(math.pi * progress))
    return recipe.lr * (1 - progress)
