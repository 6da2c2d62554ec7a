"""The trainer on the real digits: it learns, keeps its best epoch, fails loudly when it diverges,
reproduces itself bit for bit, and resumes a killed run to exactly the model an uninterrupted run
writes. Also the on-device batch transform it feeds the network with."""

from __future__ import annotations

import csv
import signal
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convbench import prepare
from convbench.batches import (ERASE_P, ERASE_SCALE, BatchTransform, channel_stats, random_crop_flip,
                               random_erasing)
from convbench.models import build
from convbench.recipe import Recipe, lr_at, resolve_recipe
from convbench.split import load_split
from convbench.device import describe_cpu
from convbench.provenance import training_code_version
from convbench.batches import FoldData, fold_data, make_transform
from convbench.checkpoint import (
    CHECKPOINT_FORMAT,
    HISTORY_COLUMNS,
    TIMING_COLUMNS,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    weights_sha256,
)
from convbench.inference import predict
from convbench.train import NonFiniteLossError, train
from convbench.train_job import build_parser, jobs_from_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16  # the tiny runs' input size (digits are 8x8)
CONVBENCH = [sys.executable, "-m", "convbench.cli"]


@pytest.fixture(scope="module")
def fold0(digits: prepare.Dataset, digits_split: Path) -> FoldData:
    return fold_data(digits, load_split(digits_split), 0, torch.device("cpu"))


def tiny_lenet(seed: int = 0, **knobs: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build("lenet", input_size=SIZE, activation="relu", init="xavier", **knobs)


def tiny_recipe(**settings: Any) -> Recipe:
    return resolve_recipe({"epochs": 3, "batch_size": 64, "lr": 0.1, **settings}, "lenet")


def weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_timings(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in history]


def timeless(rows: list[dict[str, str]]) -> list[list[str]]:
    """history.csv rows less their wall-clock columns."""
    return [[row[c] for c in HISTORY_COLUMNS if c not in TIMING_COLUMNS] for row in rows]


def read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames or ()) == HISTORY_COLUMNS
        return list(reader)


# --------------------------------------------------------------------- on-device batch transform


def test_transform_makes_unit_range_floats_at_the_networks_size(digits: prepare.Dataset) -> None:
    images = torch.from_numpy(digits.train_images[:32])  # uint8, 32 x 1 x 8 x 8
    before = images.clone()
    for size in (28, 6):  # up- and downsampling
        x = BatchTransform(size, None, None)(images)
        assert x.shape == (32, 1, size, size) and x.dtype == torch.float32
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        assert float(x.max()) > 0.9  # the strokes survive the resize
    same_size = BatchTransform(8, None, None)(images)
    assert torch.equal(same_size, images.float() / 255)
    white = BatchTransform(20, None, None)(torch.full((2, 1, 8, 8), 255, dtype=torch.uint8))
    torch.testing.assert_close(white, torch.ones(2, 1, 20, 20))
    assert torch.equal(images, before)  # the uint8 data on the device is left alone


def test_channel_stats_match_numpy(fold0: FoldData) -> None:
    mean, std = channel_stats(fold0.train_images)
    assert mean.shape == std.shape == (1, 1, 1, 1)
    pixels = fold0.train_images.numpy().astype(np.float64) / 255
    assert float(mean) == pytest.approx(pixels.mean(), rel=1e-6)
    assert float(std) == pytest.approx(pixels.std(ddof=1), rel=1e-6)


def test_normalization_gives_zero_mean_unit_std_on_the_training_fold(fold0: FoldData) -> None:
    transform = make_transform(fold0, tiny_recipe(normalize=True), input_size=8)
    x = transform(fold0.train_images)
    assert float(x.mean()) == pytest.approx(0, abs=1e-5)
    assert float(x.std()) == pytest.approx(1, abs=1e-4)
    # at another size the statistics carry over closely (resizing keeps the mean)
    resized = make_transform(fold0, tiny_recipe(), input_size=SIZE)(fold0.train_images)
    assert abs(float(resized.mean())) < 0.05
    # without normalization (the d2l preset) pixels stay in [0, 1]
    plain = make_transform(fold0, resolve_recipe({"preset": "d2l"}, "lenet"), input_size=8)
    assert plain.mean is None
    assert torch.equal(plain(fold0.train_images[:5]), fold0.train_images[:5].float() / 255)


def asymmetric_images(n: int, c: int = 2, h: int = 7, w: int = 9) -> torch.Tensor:
    """Distinct nonzero pixels: no translation or mirror of one is equal to another."""
    pixels = torch.randperm(c * h * w, generator=torch.Generator().manual_seed(0)).float() + 1
    return pixels.reshape(1, c, h, w).expand(n, c, h, w).contiguous()


def crops_and_mirrors(image: torch.Tensor, pad: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every (dy, dx, flip) a crop-and-flip by up to ``pad`` pixels may produce, independently."""
    _, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out += [(dy, dx, False, crop), (dy, dx, True, crop.flip(-1))]
    return out


def test_random_crop_flip_is_seeded_and_keeps_shape() -> None:
    x = asymmetric_images(64)
    first = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    again = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    other = random_crop_flip(x, torch.Generator().manual_seed(2), pad=2)
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    changed = [not torch.equal(first[i], x[i]) for i in range(len(x))]
    assert sum(changed) > len(x) // 2  # most of 25 offsets x 2 flips move the image


def test_random_crop_flip_only_translates_and_mirrors() -> None:
    pad = 1
    x = asymmetric_images(256)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=pad)
    candidates = crops_and_mirrors(x[0], pad)
    seen = []
    for image in out:
        matches = [(dy, dx, flip) for dy, dx, flip, crop in candidates if torch.equal(image, crop)]
        assert len(matches) == 1, "each output is exactly one crop of the image or of its mirror"
        seen.append(matches[0])
    # the centred offset: the image itself, or its exact mirror image
    assert (pad, pad, True) in seen and (pad, pad, False) in seen
    centred_flipped = out[seen.index((pad, pad, True))]
    assert torch.equal(centred_flipped, x[0].flip(-1))
    assert len(set(seen)) == len(candidates)  # 256 draws reach all 18 outcomes


def test_no_padding_only_mirrors() -> None:
    x = asymmetric_images(32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    flipped = [torch.equal(image, x[0].flip(-1)) for image in out]
    kept = [torch.equal(image, x[0]) for image in out]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < len(x)


def test_random_erasing_zeroes_one_rectangle_in_about_half_the_images() -> None:
    x = torch.ones(400, 2, 12, 10)
    out = random_erasing(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, random_erasing(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, random_erasing(x, torch.Generator().manual_seed(1)))
    assert torch.equal(x, torch.ones_like(x))  # the input is left as it was
    areas = []
    for image in out:
        zero = image == 0
        assert torch.equal(zero[0], zero[1]), "the same rectangle in every channel"
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        if len(rows):
            box = zero[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all() and int(zero[0].sum()) == box.numel(), "one filled rectangle"
        areas.append(int(zero[0].sum()))
    erased = [a for a in areas if a]
    assert abs(len(erased) / len(x) - ERASE_P) < 0.1
    # areas of 2 % to 33 % of the 120 pixels, give or take the rounding of each side
    assert min(erased) >= 1 and max(erased) <= 0.5 * 120
    assert sum(erased) / len(erased) == pytest.approx(120 * sum(ERASE_SCALE) / 2, rel=0.3)


def test_a_transform_erases_only_when_augmenting(digits: prepare.Dataset) -> None:
    images = torch.from_numpy(digits.train_images[:64])
    plain = BatchTransform(SIZE, None, None)
    erasing = BatchTransform(SIZE, None, None, erasing=True)
    assert torch.equal(erasing(images), plain(images))  # evaluation: no augmentation at all
    cropped = plain(images, augment=True, generator=torch.Generator().manual_seed(3))
    erased = erasing(images, augment=True, generator=torch.Generator().manual_seed(3))
    # the same crops and flips, then rectangles of zeros in some images
    differs = erased != cropped
    assert (erased[differs] == 0).all()
    assert 0 < int(differs.flatten(1).any(1).sum()) < len(images)


def test_augmenting_transform_needs_a_generator(digits: prepare.Dataset) -> None:
    images = torch.from_numpy(digits.train_images[:4])
    transform = BatchTransform(SIZE, None, None)
    with pytest.raises(ValueError, match="generator"):
        transform(images, augment=True)
    out = transform(images, augment=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, SIZE, SIZE)


# ------------------------------------------------------------------------------- fold data


def test_fold_data_is_the_folds_train_and_val_parts(
    digits: prepare.Dataset, digits_split: Path
) -> None:
    split = load_split(digits_split)
    fold = fold_data(digits, split, 1, torch.device("cpu"))
    assert len(fold.train_labels) + len(fold.val_labels) == len(digits.train_labels) == 1347
    assert fold.train_images.dtype == torch.uint8 and fold.train_labels.dtype == torch.int64
    assert (fold.in_channels, fold.num_classes) == (1, 10)
    assert np.array_equal(fold.val_images.numpy(), digits.train_images[split.val(1)])
    assert np.array_equal(fold.train_labels.numpy(), digits.train_labels[split.train_indices(1)])
    with pytest.raises(ValueError, match="fold must be in 0..2"):
        fold_data(digits, split, 3, torch.device("cpu"))


# ------------------------------------------------------------------------------ train()


def test_training_learns_the_digits(fold0: FoldData) -> None:
    recipe = tiny_recipe()
    result = train(tiny_lenet(), fold0, recipe, input_size=SIZE, seed=0)
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(tuple(row) == HISTORY_COLUMNS for row in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert history[-1]["val_acc"] > 0.5  # chance is 0.1
    steps = len(fold0.train_labels) // recipe.batch_size  # the incomplete last batch is dropped
    for row in history:  # the lr logged is the one of the epoch's last step
        assert row["lr"] == lr_at(recipe, row["epoch"] * steps - 1, steps)
        assert row["seconds"] > 0 and row["examples_per_s"] > 0
        assert row["device"].startswith("cpu:")
    # the returned model is the last epoch's, and its validation accuracy is the one logged
    transform = make_transform(fold0, recipe, SIZE)
    logits = predict(result.model, fold0.val_images, transform, batch_size=256)
    accuracy = (logits.argmax(1) == fold0.val_labels).float().mean().item()
    assert accuracy == pytest.approx(history[-1]["val_acc"])


def test_the_best_epoch_is_kept_next_to_the_last(fold0: FoldData) -> None:
    """Ruin the network after epoch 2: epoch 3 is then worse, and the best must be epoch 2's."""
    model = tiny_lenet()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def after_epoch(state: dict[str, Any]) -> None:
        snapshots[state["epoch"]] = state["model"]
        if state["epoch"] == 2:
            # the first ReLU now outputs 0 for every image (and passes no gradient back), so the
            # network says the same thing for every image: about 10% right
            with torch.no_grad():
                model.features[0].bias.fill_(-1e4)

    recipe = tiny_recipe()
    result = train(model, fold0, recipe, input_size=SIZE, seed=0, on_epoch=after_epoch)
    val_acc = [row["val_acc"] for row in result.history]
    assert result.best_epoch == 2 == int(np.argmax(val_acc)) + 1
    assert result.best_val_acc == max(val_acc) > val_acc[-1] + 0.3
    best = result.checkpoint["best_model"]
    assert weights_equal(best, snapshots[2])
    assert not weights_equal(best, result.checkpoint["model"])
    assert weights_equal(result.checkpoint["model"], snapshots[3])
    # the kept weights really score the best validation accuracy
    model.load_state_dict(best)
    logits = predict(model, fold0.val_images, make_transform(fold0, recipe, SIZE), batch_size=256)
    accuracy = (logits.argmax(1) == fold0.val_labels).float().mean().item()
    assert accuracy == pytest.approx(max(val_acc))


def test_best_epoch_is_the_first_with_the_highest_val_acc(fold0: FoldData) -> None:
    result = train(tiny_lenet(), fold0, tiny_recipe(epochs=4), input_size=SIZE, seed=0)
    val_acc = [row["val_acc"] for row in result.history]
    assert result.best_val_acc == max(val_acc)
    assert result.best_epoch == val_acc.index(max(val_acc)) + 1
    if result.best_epoch == len(val_acc):
        assert weights_equal(result.checkpoint["best_model"], result.checkpoint["model"])


def test_same_seed_same_weights_other_seed_other_weights(fold0: FoldData) -> None:
    recipe = tiny_recipe(epochs=1, augmentation="crop_flip")
    runs = [train(tiny_lenet(), fold0, recipe, input_size=SIZE, seed=s) for s in (7, 7, 8)]
    first, again, other = (run.model.state_dict() for run in runs)
    assert weights_equal(first, again)
    assert without_timings(runs[0].history) == without_timings(runs[1].history)
    assert not weights_equal(first, other)  # same initial weights, another shuffle


def test_a_diverging_run_names_the_epoch_and_step(fold0: FoldData, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(NonFiniteLossError) as err:
        train(tiny_lenet(), fold0, tiny_recipe(lr=1e6), input_size=SIZE, seed=0,
              on_epoch=lambda record: save_checkpoint(record, checkpoint))
    error = err.value
    assert error.epoch == 1 and error.step >= 1
    message = str(error)
    assert f"non-finite loss at epoch 1, step {error.step} " in message
    assert "lower learning rate" in message
    assert not checkpoint.exists()  # no epoch completed, nothing to resume


class Interrupted(Exception):
    pass


def test_resuming_from_the_checkpoint_replays_the_uninterrupted_run(
    fold0: FoldData, tmp_path: Path
) -> None:
    """Everything with state is on: momentum, weight decay, cosine lr, augmentation (crops, flips
    and erasing), dropout."""
    recipe = tiny_recipe(epochs=4, augmentation="crop_flip_erase", label_smoothing=0.1)
    whole = train(tiny_lenet(dropout=0.3), fold0, recipe, input_size=SIZE, seed=3)

    path = tmp_path / "checkpoint.pt"

    def save_then_stop_after_epoch_2(state: dict[str, Any]) -> None:
        save_checkpoint(state, path)
        if state["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(tiny_lenet(dropout=0.3), fold0, recipe, input_size=SIZE, seed=3,
              on_epoch=save_then_stop_after_epoch_2)
    saved = load_checkpoint(path)  # weights_only=True
    assert saved["epoch"] == 2 and saved["completed"] is False and len(saved["history"]) == 2

    # other initial weights on purpose: everything must come from the checkpoint
    resumed = train(tiny_lenet(seed=99, dropout=0.3), fold0, recipe, input_size=SIZE, seed=3,
                    resume_from=saved)
    assert weights_equal(resumed.model.state_dict(), whole.model.state_dict())
    assert without_timings(resumed.history) == without_timings(whole.history)
    assert resumed.history[:2] == saved["history"]  # epochs 1-2 were not trained again
    assert (resumed.best_epoch, resumed.best_val_acc) == (whole.best_epoch, whole.best_val_acc)
    assert weights_equal(resumed.checkpoint["best_model"], whole.checkpoint["best_model"])
    momenta = [[s["momentum_buffer"] for s in run.checkpoint["optimizer"]["state"].values()]
               for run in (whole, resumed)]
    assert all(torch.equal(a, b) for a, b in zip(*momenta, strict=True))

    # and, less the timings (as in model.pt), the final checkpoints are the same bytes
    for name, result in (("whole.pt", whole), ("resumed.pt", resumed)):
        save_checkpoint({**result.checkpoint, "history": without_timings(result.history)},
                        tmp_path / name)
    assert (tmp_path / "whole.pt").read_bytes() == (tmp_path / "resumed.pt").read_bytes()


# ---------------------------------------------------------------------------- convbench train


def test_cli_writes_history_and_a_self_describing_model(
    digits_run: Any, digits: prepare.Dataset, digits_split: Path
) -> None:
    rows = read_history(digits_run.history)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert all(float(row["seconds"]) > 0 for row in rows)
    assert all(row["device"] == rows[0]["device"] for row in rows)
    assert float(rows[-1]["val_acc"]) > 0.5
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert not (digits_run.out_dir / "checkpoint.pt").exists()  # replaced by model.pt

    state = torch.load(digits_run.model, map_location="cpu", weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["completed"] is True and state["epoch"] == 3
    assert state["weights_sha256"]["model"] == weights_sha256(state["model"])
    assert state["meta"]["threads"] == 1
    # model.pt is bit-identical on a rerun, so it holds no wall-clock timings
    assert [tuple(row) for row in state["history"]] == [
        tuple(c for c in HISTORY_COLUMNS if c not in TIMING_COLUMNS)
    ] * 3
    assert [row["val_acc"] for row in state["history"]] == pytest.approx(
        [float(row["val_acc"]) for row in rows], rel=1e-5
    )
    meta = state["meta"]
    assert (meta["arch"], meta["input_size"]) == ("lenet", SIZE)
    assert meta["knobs"] == {"activation": "relu"}
    assert meta["recipe"] == tiny_recipe().to_dict()
    assert (meta["seed"], meta["fold"], meta["experiment"]) == (0, 0, "lenet")
    assert meta["data_sha256"] == digits.sha256
    assert meta["split_id"] == load_split(digits_split).split_id
    # the commit, a dirty flag and the hashes of the files `convbench run` executes for this network
    assert meta["code_version"] == training_code_version("lenet")
    assert meta["packages"]["torch"] == version("torch")
    assert meta["cpu"] == describe_cpu()  # where bit-identity ends: the CPU type
    assert meta["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert meta["classes"] == digits.classes
    model = build("lenet", input_size=SIZE, activation="relu")
    model.load_state_dict(state["best_model"])
    model.load_state_dict(state["model"])
    assert set(state["optimizer"]) == {"state", "param_groups"}


def test_rerun_writes_bit_identical_model_and_metrics(
    digits_run: Any, train_and_evaluate: Callable[..., Any], tmp_path: Path
) -> None:
    rerun = train_and_evaluate(tmp_path / "rerun")
    assert rerun.model.read_bytes() == digits_run.model.read_bytes()
    assert rerun.metrics.read_bytes() == digits_run.metrics.read_bytes()
    assert timeless(read_history(rerun.history)) == timeless(read_history(digits_run.history))


def test_another_seed_trains_other_weights(
    digits_run: Any, convbench: Callable[[list[str]], int], train_argv: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    assert convbench(train_argv(tmp_path, "--seed", "1")) == 0
    ours = torch.load(tmp_path / "model.pt", weights_only=True)
    theirs = torch.load(digits_run.model, weights_only=True)
    assert ours["meta"]["seed"] == 1
    assert not weights_equal(ours["model"], theirs["model"])


def test_cli_reports_divergence_and_writes_no_results(
    convbench: Callable[[list[str]], int], train_argv: Callable[..., list[str]],
    digits_npz: Path, digits_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert convbench(train_argv(tmp_path, "--recipe", "lr=1e6")) == 1
    err = capsys.readouterr().err
    assert err.startswith("convbench train: error: non-finite loss at epoch 1, step ")
    assert "try a lower learning rate" in err
    assert "Traceback" not in err
    assert not (tmp_path / "model.pt").exists()
    assert not (tmp_path / "checkpoint.pt").exists()
    # and there is nothing to evaluate
    metrics = tmp_path / "metrics.json"
    code = convbench(["evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--data",
                      str(digits_npz), "--split", str(digits_split), "--out", str(metrics)])
    assert code == 1
    assert "model.pt" in capsys.readouterr().err
    assert not metrics.exists() and not (tmp_path / "perf.json").exists()


@pytest.mark.parametrize(
    ("change", "differs"),
    [(("--recipe", "lr=0.2"), "recipe"), (("--seed", "5"), "seed, train_seed"),
     (("--set", "activation=sigmoid"), "knobs"), (("--fold", "1"), "fold")],
)
def test_resume_refuses_another_jobs_checkpoint(
    digits_run: Any, convbench: Callable[[list[str]], int], train_argv: Callable[..., list[str]],
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], differs: str,
) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(digits_run.model.read_bytes())  # the last checkpoint of that job
    assert convbench(train_argv(tmp_path, *change, "--resume")) == 1
    err = capsys.readouterr().err
    assert f"belongs to another run (differs in {differs});" in err
    assert "without --resume" in err
    assert checkpoint.read_bytes() == digits_run.model.read_bytes()  # left as it was
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize(
    "bug",
    [RuntimeError("CUDA error: an illegal memory access was encountered"), KeyError("train_loss"),
     ValueError("Expected input batch_size (64) to match target batch_size (32)")],
    ids=["CUDA error", "KeyError", "ValueError from torch"],
)
def test_a_bug_inside_train_keeps_its_traceback(
    convbench: Callable[[list[str]], int], train_argv: Callable[..., list[str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, raiser: Callable[[Exception], Callable[..., Any]], bug: Exception,
) -> None:
    """Only what a user can fix becomes one line and exit 1; a bug or a CUDA failure propagates
    with its traceback instead of hiding behind 'convbench train: error: ...'."""
    monkeypatch.setattr("convbench.train_job.train", raiser(bug))
    with pytest.raises(type(bug)) as raised:
        convbench(train_argv(tmp_path))
    assert raised.value is bug
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [(("--set", "no_such_knob=1"), "network 'lenet' does not accept knob(s) no_such_knob; it accepts: "),
     (("--set", "activation=tanhh"), "activation must be one of"),
     (("--recipe", "lr=-1"), "recipe.lr: must be > 0, got -1.0"),
     (("--input-size", "2"), "network 'lenet' needs input_size >= "),
     (("--device", "gpu"), "unknown device 'gpu': give auto, cpu, cuda or cuda:N"),
     (("--device", "mps"), "device 'mps': convbench runs on cpu or cuda[:N] only"),
     (("--device", "cuda:99"), "device 'cuda:99' was asked for, but ")],
    ids=["unknown knob", "bad knob value", "bad recipe value", "too small", "unknown device",
         "unsupported device", "missing GPU"],
)
def test_a_users_mistake_is_one_line_before_any_training(
    convbench: Callable[[list[str]], int], train_argv: Callable[..., list[str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...],
    message: str,
) -> None:
    started: list[int] = []
    monkeypatch.setattr("convbench.train_job.train", lambda *a, **k: started.append(1))
    assert convbench(train_argv(tmp_path, *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench train: error: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert started == [] and not (tmp_path / "model.pt").exists()


def test_threads_must_be_a_positive_count(
    convbench: Callable[[list[str]], int], train_argv: Callable[..., list[str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert convbench(train_argv(tmp_path, "--threads", "0")) == 2  # a usage error, as argparse's
    assert "argument --threads: must be a positive integer, got '0'" in capsys.readouterr().err


def test_cli_refuses_a_split_of_other_data(
    convbench: Callable[[list[str]], int], digits_npz: Path, other_digits: tuple[Path, Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _, other_split = other_digits
    args = ["train", "--data", str(digits_npz), "--split", str(other_split), "--fold", "0",
            "--arch", "lenet", "--input-size", "12", "--out-dir", str(tmp_path)]
    assert convbench(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("convbench train: error: split ")
    assert "make a new split" in err
    assert convbench([*args[:2], str(tmp_path / "missing.npz"), *args[3:]]) == 1
    assert "missing.npz: cannot read prepared dataset" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def flip_weight_bytes(checkpoint: Path) -> None:
    """Flip bytes in the middle of the largest tensor's data inside a torch.save zip file (the
    data entries are stored uncompressed, so the zip stays readable: only the numbers change)."""
    with zipfile.ZipFile(checkpoint) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    content = bytearray(checkpoint.read_bytes())
    name_length, extra_length = struct.unpack("<HH", content[entry.header_offset + 26 : entry.header_offset + 30])
    start = entry.header_offset + 30 + name_length + extra_length
    for offset in range(start + entry.file_size // 2, start + entry.file_size // 2 + 8):
        content[offset] ^= 0x5A
    checkpoint.write_bytes(bytes(content))


def test_corrupted_weights_are_refused_naming_the_file(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    corrupted = tmp_path / "model.pt"
    corrupted.write_bytes(digits_run.model.read_bytes())
    flip_weight_bytes(corrupted)
    torch.load(corrupted, weights_only=True)  # still loads: only a checksum can tell
    with pytest.raises(CheckpointError, match="weights do not match the checksum"):
        load_checkpoint(corrupted)
    metrics = tmp_path / "metrics.json"
    code = convbench(["evaluate", "--checkpoint", str(corrupted), "--data", str(digits_npz),
                      "--split", str(digits_split), "--out", str(metrics)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"{corrupted}: the " in err and "is corrupted" in err
    assert not metrics.exists()


def test_resume_refuses_another_thread_count(
    digits_run: Any, convbench: Callable[[list[str]], int], train_argv: Callable[..., list[str]],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(digits_run.model.read_bytes())
    assert convbench(train_argv(tmp_path, "--threads", "2", "--resume")) == 1
    err = capsys.readouterr().err
    assert "was trained with 1 thread(s), this run has 2 (--threads)" in err
    assert not (tmp_path / "model.pt").exists()


def test_train_refuses_a_split_of_another_k_than_the_study(
    convbench: Callable[[list[str]], int], digits_npz: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = tmp_path / "params.yaml"
    study.write_text("study: t\ndataset: digits\nfolds: 3\nseed: 0\n"
                     "experiments:\n  lenet: {arch: lenet, input_size: 12}\n")
    five = tmp_path / "digits-k3-s0.json"  # named as the study expects, made with 5 folds
    assert convbench(["split", "--data", str(digits_npz), "--folds", "5", "--seed", "0",
                      "--out", str(five)]) == 0
    capsys.readouterr()
    args = ["train", "--study", str(study), "--experiment", "lenet", "--fold", "0",
            "--data", str(digits_npz), "--split", str(five), "--out-dir", str(tmp_path / "run")]
    assert convbench(args) == 1
    err = capsys.readouterr().err
    assert f"{five}: a 5-fold split with seed 0, but the study asks for 3 folds with seed 0 (repeat 0)" in err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_d2l_preset_on_the_command_line_takes_d2ls_resolution() -> None:
    args = build_parser().parse_args(
        ["--data", "d.npz", "--split", "s.json", "--fold", "0", "--out-dir", "o",
         "--arch", "lenet", "--recipe", "preset=d2l", "--recipe", "epochs=2"]
    )
    [(job, _)] = jobs_from_args(args)
    assert (job.input_size, job.recipe.lr, job.recipe.batch_size) == (28, 0.9, 256)
    assert job.recipe.epochs == 2 and job.recipe.momentum == 0.0


# -------------------------------------------------------------------- fresh processes, SIGKILL

# Long enough epochs (LeNet at 28 px, ~0.2 s each on one thread) to kill a run between two.
KILL_EPOCHS = 8
KILL_ARGS = ("--input-size", "28", "--recipe", f"epochs={KILL_EPOCHS}")


@pytest.mark.slow
def test_rerun_in_a_fresh_process_is_bit_identical(
    digits_run: Any, train_argv: Callable[..., list[str]], digits_npz: Path, digits_split: Path,
    tmp_path: Path,
) -> None:
    subprocess.run(
        [*CONVBENCH, *train_argv(tmp_path)], check=True, capture_output=True, timeout=300
    )
    subprocess.run(
        [*CONVBENCH, "evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--data",
         str(digits_npz), "--split", str(digits_split), "--out", str(tmp_path / "metrics.json")],
        check=True, capture_output=True, timeout=300,
    )
    assert (tmp_path / "model.pt").read_bytes() == digits_run.model.read_bytes()
    assert (tmp_path / "metrics.json").read_bytes() == digits_run.metrics.read_bytes()


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_model(
    train_argv: Callable[..., list[str]], tmp_path: Path
) -> None:
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    # the uninterrupted run goes alongside (2 cores)
    whole = subprocess.Popen([*CONVBENCH, *train_argv(whole_dir, *KILL_ARGS)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim = subprocess.Popen([*CONVBENCH, *train_argv(killed_dir, *KILL_ARGS)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = killed_dir / "checkpoint.pt"
    seen, deadline = 0, time.monotonic() + 240
    try:
        while seen < 2 and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            try:  # written atomically: always a whole checkpoint
                seen = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]
            except FileNotFoundError:
                pass
        victim.send_signal(signal.SIGKILL)
        _, victim_err = victim.communicate(timeout=60)
    finally:
        victim.kill()
    if victim.returncode == 0:
        pytest.fail(f"the run finished before it could be killed (last epoch seen: {seen}); "
                    "make its epochs longer")
    assert victim.returncode == -signal.SIGKILL, victim_err.decode()
    assert seen >= 2, f"no checkpoint of epoch 2 within the deadline (saw epoch {seen})"

    interrupted = torch.load(checkpoint, map_location="cpu", weights_only=True)
    done = interrupted["epoch"]
    assert 2 <= done < KILL_EPOCHS and interrupted["completed"] is False
    assert not (killed_dir / "model.pt").exists()

    resumed = subprocess.run([*CONVBENCH, *train_argv(killed_dir, *KILL_ARGS, "--resume")],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode() if whole.stderr else ""

    assert (killed_dir / "model.pt").read_bytes() == (whole_dir / "model.pt").read_bytes()
    assert not checkpoint.exists()
    rows = read_history(killed_dir / "history.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(1, KILL_EPOCHS + 1))
    # the epochs done before the kill were kept, not trained again: their timings are the
    # killed process's own
    for row, before in zip(rows[:done], interrupted["history"], strict=True):
        assert row["seconds"] == f"{before['seconds']:.6g}"
    assert timeless(rows) == timeless(read_history(whole_dir / "history.csv"))


def test_a_smoke_run_stops_after_its_first_epoch_and_resumes_to_the_uninterrupted_model(
    digits_npz: Path, digits_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every smoke run goes through the checkpoint's save, load and restore (what `--resume`
    does after a kill) and still writes the model an uninterrupted run writes."""
    from convbench import train_job
    from convbench.study import SMOKE_EPOCHS, smoke_recipe

    recipe = smoke_recipe(tiny_recipe(), 3)
    assert recipe.epochs == SMOKE_EPOCHS == 2
    job = train_job.TrainJob("lenet", "lenet", {"activation": "relu"}, SIZE, recipe, seed=0, fold=0)
    loaded: list[Path] = []

    def load_checkpoint_spy(path: Path) -> dict[str, Any]:
        loaded.append(path)
        return load_checkpoint(path)

    monkeypatch.setattr(train_job, "load_checkpoint", load_checkpoint_spy)
    resumed = train_job.run_job(job, digits_npz, digits_split, tmp_path / "resumed")
    assert loaded == [tmp_path / "resumed" / "checkpoint.pt"]
    assert (f"lenet repeat 0 fold 0 seed 0: smoke run stopped after epoch 1; resuming from "
            f"{tmp_path / 'resumed' / 'checkpoint.pt'}") in capsys.readouterr().err
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()

    monkeypatch.setattr(train_job, "SMOKE_STOP_AFTER", 0)  # the same run, never stopped
    train_job.run_job(job, digits_npz, digits_split, tmp_path / "whole")
    assert len(loaded) == 1
    assert (tmp_path / "resumed" / "model.pt").read_bytes() == (tmp_path / "whole" / "model.pt").read_bytes()


@dataclass(frozen=True)
class LayerCall:
    """What one forward call of a convolution or linear layer saw."""

    layer: str
    training: bool
    output_dtype: torch.dtype
    # Strictly channels_last (not also plain contiguous, as a one-channel tensor is): None for a
    # linear layer or a convolution of one input channel, where the two layouts coincide.
    channels_last_input: bool | None
    channels_last_weight: bool | None


def strictly_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def watch_layers(model: torch.nn.Module) -> list[LayerCall]:
    """Forward hooks on every convolution and linear layer; the list fills as the model runs."""
    calls: list[LayerCall] = []

    def hook(name: str) -> Callable[..., None]:
        def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            layout = isinstance(module, torch.nn.Conv2d) and module.in_channels > 1
            calls.append(LayerCall(
                name, module.training, output.dtype,
                strictly_channels_last(inputs[0]) if layout else None,
                strictly_channels_last(module.weight) if layout else None,
            ))

        return record

    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.register_forward_hook(hook(name))
    return calls


LEARNED = 0.5  # validation accuracy after two epochs: clearly above chance (0.1); ~0.77 measured


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)],
)
def test_mixed_precision_takes_effect_on_the_cpu(
    fold0: FoldData, precision: str, dtype: torch.dtype
) -> None:
    """Every convolution and linear layer computes in the recipe's precision, in training and in
    validation, while the weights stay float32. fp16 runs as asked on the CPU too (torch's CPU
    autocast has float16; the trainer neither falls back nor refuses), with its loss scaler."""
    model = tiny_lenet()
    calls = watch_layers(model)
    result = train(model, fold0, tiny_recipe(epochs=2, precision=precision), input_size=SIZE, seed=0)
    layers = {name for name, module in model.named_modules()
              if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))}
    for training in (True, False):
        seen = [call for call in calls if call.training is training]
        assert {call.layer for call in seen} == layers
        assert {call.output_dtype for call in seen} == {dtype}
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    scaler = result.checkpoint["scaler"]
    if precision == "fp16":
        # steps since the last overflow: the scaler scaled and stepped
        assert scaler["scale"] > 0 and scaler["_growth_tracker"] > 0
    else:
        assert scaler == {}
    assert result.best_val_acc > LEARNED


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_takes_effect_on_the_cpu(fold0: FoldData, channels_last: bool) -> None:
    """The batches and the weights of every convolution are in the channels_last layout (and only
    when the recipe asks), in training and in validation."""
    model = tiny_lenet()
    calls = watch_layers(model)
    result = train(model, fold0, tiny_recipe(epochs=2, channels_last=channels_last),
                   input_size=SIZE, seed=0)
    laid_out = [call for call in calls if call.channels_last_input is not None]
    assert {call.training for call in laid_out} == {True, False}
    assert {call.channels_last_input for call in laid_out} == {channels_last}
    assert {call.channels_last_weight for call in laid_out} == {channels_last}
    assert result.best_val_acc > LEARNED


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.01},
        {"nesterov": True, "schedule": "onecycle", "grad_clip": 1.0},
        {"schedule": "cosine", "warmup_epochs": 1, "label_smoothing": 0.1},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()),
)
def test_every_optimizer_and_schedule_learns(fold0: FoldData, settings: dict[str, Any]) -> None:
    result = train(tiny_lenet(), fold0, tiny_recipe(epochs=2, **settings),
                   input_size=SIZE, seed=0)
    assert len(result.history) == 2
    assert all(np.isfinite(row["train_loss"]) for row in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val_acc > LEARNED


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (on the CPU, "
                    "inductor's C++ build takes a minute; it passed there when last checked)")
def test_compiled_training_matches_eager_training_loss_closely(digits: prepare.Dataset,
                                                         digits_split: Path) -> None:
    data_ = fold_data(digits, load_split(digits_split), 0, torch.device("cuda"))
    eager = train(tiny_lenet(), data_, tiny_recipe(epochs=1), input_size=SIZE, seed=0)
    compiled = train(tiny_lenet(), data_, tiny_recipe(epochs=1, compile=True),
                     input_size=SIZE, seed=0)
    assert abs(eager.history[0]["train_loss"] - compiled.history[0]["train_loss"]) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_training_keeps_the_split_on_the_device(digits: prepare.Dataset, digits_split: Path,
                                                    precision: str) -> None:
    device = torch.device("cuda")
    data = fold_data(digits, load_split(digits_split), 0, device)
    assert data.train_images.is_cuda and data.train_images.dtype == torch.uint8
    recipe = tiny_recipe(epochs=2, precision=precision, channels_last=True, deterministic=True)
    result = train(tiny_lenet(), data, recipe, input_size=SIZE, seed=0)
    assert all(p.is_cuda for p in result.model.parameters())
    assert data.train_images.is_cuda and data.train_images.dtype == torch.uint8  # left as it was
    assert result.best_val_acc > LEARNED


@pytest.mark.parametrize("channels_last", [False, True])
def test_transforming_the_fold_once_trains_exactly_as_transforming_each_batch(
    fold0: FoldData, monkeypatch: pytest.MonkeyPatch, channels_last: bool
) -> None:
    """Without augmentation the fold is resized and normalized once (batches.Inputs); the run is
    bit for bit the one that transforms every batch, validation included."""
    from convbench import batches

    recipe = tiny_recipe(normalize=True, channels_last=channels_last)
    once = train(tiny_lenet(), fold0, recipe, input_size=SIZE, seed=0)
    monkeypatch.setattr(batches, "PRECOMPUTE_BYTES", 0)  # no fold fits: every batch transformed
    assert batches.Inputs(fold0.train_images, make_transform(fold0, recipe, SIZE)).ready is None
    each = train(tiny_lenet(), fold0, recipe, input_size=SIZE, seed=0)
    assert without_timings(once.history) == without_timings(each.history)
    assert weights_equal(once.model.state_dict(), each.model.state_dict())
    assert weights_equal(once.checkpoint["best_model"], each.checkpoint["best_model"])


def test_the_fold_is_transformed_once_only_without_augmentation(fold0: FoldData) -> None:
    from convbench import batches

    transform = make_transform(fold0, tiny_recipe(), SIZE)
    ready = batches.Inputs(fold0.train_images, transform)
    assert ready.ready is not None and torch.equal(ready.take(slice(0, 5)), transform(fold0.train_images[:5]))
    assert batches.Inputs(fold0.train_images, transform, augment=True).ready is None
    assert batches.Inputs(fold0.train_images, transform, budget_bytes=1000).ready is None
