"""Training recipes: validation that names what is wrong, the d2l preset, and the lr schedule."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from convbench.recipe import D2L_SETTINGS, Recipe, d2l_input_size, lr_at, resolve_recipe


def test_defaults_are_a_valid_modern_recipe() -> None:
    recipe = resolve_recipe(None, "lenet")
    assert recipe == Recipe() == resolve_recipe({}, "lenet")
    assert (recipe.optimizer, recipe.momentum, recipe.schedule) == ("sgd", 0.9, "cosine")
    assert recipe.normalize is True
    # a recipe survives the round trip through its dict (what checkpoints store)
    assert resolve_recipe(recipe.to_dict(), "lenet") == recipe


def test_d2l_preset_is_plain_sgd_at_a_fixed_rate() -> None:
    recipe = resolve_recipe({"preset": "d2l"}, "lenet")
    assert recipe.optimizer == "sgd"
    assert recipe.momentum == 0.0 and recipe.nesterov is False
    assert recipe.weight_decay == 0.0
    assert recipe.schedule == "constant" and recipe.warmup_epochs == 0.0
    assert recipe.init == "xavier"
    assert recipe.augmentation == "none" and recipe.label_smoothing == 0.0
    assert recipe.normalize is False
    assert recipe.epochs == 10
    assert recipe.grad_clip == 0.0


@pytest.mark.parametrize(
    ("arch", "lr", "batch_size", "input_size"),
    [("lenet", 0.9, 256, 28), ("alexnet", 0.01, 128, 224), ("resnet18", 0.05, 256, 96)],
)
def test_d2l_preset_takes_the_networks_lr_and_batch_size(
    arch: str, lr: float, batch_size: int, input_size: int
) -> None:
    recipe = resolve_recipe({"preset": "d2l"}, arch)
    assert (recipe.lr, recipe.batch_size) == (lr, batch_size)
    assert d2l_input_size(arch) == input_size


def test_d2l_preset_for_a_network_d2l_does_not_train_keeps_the_default_lr() -> None:
    assert d2l_input_size("no_such_net") is None
    recipe = resolve_recipe({"preset": "d2l"}, "no_such_net")
    assert (recipe.lr, recipe.batch_size) == (Recipe.lr, Recipe.batch_size)
    assert recipe.momentum == 0.0  # still d2l's optimizer settings


def test_keys_next_to_the_preset_override_it() -> None:
    recipe = resolve_recipe({"preset": "d2l", "epochs": 2, "lr": 0.3, "normalize": True}, "lenet")
    assert (recipe.epochs, recipe.lr, recipe.normalize) == (2, 0.3, True)
    assert recipe.batch_size == D2L_SETTINGS["lenet"][1]  # the rest is still the preset's
    assert recipe.momentum == 0.0


def test_numeric_strings_and_ints_become_the_fields_type() -> None:
    # params.yaml read by some loaders gives "1e-3"; an int lr must still be a float
    recipe = resolve_recipe({"lr": "1e-3", "batch_size": "32", "momentum": 0}, "lenet")
    assert recipe.lr == 0.001 and isinstance(recipe.lr, float)
    assert recipe.batch_size == 32 and isinstance(recipe.batch_size, int)
    assert isinstance(recipe.momentum, float)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ValueError, match=r"recipe\.learning_rate: unknown key; known keys: ") as err:
        resolve_recipe({"learning_rate": 0.1}, "lenet")
    assert "lr" in str(err.value)  # the known keys are listed


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match=r"recipe\.preset: must be one of \['d2l'\], got 'd3l'"):
        resolve_recipe({"preset": "d3l"}, "lenet")


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"lr": -0.1}, "lr"),
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": "nan"}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"lr": None}, "lr"),
        ({"momentum": -0.5}, "momentum"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 32.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.0}, "epochs"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"warmup_epochs": 5, "epochs": 2}, "warmup_epochs"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"grad_clip": -1}, "grad_clip"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"schedule": "step"}, "schedule"),
        ({"augmentation": "mixup"}, "augmentation"),
        ({"precision": "fp8"}, "precision"),
        ({"init": "orthogonal"}, "init"),
        ({"normalize": "yes"}, "normalize"),
        ({"deterministic": 1}, "deterministic"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov"),
        ({"nesterov": True, "optimizer": "adamw"}, "nesterov"),
        ({"tta": "flip"}, "tta"),  # without flips in training
        ({"tta": "crop"}, "tta"),
    ],
)
def test_bad_values_are_refused_naming_the_key(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"^recipe\.{key}: "):
        resolve_recipe(settings, "lenet")


def test_bad_choice_lists_the_choices() -> None:
    with pytest.raises(ValueError) as err:
        resolve_recipe({"schedule": "step"}, "lenet")
    assert str(err.value) == (
        "recipe.schedule: must be one of ['constant', 'cosine', 'onecycle'], got 'step'"
    )


def test_recipe_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Recipe().lr = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------------------------ schedule

STEPS_PER_EPOCH = 10


def schedule(**settings: Any) -> np.ndarray:
    recipe = resolve_recipe(settings, "lenet")
    total = recipe.epochs * STEPS_PER_EPOCH
    return np.array([lr_at(recipe, step, STEPS_PER_EPOCH) for step in range(total)])


def test_constant_schedule_is_constant() -> None:
    assert np.all(schedule(schedule="constant", lr=0.3, epochs=4) == 0.3)


def test_cosine_starts_at_lr_halves_midway_and_ends_near_zero() -> None:
    lrs = schedule(schedule="cosine", lr=0.2, epochs=4)
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[len(lrs) // 2] == pytest.approx(0.1)
    assert np.all(np.diff(lrs) < 0)
    assert 0 < lrs[-1] < 0.01 * 0.2


def test_warmup_rises_linearly_to_lr_then_follows_the_schedule() -> None:
    lrs = schedule(schedule="constant", lr=0.5, epochs=3, warmup_epochs=1)
    warmup, rest = lrs[:STEPS_PER_EPOCH], lrs[STEPS_PER_EPOCH:]
    steps = np.diff(warmup)
    assert np.all(steps > 0)
    np.testing.assert_allclose(steps, steps[0])  # a straight line
    assert 0.05 <= warmup[0] < 0.5 / 5  # from about lr/10
    assert warmup[-1] == pytest.approx(0.5)
    assert np.all(rest == 0.5)


def test_cosine_after_warmup_starts_at_lr() -> None:
    lrs = schedule(schedule="cosine", lr=0.1, epochs=4, warmup_epochs=1)
    assert lrs.argmax() in (STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH)
    assert lrs.max() == pytest.approx(0.1)
    assert lrs[-1] < 0.01 * 0.1


def test_onecycle_peaks_at_lr_after_30_percent_then_decays_to_zero() -> None:
    lrs = schedule(schedule="onecycle", lr=0.4, epochs=10)
    total = len(lrs)
    peak = int(lrs.argmax())
    assert lrs[peak] == pytest.approx(0.4)
    assert peak == math.floor(0.3 * total) - 1
    assert lrs[0] == pytest.approx(0.4 / (0.3 * total))  # from 0, linearly
    assert np.all(np.diff(lrs[: peak + 1]) > 0)
    assert np.all(np.diff(lrs[peak + 1 :]) < 0)
    assert lrs[-1] == pytest.approx(0.4 / (total - peak - 1))  # the decay's last step above 0


def test_lr_is_a_pure_function_of_the_step() -> None:
    recipe = resolve_recipe({"schedule": "onecycle", "epochs": 3}, "lenet")
    forwards = [lr_at(recipe, s, 7) for s in range(21)]
    backwards = [lr_at(recipe, s, 7) for s in reversed(range(21))][::-1]
    assert forwards == backwards
