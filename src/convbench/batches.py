"""A fold's images on the device, and the batch transform that runs there.

The whole split lives on the device as uint8; each batch is turned into floats, resized,
augmented and normalized there, so a GPU run never waits on CPU image work (as airbench, Keller
Jordan's CIFAR-10 speed runs, keeps its data set on the GPU). What it gains over d2l's DataLoader
of PIL images is measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convbench.recipe import Recipe


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], shaped (1, C, 1, 1)."""
    x = images.to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return mean.float(), std.float()


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero padding) and a random horizontal flip.

    Vectorized over the batch: one gather, no per-sample Python. The random numbers come from a
    CPU generator so the same seed gives the same augmentation on every device.
    """
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # n x h
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # n x w
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


# Random erasing (Zhong et al., AAAI 2020, arXiv:1708.04896) with torchvision's RandomErasing
# defaults: probability 0.5, an area of 2-33 % of the image, an aspect ratio of 0.3-3.3.
ERASE_P, ERASE_SCALE, ERASE_RATIO = 0.5, (0.02, 0.33), (0.3, 3.3)


def random_erasing(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sets one random rectangle of each image to 0 with probability ``ERASE_P``: after
    normalization, the training fold's mean.

    Vectorized over the batch (torchvision's RandomErasing erases one rectangle for a whole batch
    tensor). Where torchvision redraws a rectangle that does not fit, this clamps it to the image.
    The random numbers come from the CPU generator, as random_crop_flip's.
    """
    n, _, h, w = x.shape
    area = torch.empty(n).uniform_(*ERASE_SCALE, generator=generator) * (h * w)
    log_ratio = torch.empty(n).uniform_(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]),
                                        generator=generator)
    eh = (area * log_ratio.exp()).sqrt().round().clamp(1, h)
    ew = (area / log_ratio.exp()).sqrt().round().clamp(1, w)
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).floor()
    erase = torch.rand(n, generator=generator) < ERASE_P
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # n x h
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # n x w
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None])[:, None]
    return x.masked_fill(mask.to(x.device), 0.0)


class BatchTransform:
    """uint8 batch on the device -> float batch at the network's resolution."""

    def __init__(
        self,
        input_size: int,
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
        channels_last: bool = False,
        erasing: bool = False,
    ) -> None:
        self.input_size = input_size
        self.mean = mean
        self.std = std
        self.channels_last = channels_last
        self.erasing = erasing  # random erasing after crops and flips, when augmenting

    def __call__(
        self, images: torch.Tensor, *, augment: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = images.float().div_(255.0)
        size = images.shape[-1]
        if size != self.input_size:
            # Antialias only when shrinking: bilinear upsampling is what torchvision's Resize does.
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear",
                align_corners=False, antialias=self.input_size < size,
            )
        if augment:
            if generator is None:
                raise ValueError("augmentation needs a generator")
            x = random_crop_flip(x, generator, pad=max(1, self.input_size // 8))
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if augment and self.erasing:
            x = random_erasing(x, generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


# Without augmentation a fold is transformed once, not every epoch, when its floats fit in this.
PRECOMPUTE_BYTES = 1 << 30


def rows(tensor: torch.Tensor, index: torch.Tensor | slice) -> torch.Tensor:
    """``tensor[index]`` along the first dimension. A tensor of indices goes through
    ``index_select``, which copies whole rows: on a CPU it gathers a batch of 128 Fashion-MNIST
    images in half the time advanced indexing takes (about 50 against 105 us, one thread;
    benchmarks/RESULTS.md), a few percent of a small network's step."""
    return torch.index_select(tensor, 0, index) if isinstance(index, torch.Tensor) else tensor[index]


class Inputs:
    """Images as the network sees them, gathered batch by batch: uint8 images plus their transform.

    The transform is the same every epoch unless it augments, so it then runs once over all the
    images when their floats fit in ``budget_bytes`` (bilinear resizing and normalization are per
    image: the floats are bit-identical to transforming each batch; a test holds them equal) and a
    step only gathers its batch. Otherwise each batch is transformed when it is taken.
    """

    def __init__(
        self, images: torch.Tensor, transform: BatchTransform, *, augment: bool = False,
        budget_bytes: int | None = None,
    ) -> None:
        self.images, self.transform, self.augment = images, transform, augment
        n, channels = images.shape[:2]
        floats = n * channels * transform.input_size**2 * 4
        budget = PRECOMPUTE_BYTES if budget_bytes is None else budget_bytes
        self.ready = None if augment or floats > budget else transform(images)

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: torch.Tensor | slice, generator: torch.Generator | None = None) -> torch.Tensor:
        """The batch of the images at ``index``, ready for the network."""
        if self.ready is None:
            return self.transform(rows(self.images, index), augment=self.augment, generator=generator)
        batch = rows(self.ready, index)
        return batch.contiguous(memory_format=torch.channels_last) if self.transform.channels_last else batch


class FoldError(ValueError):
    """A fold that the split does not have."""


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
        raise FoldError(f"fold must be in 0..{split.folds - 1}, got {fold}")
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



def make_transform(data: FoldData, recipe: Recipe, input_size: int) -> BatchTransform:
    """The batch transform; normalization statistics come from the training fold only."""
    mean, std = channel_stats(data.train_images) if recipe.normalize else (None, None)
    return BatchTransform(input_size, mean, std, channels_last=recipe.channels_last,
                          erasing=recipe.erasing)

