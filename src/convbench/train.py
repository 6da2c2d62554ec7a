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

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from convbench.batches import FoldData, Inputs, make_transform, rows
from convbench.checkpoint import CHECKPOINT_FORMAT, cpu_state, optimizer_state_cpu
from convbench.device import describe_device, set_determinism, set_tf32, synchronize
from convbench.inference import autocast, evaluate_loss_acc
from convbench.recipe import Recipe, evaluation_limit, lr_at, steps_in_epoch


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
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_acc: float
    checkpoint: dict[str, Any] = field(repr=False)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
            nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)



def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch



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
    if device.type == "cuda":
        set_tf32(recipe.tf32)
    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    transform = make_transform(data, recipe, input_size)
    train_inputs = Inputs(data.train_images, transform, augment=recipe.augmentation != "none")
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16")
    forward = torch.compile(model) if recipe.compile else model
    progress = restore(resume_from, model, optimizer, scaler)
    record: dict[str, Any] = dict(resume_from or {})

    n = len(data.train_labels)
    # The last, incomplete batch is dropped (timm's convention): a batch of a few images makes
    # batch-norm statistics blow up (a 3-fold split of 1347 digits at batch 32 leaves 2 images).
    # Each epoch reshuffles, so every image is still seen.
    steps_per_epoch = steps_in_epoch(recipe, n)  # a smoke run: the first batches of each epoch
    limit = evaluation_limit(recipe)  # a smoke run's few batches; None: every image
    val_images, val_labels = data.val_images[:limit], data.val_labels[:limit]
    val_inputs = Inputs(val_images, transform)
    seen = min(n, steps_per_epoch * recipe.batch_size)
    # Non-finite checks cost a device sync (and on any device a few small ops): look every few
    # steps; the error still names the first bad step, from the stored per-step losses.
    check_every = 16

    for epoch in range(progress.next_epoch, recipe.epochs + 1):
        torch.manual_seed(epoch_seed(seed, epoch))  # dropout and any other global randomness
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=generator).to(device)
        model.train()
        step_losses = torch.zeros(steps_per_epoch, device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        synchronize(device)
        started = time.perf_counter()
        lr = recipe.lr
        for step in range(steps_per_epoch):
            lr = lr_at(recipe, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
            set_lr(optimizer, lr)
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x = train_inputs.take(idx, generator)
            y = rows(data.train_labels, idx)
            loss, logits = train_step(forward, model, optimizer, scaler, x, y, recipe)
            step_losses[step] = loss
            correct += (logits.argmax(1) == y).sum()
            if (step + 1) % check_every == 0 or step + 1 == steps_per_epoch:
                check_finite(step_losses[: step + 1], epoch, lr)
        synchronize(device)
        seconds = time.perf_counter() - started

        val_loss, val_acc = evaluate_loss_acc(model, val_inputs, val_labels, recipe)
        progress.add({
            "epoch": epoch,
            # every batch holds batch_size images (the last, incomplete one is dropped), so the
            # mean of the step losses is the mean over the images seen
            "train_loss": step_losses.double().mean().item(),
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

