"""The trainer: d2l's ``train_ch6`` loop, made fast, resumable and exactly reproducible.

``train`` reads top to bottom: restore, then per epoch seed and shuffle, per step set the lr,
transform the batch on the device, forward, backward, step, check the loss is finite; then validate
and record the epoch. The best epoch by validation accuracy is kept next to the last (the notes'
advice). Every epoch's record goes to one hook; ``convbench train``'s writes an atomic checkpoint
with it, so ``--resume`` continues from the last completed epoch.

Reproducibility: every epoch reseeds from (seed, epoch), and the lr is a pure function of the step,
so a resumed run replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import io
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from convbench import __version__
from convbench.provenance import code_version
from convbench._io import atomic_write, check_writable, positive_int, run_cli
from convbench.batches import BatchTransform, channel_stats
from convbench.device import DeviceError, claim_device, pick_device, set_determinism, synchronize
from convbench.models import build, check_knobs, resolve_input_size
from convbench.recipe import Recipe, d2l_input_size, lr_at, resolve_recipe

# 2: checkpoints carry the sha256 of their weights (``weights_sha256``), verified on every load.
CHECKPOINT_FORMAT = 2
WEIGHT_KEYS = ("model", "best_model")
# What loading reads from a checkpoint (checked on every load), and what evaluation reads from its
# "meta" (checked by evaluation: `train` used as a library may leave meta empty).
CHECKPOINT_KEYS = ("epoch", "completed", "model", "optimizer", "best_model", "best_epoch", "history", "meta")
META_KEYS = ("experiment", "arch", "knobs", "input_size", "recipe", "seed", "repeat", "fold",
             "train_seed", "data_sha256", "split_id", "in_channels", "num_classes", "classes",
             "dataset", "params", "macs", "code_version", "packages")
HISTORY_COLUMNS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "examples_per_s",
    "device",
)
# Wall-clock measurements differ from run to run; they live in history.csv (and perf.json), never
# in model.pt or metrics.json, which must be bit-identical when a job is rerun.
TIMING_COLUMNS = ("seconds", "examples_per_s", "device")


class TrainingError(ValueError):
    """A training job that cannot run as asked: its options, split or checkpoint do not fit it.

    ``convbench train`` turns it into one line and exit code 1; anything else is a bug (or a CUDA
    failure) and keeps its traceback.
    """


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite: the run is diverging (the recipe needs changing)."""

    def __init__(self, epoch: int, step: int, lr: float) -> None:
        super().__init__(
            f"non-finite loss at epoch {epoch}, step {step} (lr {lr:g}): training diverged; "
            "try a lower learning rate (recipe.lr), gradient clipping (recipe.grad_clip) or batch_norm"
        )
        self.epoch, self.step = epoch, step


@dataclass
class FoldData:
    """One fold's training and validation images on the training device, still uint8."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])


def fold_data(dataset: Any, split: Any, fold: int, device: torch.device) -> FoldData:
    """Cut fold ``fold`` of ``split`` out of a prepared dataset and move it to ``device`` once."""
    if not 0 <= fold < split.folds:
        raise TrainingError(f"fold must be in 0..{split.folds - 1}, got {fold}")
    train_idx, val_idx = split.train_indices(fold), split.val(fold)

    def on_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    return FoldData(
        train_images=on_device(dataset.train_images[train_idx]),
        train_labels=on_device(dataset.train_labels[train_idx].astype(np.int64)),
        val_images=on_device(dataset.train_images[val_idx]),
        val_labels=on_device(dataset.train_labels[val_idx].astype(np.int64)),
        num_classes=dataset.num_classes,
    )


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_acc: float
    checkpoint: dict[str, Any] = field(repr=False)


def make_transform(data: FoldData, recipe: Recipe, input_size: int) -> BatchTransform:
    """The batch transform; normalization statistics come from the training fold only."""
    mean, std = channel_stats(data.train_images) if recipe.normalize else (None, None)
    return BatchTransform(input_size, mean, std, channels_last=recipe.channels_last)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
            nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    transform: BatchTransform,
    *,
    batch_size: int,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits (float32) for uint8 ``images``, in eval mode, in batches."""
    model.eval()
    device = images.device
    outputs = []
    for start in range(0, len(images), batch_size):
        with autocast(device, precision):
            outputs.append(model(transform(images[start : start + batch_size])).float())
    return torch.cat(outputs) if outputs else torch.empty(0)


def evaluate_loss_acc(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, transform: BatchTransform,
    recipe: Recipe,
) -> tuple[float, float]:
    logits = predict(model, images, transform, batch_size=recipe.eval_batch_size, precision=recipe.precision)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def _interned(value: Any) -> Any:
    """``value`` with every string interned. pickle memoizes by object identity, so without this
    the bytes depend on where equal strings came from: a resumed run's history and optimizer keys
    come from the unpickled checkpoint, and its model.pt would differ from an uninterrupted run's."""
    if type(value) is str:
        return sys.intern(value)
    if isinstance(value, dict):
        return type(value)((_interned(k), _interned(v)) for k, v in value.items())
    if type(value) is list:
        return [_interned(v) for v in value]
    return value


def weights_sha256(state: dict[str, torch.Tensor] | None) -> str | None:
    """sha256 over a state dict's names, dtypes, shapes and bytes (None for no state)."""
    if state is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class CheckpointError(ValueError):
    """A checkpoint file is not one, is of another format, or its weights are corrupted."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically (a kill mid-write leaves the previous checkpoint intact), with the sha256
    of the weights, so that a corrupted file is refused on load instead of scored."""
    state = dict(state)
    state["weights_sha256"] = {key: weights_sha256(state.get(key)) for key in WEIGHT_KEYS}
    state = _interned(state)
    atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and verify its weights."""
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: not a convbench checkpoint of format {CHECKPOINT_FORMAT} (found format "
            f"{found!r}); train it again"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: a checkpoint without {', '.join(missing)}; expected one "
                              "written by convbench train; train it again")
    recorded = state.get("weights_sha256") or {}
    for key in WEIGHT_KEYS:
        got = weights_sha256(state.get(key))
        if got != recorded.get(key):
            raise CheckpointError(
                f"{path}: the {key!r} weights do not match the checksum written with them "
                f"(sha256 {str(got)[:12]}, recorded {str(recorded.get(key))[:12]}): the file is "
                "corrupted; train it again"
            )
    return state


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict on the CPU (what checkpoints store)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def optimizer_state_cpu(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    state = optimizer.state_dict()
    return {
        "state": {k: {n: (t.detach().cpu().clone() if torch.is_tensor(t) else t) for n, t in s.items()}
                  for k, s in state["state"].items()},
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


EpochHook = Callable[[dict[str, Any]], None]


@dataclass
class Progress:
    """What one epoch hands the next: the history so far and the best epoch by validation accuracy.

    A checkpoint holds all of it, so a resumed run continues exactly where the killed one stopped.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    next_epoch: int = 1

    def add(self, row: dict[str, Any], model: nn.Module) -> None:
        """Add an epoch's row; keep the model's weights if its validation accuracy is the best yet
        (the first epoch wins a tie)."""
        self.history.append(row)
        if row["val_acc"] > self.best_val_acc:
            self.best_epoch, self.best_val_acc = row["epoch"], row["val_acc"]
            self.best_state = cpu_state(model)


def restore(
    checkpoint: dict[str, Any] | None, model: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> Progress:
    """Load ``checkpoint`` (weights, optimizer, loss scale) into the training objects and return
    its progress; a fresh start without one."""
    if checkpoint is None:
        return Progress()
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    return Progress(
        history=list(checkpoint["history"]), best_epoch=checkpoint["best_epoch"],
        best_val_acc=checkpoint["best_val_acc"], best_state=checkpoint["best_model"],
        next_epoch=checkpoint["epoch"] + 1,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_step(
    forward: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, x: torch.Tensor,
    y: torch.Tensor, recipe: Recipe,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and one optimizer step on a batch; the loss and logits, detached.

    ``forward`` is the model or its compiled twin; the loss is taken in float32 whatever the
    autocast precision, and the scaler (a no-op unless fp16) guards fp16 gradients.
    """
    with autocast(x.device, recipe.precision):
        logits = forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if recipe.grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def check_finite(step_losses: torch.Tensor, epoch: int, lr: float) -> None:
    """Stop a diverging run, naming the first step (1-based) of ``step_losses`` that is not finite."""
    finite = torch.isfinite(step_losses)
    if not bool(finite.all()):
        raise NonFiniteLossError(epoch, int((~finite).nonzero()[0]) + 1, lr)


def epoch_record(
    epoch: int, recipe: Recipe, model: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler, progress: Progress, meta: dict[str, Any] | None,
) -> dict[str, Any]:
    """The epoch's record, as ``on_epoch`` receives it: everything a checkpoint holds."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "completed": epoch == recipe.epochs,
        "model": cpu_state(model),
        "optimizer": optimizer_state_cpu(optimizer),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "best_model": progress.best_state,
        "best_epoch": progress.best_epoch,
        "best_val_acc": progress.best_val_acc,
        "history": list(progress.history),
        "meta": dict(meta or {}),
    }


def train(
    model: nn.Module,
    data: FoldData,
    recipe: Recipe,
    *,
    input_size: int,
    seed: int,
    meta: dict[str, Any] | None = None,
    resume_from: dict[str, Any] | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``recipe``; returns the last model plus the best epoch.

    ``resume_from`` is a checkpoint dict from an earlier, interrupted run of the same job.
    ``on_epoch`` is the one channel for per-epoch side effects: after every epoch it receives
    the epoch's record (:func:`epoch_record`), which the CLI saves as ``checkpoint.pt``,
    writes to ``history.csv`` and shows on its progress bar. ``train`` itself writes nothing, so
    a library caller or a test decides what an epoch leaves behind.
    """
    device = data.train_images.device
    device_label = describe_device(device)
    set_determinism(recipe.deterministic and device.type == "cuda")
    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    transform = make_transform(data, recipe, input_size)
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16")
    forward = torch.compile(model) if recipe.compile else model
    progress = restore(resume_from, model, optimizer, scaler)
    record: dict[str, Any] = dict(resume_from or {})

    n = len(data.train_labels)
    # The last, incomplete batch is dropped (timm's convention): a batch of a few images makes
    # batch-norm statistics blow up (a 3-fold split of 1347 digits at batch 32 leaves 2 images).
    # Each epoch reshuffles, so every image is still seen.
    steps_per_epoch = max(1, n // recipe.batch_size)
    seen = min(n, steps_per_epoch * recipe.batch_size)
    # Non-finite checks cost a device sync; on a GPU look every few steps (the error still names
    # the first bad step, from the stored per-step losses).
    check_every = 1 if device.type == "cpu" else 16

    for epoch in range(progress.next_epoch, recipe.epochs + 1):
        torch.manual_seed(epoch_seed(seed, epoch))  # dropout and any other global randomness
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=generator).to(device)
        model.train()
        step_losses = torch.zeros(steps_per_epoch, device=device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        synchronize(device)
        started = time.perf_counter()
        lr = recipe.lr
        for step in range(steps_per_epoch):
            lr = lr_at(recipe, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
            set_lr(optimizer, lr)
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x = transform(data.train_images[idx], augment=recipe.augmentation != "none", generator=generator)
            y = data.train_labels[idx]
            loss, logits = train_step(forward, model, optimizer, scaler, x, y, recipe)
            step_losses[step] = loss
            loss_sum += loss.double() * len(y)
            correct += (logits.argmax(1) == y).sum()
            if (step + 1) % check_every == 0 or step + 1 == steps_per_epoch:
                check_finite(step_losses[: step + 1], epoch, lr)
        synchronize(device)
        seconds = time.perf_counter() - started

        val_loss, val_acc = evaluate_loss_acc(model, data.val_images, data.val_labels, transform, recipe)
        progress.add({
            "epoch": epoch,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "seconds": seconds,
            "examples_per_s": seen / seconds if seconds > 0 else float("inf"),
            "device": device_label,
        }, model)
        record = epoch_record(epoch, recipe, model, optimizer, scaler, progress, meta)
        if on_epoch is not None:
            on_epoch(record)
    return TrainResult(model, progress.history, progress.best_epoch, progress.best_val_acc, record)


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, lambda file: file.write(buffer.getvalue().encode()))


def package_versions() -> dict[str, str]:
    """Versions of what decides the numbers (read from metadata: importing torchvision is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"convbench": __version__, "python": platform.python_version()}
    for package in ("torch", "torchvision", "numpy", "scikit-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}:{torch.get_num_threads()} threads"


@dataclass(frozen=True)
class TrainJob:
    """Everything that identifies one training run: a checkpoint resumes only the same job."""

    experiment: str
    arch: str
    knobs: dict[str, Any]
    input_size: int
    recipe: Recipe
    seed: int  # the run's seed; torch is seeded with train_seed
    fold: int
    repeat: int = 0
    folds: int | None = None  # K of the study the job belongs to; None: whatever the split has
    split_seed: int | None = None  # the shuffling seed the study's split has; None: any

    @property
    def train_seed(self) -> int:
        from convbench.study import Run

        return Run(self.repeat, self.fold, self.seed).train_seed

    def identity(self, dataset_sha256: str, split_id: str) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "arch": self.arch, "knobs": dict(self.knobs),
            "input_size": self.input_size, "recipe": self.recipe.to_dict(), "seed": self.seed,
            "repeat": self.repeat, "fold": self.fold, "train_seed": self.train_seed,
            "data_sha256": dataset_sha256, "split_id": split_id,
        }


def run_job(
    job: TrainJob,
    data_path: Path,
    split_path: Path,
    out_dir: Path,
    *,
    device_name: str = "auto",
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train one (experiment, fold) job: the I/O around ``train``.

    Its one per-epoch hook writes ``checkpoint.pt`` and ``history.csv`` and moves the progress
    bar; when training completes the last checkpoint, less its wall-clock timings, becomes
    ``model.pt`` (bit-identical on a rerun). With ``resume`` an existing ``checkpoint.pt`` of the
    same job is continued; one of another job is refused.
    """
    from convbench.prepared import load_prepared
    from convbench.split import check_matches, load_split
    from convbench.summary import summarize

    dataset = load_prepared(data_path)
    split = load_split(split_path)
    check_matches(split, dataset)
    wanted = (job.folds or split.folds, split.seed if job.split_seed is None else job.split_seed)
    if (split.folds, split.seed) != wanted:
        raise TrainingError(
            f"{split_path}: a {split.folds}-fold split with seed {split.seed}, but the study asks "
            f"for {wanted[0]} folds with seed {wanted[1]} (repeat {job.repeat}); make it again with "
            f"'convbench split --folds {wanted[0]} --seed {wanted[1]}'"
        )
    device = pick_device(device_name)
    torch.manual_seed(job.train_seed)
    model = build(
        job.arch, in_channels=dataset.in_channels, num_classes=dataset.num_classes,
        input_size=job.input_size, init=job.recipe.init, **job.knobs,
    )
    identity = job.identity(dataset.sha256, split.split_id)
    # Counted here, where torch's compiler machinery is loaded anyway (SGD imports it), so that
    # `convbench evaluate` on its own need not pay its start-up.
    size = summarize(model, in_channels=dataset.in_channels, input_size=job.input_size)
    meta = {
        **identity,
        # CPU arithmetic depends on the thread count: a resumed run must use the same one.
        "threads": torch.get_num_threads(),
        "params": size["params"],
        "macs": size["macs"],
        "dataset": dataset.name,
        "in_channels": dataset.in_channels,
        "num_classes": dataset.num_classes,
        "classes": list(dataset.classes),
        "code_version": code_version(),
        "packages": package_versions(),
    }
    for name in ("model.pt", "history.csv", "checkpoint.pt"):  # fail before the work, not after
        check_writable(out_dir / name)
    checkpoint_path = out_dir / "checkpoint.pt"
    resume_from = None
    if resume and checkpoint_path.exists():
        resume_from = load_checkpoint(checkpoint_path)
        earlier = {k: resume_from["meta"].get(k) for k in identity}
        if earlier != identity:
            changed = sorted(k for k in identity if earlier[k] != identity[k])
            raise TrainingError(
                f"{checkpoint_path} belongs to another run (differs in {', '.join(changed)}); "
                "delete it or run without --resume"
            )
        if resume_from["meta"].get("threads") != meta["threads"]:
            raise TrainingError(
                f"{checkpoint_path} was trained with {resume_from['meta'].get('threads')} thread(s), "
                f"this run has {meta['threads']} (--threads): CPU results depend on the thread "
                "count, so resume with the same --threads, or delete it and start again"
            )
    data = fold_data(dataset, split, job.fold, device)
    done = resume_from["epoch"] if resume_from is not None else 0
    with tqdm(desc="epochs", initial=done, total=job.recipe.epochs, disable=not progress) as bar:

        def on_epoch(record: dict[str, Any]) -> None:
            save_checkpoint(record, checkpoint_path)
            write_history(record["history"], out_dir / "history.csv")
            last = record["history"][-1]
            bar.set_postfix(loss=f"{last['train_loss']:.3f}", val_acc=f"{last['val_acc']:.3f}", refresh=False)
            bar.update()

        result = train(
            model, data, job.recipe, input_size=job.input_size, seed=job.train_seed, meta=meta,
            resume_from=resume_from, on_epoch=on_epoch,
        )
    final = dict(result.checkpoint)
    final["history"] = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                        for row in final["history"]]
    save_checkpoint(final, out_dir / "model.pt")
    checkpoint_path.unlink()
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench train",
        description="Train one network on one fold of a prepared dataset. With --study and "
        "--experiment, train that experiment's runs (all of them, or those --repeat, --fold and "
        "--seed pick) with the study's settings, data, splits and output layout.",
    )
    parser.add_argument("--study", type=Path, default=None,
                        help="a study file (params.yaml): take arch, knobs, recipe, input size, "
                             "seeds and paths of --experiment from it")
    parser.add_argument("--experiment", default=None, help="experiment name (recorded in the results)")
    parser.add_argument("--repeat", type=int, default=None, help="repeat of the K-fold split (with --study)")
    parser.add_argument("--fold", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    parser.add_argument("--data", type=Path, default=None, help="prepared dataset (.npz)")
    parser.add_argument("--split", type=Path, default=None, help="split file (.json)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--arch", help="network name (see 'convbench models')")
    parser.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                        help="a network knob, e.g. --set activation=relu (repeatable)")
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe setting, e.g. --recipe lr=0.1 or --recipe preset=d2l (repeatable)")
    parser.add_argument("--input-size", type=int, default=None)
    add_training_options(parser)
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Where and how a training runs: the options ``convbench train`` and ``convbench run`` share."""
    parser.add_argument("--device", default="auto",
                        help="auto (default: a free GPU, held with a lock, else the CPU), cpu, cuda:N")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default 1). CPU results are bit-identical only "
                             "for the same thread count; parallel jobs scale better than threads")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run from its checkpoint.pt (in its output directory) if it exists")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar while training (default: when stderr is a terminal)")


@dataclass(frozen=True)
class JobPaths:
    data: Path
    split: Path
    out_dir: Path


def study_jobs(
    study: Any, experiment: str, repeat: int | None = None, fold: int | None = None,
    seed: int | None = None, *, data: Path | None = None, split: Path | None = None,
    out_dir: Path | None = None,
) -> list[tuple[TrainJob, JobPaths]]:
    """The training jobs of an experiment's runs in ``study`` (all, or those ``repeat``, ``fold``
    and ``seed`` pick), at the paths of the study's layout unless given."""
    exp = study.experiment(experiment)
    runs = study.select_runs(repeat, fold, seed)
    if len(runs) > 1 and out_dir is not None:
        raise TrainingError("--out-dir names one run's directory: pick the run with --repeat, --fold and --seed")
    return [
        (TrainJob(experiment, exp.arch, exp.knobs, exp.input_size, exp.recipe, run.seed, run.fold,
                  repeat=run.repeat, folds=study.folds, split_seed=study.split_seed(run.repeat)),
         JobPaths(data or Path(study.prepared_path), split or Path(study.split_path(run.repeat)),
                  out_dir or Path(study.run_dir(experiment, run))))
        for run in runs
    ]


def jobs_from_args(args: argparse.Namespace) -> list[tuple[TrainJob, JobPaths]]:
    """The training jobs the command line asks for, each with its input and output paths."""
    from convbench.summary import parse_overrides

    if args.study is not None:
        from convbench.study import load_study

        if not args.experiment:
            raise TrainingError("--study needs --experiment")
        return study_jobs(load_study(args.study), args.experiment, args.repeat, args.fold, args.seed,
                          data=args.data, split=args.split, out_dir=args.out_dir)
    missing = [flag for flag in ("arch", "fold", "data", "split", "out_dir") if getattr(args, flag) is None]
    if missing:
        raise TrainingError(f"give --{missing[0].replace('_', '-')} (or --study with --experiment)")
    if args.repeat is not None:
        raise TrainingError("--repeat needs --study")
    # The validators of recipes and networks refuse a bad value with a ValueError naming it; here,
    # before any work, that is the user's error (a study is validated the same way when loaded).
    try:
        recipe_settings = parse_overrides(args.recipe)
        recipe = resolve_recipe(recipe_settings, args.arch)
        knobs = parse_overrides(args.knobs)
        check_knobs(args.arch, knobs)
        size = args.input_size
        if size is None and recipe_settings.get("preset") == "d2l":
            size = d2l_input_size(args.arch)
        input_size = resolve_input_size(args.arch, size)
    except ValueError as err:
        raise TrainingError(str(err)) from None
    job = TrainJob(args.experiment or args.arch, args.arch, knobs, input_size, recipe, args.seed or 0,
                   args.fold)
    return [(job, JobPaths(args.data, args.split, args.out_dir))]


def trained_line(job: TrainJob, result: TrainResult, out_dir: Path) -> str:
    """What ``convbench train`` prints for a finished run."""
    last = result.history[-1]
    return (f"{job.experiment} repeat {job.repeat} fold {job.fold} seed {job.seed}: best epoch "
            f"{result.best_epoch} val_acc {result.best_val_acc:.4f}; last epoch val_acc "
            f"{last['val_acc']:.4f}, {last['examples_per_s']:.0f} ex/s -> {out_dir / 'model.pt'}")


def main(argv: list[str] | None = None) -> int:
    from convbench.prepared import DataError
    from convbench.study import StudyError

    def action(args: argparse.Namespace) -> None:
        torch.set_num_threads(args.threads)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        for job, paths in jobs_from_args(args):
            with claim_device(args.device) as device_name:
                result = run_job(job, paths.data, paths.split, paths.out_dir, device_name=device_name,
                                 resume=args.resume, progress=progress)
            print(trained_line(job, result, paths.out_dir))

    # What a user can cause and fix; a RuntimeError (CUDA's included) or a KeyError is a bug.
    expected = (TrainingError, CheckpointError, DataError, StudyError, DeviceError, OSError)
    return run_cli(build_parser(), argv, action, expected=expected)
