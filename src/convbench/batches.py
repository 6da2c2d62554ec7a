"""The batch transform that runs on the training device.

The whole split lives on the device as uint8; each batch is turned into floats, resized,
augmented and normalized there, so a GPU run never waits on CPU image work (as airbench, Keller
Jordan's CIFAR-10 speed runs, keeps its data set on the GPU). What it gains over d2l's DataLoader
of PIL images is measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


class BatchTransform:
    """uint8 batch on the device -> float batch at the network's resolution."""

    def __init__(
        self,
        input_size: int,
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
        channels_last: bool = False,
    ) -> None:
        self.input_size = input_size
        self.mean = mean
        self.std = std
        self.channels_last = channels_last

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
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
