"""Training recipes: every setting of the trainer in one validated, serializable record.

A recipe is built from a plain dict (params.yaml, the CLI) so that a result can always say exactly
how it was trained. The ``d2l`` preset reproduces ``train_ch6``: plain SGD at a fixed learning rate,
Xavier-uniform initialization, no weight decay, no augmentation, no normalization, 10 epochs, with
d2l's per-network learning rate, batch size and resolution.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any

from convbench import schema

# The choices are the schema's (study.schema.yaml, $defs/recipe), the one list of each; the
# schema checks every other field's choices itself.
INITS = schema.choices("recipe", "init")


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
    # Test-time augmentation of the final scoring (convbench.evaluate): "none" or "flip".
    tta: str = "none"
    init: str = "xavier"
    normalize: bool = True
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float = 0.0
    deterministic: bool = False
    # fp32 convolutions and matrix products in TF32 on Ampere and newer GPUs (cuDNN's own default is
    # on): off, so fp32 means fp32 and a GPU result is comparable with the CPU's; no effect on a CPU.
    tf32: bool = False
    eval_batch_size: int = 1024
    # A smoke run (the study's `smoke: N`): at most N batches per epoch, training and evaluation
    # alike; 0 is a real run. convbench.study sets it, with the smoke run's epochs.
    smoke: int = 0

    @property
    def flips(self) -> bool:
        """Whether training mirrors images (augmentation crop_flip or crop_flip_erase)."""
        return self.augmentation in ("crop_flip", "crop_flip_erase")

    @property
    def erasing(self) -> bool:
        """Whether training erases a random rectangle after its crops and flips (crop_flip_erase)."""
        return self.augmentation == "crop_flip_erase"

    def to_dict(self) -> dict[str, Any]:
        """The recipe as results record it. A real run's record has no ``smoke`` key, so results
        recorded before smoke runs existed still match their study (convbench.consistency), while
        a smoke run's ``smoke: N`` never matches a real study. Likewise ``tta`` is recorded only when
        it is on, so results from before it existed still match."""
        settings = dataclasses.asdict(self)
        if not settings["smoke"]:
            del settings["smoke"]
        if settings["tta"] == "none":
            del settings["tta"]
        return settings


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
    "tta": "none",
    "init": "xavier",
    "normalize": False,
    "grad_clip": 0.0,
}

def d2l_input_size(arch: str) -> int | None:
    """d2l's training resolution for ``arch``, or None when d2l does not train it."""
    settings = D2L_SETTINGS.get(arch)
    return settings[2] if settings else None


def _validate(recipe: Recipe) -> Recipe:
    """What the schema cannot say: finite numbers (YAML's .inf is a number), rules across fields."""
    for f in dataclasses.fields(Recipe):
        value = getattr(recipe, f.name)
        if f.type == "float" and not math.isfinite(value):
            raise ValueError(f"recipe.{f.name}: must be finite, got {value!r}")
    if recipe.warmup_epochs > recipe.epochs:
        raise ValueError(
            f"recipe.warmup_epochs: {recipe.warmup_epochs} is longer than the {recipe.epochs} epochs"
        )
    if recipe.nesterov and (recipe.optimizer != "sgd" or recipe.momentum == 0):
        raise ValueError("recipe.nesterov: needs optimizer 'sgd' with momentum > 0")
    if recipe.tta == "flip" and not recipe.flips:
        raise ValueError(
            f"recipe.tta: 'flip' needs an augmentation with flips (crop_flip or crop_flip_erase), got "
            f"{recipe.augmentation!r}: a network that never saw mirrored images scores worse on them"
        )
    return recipe


def resolve_recipe(settings: dict[str, Any] | None, arch: str) -> Recipe:
    """A validated Recipe from a dict of settings; ``preset: d2l`` fills in d2l's values first.

    Keys given next to the preset override it, so ``{preset: d2l, epochs: 2}`` is d2l's recipe
    for two epochs. The schema's ``$defs/recipe`` checks keys, types and ranges; errors name the key.
    """
    settings = dict(settings or {})
    # Text that reads as a number (`--recipe lr=1e-3` on a command line) becomes one; a study file
    # never gets here with one (the schema refuses it, pointing at YAML's 1e-3).
    for f in dataclasses.fields(Recipe):
        value = settings.get(f.name)
        if f.type in ("float", "int") and isinstance(value, str):
            try:
                settings[f.name] = value = float(value) if f.type == "float" else int(value)
            except ValueError:
                pass  # the schema names it
        if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            settings[f.name] = float(value)  # an int where a float belongs: the field's type
    schema.validate(settings, "recipe", prefix="recipe")
    preset = settings.pop("preset", None)
    values: dict[str, Any] = {}
    if preset is not None:
        values.update(D2L_RECIPE)
        if arch in D2L_SETTINGS:
            lr, batch_size, _ = D2L_SETTINGS[arch]
            values.update(lr=lr, batch_size=batch_size)
    values.update(settings)
    return _validate(Recipe(**values))


def steps_in_epoch(recipe: Recipe, train_images: int) -> int:
    """Optimizer steps in one epoch over ``train_images``: whole batches only (the last, incomplete
    one is dropped), at least one; a smoke run's first ``smoke`` of them."""
    steps = max(1, train_images // recipe.batch_size)
    return min(steps, recipe.smoke) if recipe.smoke else steps


def evaluation_limit(recipe: Recipe) -> int | None:
    """How many images a smoke run validates and tests on (``smoke`` evaluation batches); None, all
    of them, in a real run."""
    return recipe.smoke * recipe.eval_batch_size if recipe.smoke else None


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): a pure function, so resuming needs no state.

    Warm-up is linear from lr/10 (or from 0 for onecycle's start) over ``warmup_epochs``; cosine then
    decays to 0; onecycle is warm-up to lr then a linear decay to 0 (30% warm-up if none is given).
    Hand-written rather than a ``torch.optim.lr_scheduler``: a scheduler is state that a resumed run
    would have to restore, while a function of the step replays exactly.
    """
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


# Horizontal flips turn a handwritten digit or character into another one or none (a mirrored 2,
# 3, 4, 7 or kana is no digit or kana); clothes (Fashion-MNIST) keep their class.
FLIP_BREAKS_LABELS = {"digits": "handwritten digits", "mnist": "handwritten digits",
                      "kmnist": "handwritten Japanese characters (kana)"}


def flip_warning(recipe: Recipe, dataset: str) -> str | None:
    """Why ``recipe`` (augmentation crop_flip or crop_flip_erase, tta flip) trains or scores on
    images of ``dataset`` that no longer show their label; None when it does not flip them."""
    what = FLIP_BREAKS_LABELS.get(dataset)
    flips = [f"augmentation: {recipe.augmentation}"] if recipe.flips else []
    flips += ["tta: flip"] if recipe.tta == "flip" else []
    if what is None or not flips:
        return None
    return (f"{' and '.join(flips)} mirrors the images of {dataset}, {what}: a mirrored digit or "
            "character is another one or none, so its label no longer holds; use augmentation: none "
            "and tta: none on this data set")


def flip_warnings(study: Any) -> list[str]:
    """Each experiment whose recipe mirrors images that do not survive it (recipe.flip_warning)."""
    return [f"experiments.{name}: {warning}" for name, e in study.experiments.items()
            if (warning := flip_warning(e.recipe, study.dataset))]


def warn(study: Any, path: Any, command: str) -> None:
    """Print a study's warnings (:func:`flip_warnings`) to stderr, each naming its file."""
    for warning in flip_warnings(study):
        print(f"convbench {command}: warning: {path}: {warning}", file=sys.stderr, flush=True)
