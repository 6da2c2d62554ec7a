"""Running a trained network over images: logits in eval mode, in batches, at the recipe's precision.

Shared by training (the validation pass after each epoch) and evaluation (validation fold and test
set), so that scoring a checkpoint needs no training code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convbench.batches import BatchTransform, Inputs
from convbench.recipe import Recipe


def autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor | Inputs,
    transform: BatchTransform | None = None,
    *,
    batch_size: int,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits (float32) for uint8 ``images`` and their ``transform`` (or :class:`Inputs`), in
    eval mode, in batches."""
    inputs = images if isinstance(images, Inputs) else Inputs(images, transform, budget_bytes=0)
    model.eval()
    device = inputs.images.device
    outputs = []
    for start in range(0, len(inputs), batch_size):
        with autocast(device, precision):
            outputs.append(model(inputs.take(slice(start, start + batch_size))).float())
    return torch.cat(outputs) if outputs else torch.empty(0)


def evaluate_loss_acc(
    model: nn.Module, inputs: Inputs, labels: torch.Tensor, recipe: Recipe,
) -> tuple[float, float]:
    logits = predict(model, inputs, batch_size=recipe.eval_batch_size, precision=recipe.precision)
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


