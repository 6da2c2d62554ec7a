"""Training throughput: convbench's trainer against a d2l-style loop, same network, same device.

The d2l-style baseline is what ``train_ch6`` does: a torch DataLoader over PIL images with
torchvision transforms (Resize + ToTensor, run on the CPU in worker processes) feeding plain SGD.
Ours keeps the split on the device as uint8 and resizes there. Both are timed end to end (wall
clock over whole epochs, data loading included), after one warm-up epoch; d2l's own "ex/s" counts
only the compute part of each step, which is printed too.

Our side uses the trainer's ``d2l`` recipe with ``channels_last`` (oneDNN's and cuDNN's faster
layout; ``--no-channels-last`` to compare without it). The data are synthetic uint8 images of Fashion-MNIST's shape (28x28, 10 classes): throughput does
not depend on the pixels, and the real data cannot be downloaded everywhere.

    python benchmarks/throughput.py --device cpu --arch lenet
    python benchmarks/throughput.py --device cuda --arch resnet18 --input-size 96

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from convbench.models import build
from convbench.recipe import D2L_SETTINGS, resolve_recipe
from convbench.batches import FoldData
from convbench.train import train


class PILImages(Dataset):
    """Images handed out one PIL image at a time, as torchvision's FashionMNIST does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i, 0], mode="L")), int(self.labels[i])


def d2l_style(net: nn.Module, images, labels, *, lr, batch_size, input_size, device, epochs, workers):
    """train_ch6's loop; returns (end-to-end ex/s, compute-only ex/s) over the timed epochs."""
    trans = transforms.Compose([transforms.Resize(input_size), transforms.ToTensor()])
    loader = DataLoader(PILImages(images, labels, trans), batch_size=batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    wall = compute = 0.0
    seen = 0
    for epoch in range(epochs + 1):  # epoch 0 warms up
        net.train()
        started = time.perf_counter()
        for X, y in loader:
            step_start = time.perf_counter()
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            l = loss(net(X), y)
            l.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if epoch > 0:
                compute += time.perf_counter() - step_start
                seen += len(y)
        if epoch > 0:
            wall += time.perf_counter() - started
    return seen / wall, seen / compute


def ours(net: nn.Module, images, labels, *, lr, batch_size, input_size, device, epochs, channels_last):
    data = FoldData(
        train_images=torch.from_numpy(images).to(device),
        train_labels=torch.from_numpy(labels).to(device),
        val_images=torch.from_numpy(images[:batch_size]).to(device),
        val_labels=torch.from_numpy(labels[:batch_size]).to(device),
        num_classes=10,
    )
    recipe = resolve_recipe({"preset": "d2l", "lr": lr, "batch_size": batch_size,
                             "epochs": epochs + 1, "channels_last": channels_last}, "lenet")
    result = train(net, data, recipe, input_size=input_size, seed=0)
    timed = result.history[1:]  # epoch 1 warms up
    return len(labels) * len(timed) / sum(row["seconds"] for row in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", default="lenet")
    parser.add_argument("--input-size", type=int, default=None, help="default: d2l's for the network")
    parser.add_argument("--batch-size", type=int, default=None, help="default: d2l's for the network")
    parser.add_argument("--examples", type=int, default=12_800, help="synthetic training images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the baseline (d2l: 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for both loops (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="run both loops this many times")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="run our trainer in the default (NCHW) memory format")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lr, batch_size, input_size = D2L_SETTINGS.get(args.arch, (0.05, 128, None))
    input_size = args.input_size or input_size
    batch_size = args.batch_size or batch_size
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.examples, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.examples).astype(np.int64)

    runs = []
    for _ in range(args.repeats):  # alternate the two loops so drifting load hits both alike
        torch.manual_seed(0)
        mine = ours(build(args.arch, input_size=input_size, init="xavier"), images, labels,
                    lr=lr, batch_size=batch_size, input_size=input_size, device=device,
                    epochs=args.epochs, channels_last=not args.no_channels_last)
        torch.manual_seed(0)
        theirs = d2l_style(
            build(args.arch, input_size=input_size, init="xavier"), images, labels, lr=lr,
            batch_size=batch_size, input_size=input_size, device=device, epochs=args.epochs,
            workers=args.workers,
        )
        runs.append((mine, *theirs))
    # the median run by our speed-up, so one noisy run does not decide
    runs.sort(key=lambda r: r[0] / r[1])
    ours_speed, base_speed, base_compute = runs[len(runs) // 2]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"arch {args.arch}, input {input_size} px, batch {batch_size}, {args.examples} images/epoch, "
          f"{args.epochs} timed epochs, device {name}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}")
    if args.repeats > 1:
        print("speed-ups of the runs: " + ", ".join(f"{r[0] / r[1]:.2f}x" for r in runs) + " (median shown)")
    print(f"{'loop':<28}{'end-to-end ex/s':>18}{'compute-only ex/s':>20}")
    print(f"{'convbench (data on device)':<28}{ours_speed:>18,.0f}{'':>20}")
    print(f"{'d2l-style (DataLoader)':<28}{base_speed:>18,.0f}{base_compute:>20,.0f}")
    print(f"speedup {ours_speed / base_speed:.2f}x (ours {ours_speed:.0f} ex/s, d2l-style {base_speed:.0f} ex/s)")


if __name__ == "__main__":
    main()
