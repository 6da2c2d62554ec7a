"""Training throughput: convbench's trainer against the ceiling and against d2l, same network, same device.

Four loops over the same synthetic images, each timed after a warm-up epoch:

- **convbench**: the trainer (:func:`convbench.train.train`), which keeps the split on the device
  as uint8 and resizes there; its own per-epoch ``seconds`` (the training steps, no validation).
- **bare step**: a bare PyTorch training step on the same network and batch size, on batches made
  beforehand (no data handling, no metrics, no lr schedule): the ceiling of the framework on this
  device. convbench's share of it is the trainer's overhead.
- **d2l-style**: what ``train_ch6`` does, written out here: a DataLoader over PIL images with
  torchvision transforms (Resize + ToTensor, in worker processes) feeding plain SGD; wall clock
  over whole epochs, data loading included, and the compute-only figure d2l prints.
- **d2l train_ch6**: d2l's own function (``pip install --no-deps d2l==1.0.3``; not a dependency of
  convbench, skipped with a note where it is not installed), fed the same DataLoader, with its own
  "examples/sec" (compute only) and the wall time of its whole call (its per-epoch test pass and
  plot updates included).

Our side uses the trainer's ``d2l`` recipe with ``channels_last`` (oneDNN's and cuDNN's faster
layout; ``--no-channels-last`` to compare without it). The data are synthetic uint8 images of Fashion-MNIST's shape (28x28, 10 classes): throughput does
not depend on the pixels, and the real data cannot be downloaded everywhere.

    python benchmarks/throughput.py --device cpu --arch lenet
    python benchmarks/throughput.py --device cuda --arch resnet18 --input-size 96
    python benchmarks/throughput.py --study fashion_mnist_chapter     # every network of a study

With ``--study``, every experiment of the study runs at its own input size, batch size and recipe
(optimizer, label smoothing, augmentation, precision, memory format), with the study's threads,
against a bare step with the same network, optimizer, loss, precision and memory format on
batches made beforehand: the trainer's share of the ceiling, network by network, as a Markdown
table (the d2l loops are skipped).

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


def bare_step(net: nn.Module, images, labels, *, lr, batch_size, input_size, device, epochs, channels_last):
    """A bare training step on ready batches with d2l's plain SGD at ``lr``: forward, loss,
    backward, step; ex/s over the timed epochs (one warm-up epoch first)."""
    recipe = resolve_recipe({"preset": "d2l", "lr": lr, "batch_size": batch_size,
                             "channels_last": channels_last}, "lenet")
    return bare_recipe_step(net, images, labels, recipe=recipe, input_size=input_size, device=device,
                            epochs=epochs)


def d2l_train_ch6(net: nn.Module, images, labels, *, lr, batch_size, input_size, device, epochs, workers):
    """d2l's own ``train_ch6`` (d2l 1.0.3) on the DataLoader d2l builds; (its printed compute-only
    ex/s, end-to-end ex/s of the whole call), or None where d2l is not installed."""
    import contextlib
    import io
    import re

    try:
        from d2l import torch as d2l
    except ImportError:
        return None
    trans = transforms.Compose([transforms.Resize(input_size), transforms.ToTensor()])
    train_iter = DataLoader(PILImages(images, labels, trans), batch_size=batch_size, shuffle=True,
                            num_workers=workers, persistent_workers=workers > 0)
    test_iter = DataLoader(PILImages(images[:batch_size], labels[:batch_size], trans), batch_size=batch_size)
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        d2l.train_ch6(net, train_iter, test_iter, epochs, lr, device)
    wall = time.perf_counter() - started
    found = re.search(r"([\d.]+) examples/sec", printed.getvalue())
    return (float(found.group(1)) if found else float("nan")), len(labels) * epochs / wall


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


def bare_recipe_step(net: nn.Module, images, labels, *, recipe, input_size, device, epochs) -> float:
    """A bare training step with ``recipe``'s optimizer, loss, precision and memory format, on
    batches resized (and normalized, if the recipe does) beforehand: no augmentation, no metrics,
    no schedule; ex/s over the timed epochs (one warm-up epoch first)."""
    from convbench.inference import autocast
    from convbench.train import make_optimizer

    x = torch.from_numpy(images).to(device).float().div_(255)
    if input_size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=input_size, mode="bilinear", antialias=True)
    if recipe.normalize:
        x = (x - x.mean()) / x.std()
    memory = torch.channels_last if recipe.channels_last else torch.contiguous_format
    size = recipe.batch_size
    batches = [(x[i:i + size].contiguous(memory_format=memory), torch.from_numpy(labels[i:i + size]).to(device))
               for i in range(0, len(labels) - size + 1, size)]
    net.to(device)
    if recipe.channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net, recipe)
    net.train()
    seen, seconds = 0, 0.0
    for epoch in range(epochs + 1):
        started = time.perf_counter()
        for X, y in batches:
            optimizer.zero_grad(set_to_none=True)
            with autocast(X.device, recipe.precision):
                loss = nn.functional.cross_entropy(net(X).float(), y, label_smoothing=recipe.label_smoothing)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch > 0:
            seconds += time.perf_counter() - started
            seen += sum(len(y) for _, y in batches)
    return seen / seconds


def ours_with_recipe(net: nn.Module, images, labels, *, recipe, input_size, device, epochs) -> float:
    """convbench's trainer with an experiment's own recipe; ex/s of its timed epochs."""
    import dataclasses

    size = recipe.batch_size
    data = FoldData(train_images=torch.from_numpy(images).to(device), train_labels=torch.from_numpy(labels).to(device),
                    val_images=torch.from_numpy(images[:size]).to(device),
                    val_labels=torch.from_numpy(labels[:size]).to(device), num_classes=10)
    recipe = dataclasses.replace(recipe, epochs=epochs + 1, warmup_epochs=0.0)
    result = train(net, data, recipe, input_size=input_size, seed=0)
    timed = result.history[1:]  # epoch 1 warms up
    return len(labels) // size * size * len(timed) / sum(row["seconds"] for row in timed)


def study_main(args: argparse.Namespace) -> None:
    """Every experiment of a study: the trainer against the bare step, a Markdown table."""
    import platform

    from convbench.study import load_study, study_file

    study = load_study(study_file("params.yaml", args.study) if not args.study.endswith(".yaml") else args.study)
    torch.set_num_threads(args.threads or study.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.examples, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.examples).astype(np.int64)
    print(f"study {study.name}: {args.examples} synthetic images an epoch, {args.epochs} timed epochs after one "
          f"warm-up, {args.repeats} alternating runs (median by share), device {args.device} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| experiment | network | input px | batch | convbench img/s | bare step img/s | share | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for name, e in study.experiments.items():
        if args.only and name not in args.only:
            continue
        shares = []
        for _ in range(args.repeats):
            def net() -> nn.Module:
                torch.manual_seed(0)
                return build(e.arch, input_size=e.input_size, init=e.recipe.init, **e.knobs)

            common = dict(recipe=e.recipe, input_size=e.input_size, device=device, epochs=args.epochs)
            mine = ours_with_recipe(net(), images, labels, **common)
            ceiling = bare_recipe_step(net(), images, labels, **common)
            shares.append((mine / ceiling, mine, ceiling))
        shares.sort()
        share, mine, ceiling = shares[len(shares) // 2]
        knobs = ", ".join(f"{k}={v}" for k, v in e.knobs.items()) or "defaults"
        print(f"| {name} | {e.arch} ({knobs}) | {e.input_size} | {e.recipe.batch_size} | {mine:,.0f} | "
              f"{ceiling:,.0f} | **{share:.0%}** | {', '.join(f'{s[0]:.0%}' for s in shares)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=None,
                        help="a bundled study's name or a study file: every experiment at its own settings")
    parser.add_argument("--only", nargs="+", default=None, metavar="EXPERIMENT",
                        help="with --study: only these experiments")
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
    if args.study:
        study_main(args)
        return
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
    channels_last = not args.no_channels_last
    for _ in range(args.repeats):  # alternate the loops so drifting load hits them alike
        def net() -> nn.Module:
            torch.manual_seed(0)
            return build(args.arch, input_size=input_size, init="xavier")

        common = dict(lr=lr, batch_size=batch_size, input_size=input_size, device=device, epochs=args.epochs)
        mine = ours(net(), images, labels, channels_last=channels_last, **common)
        ceiling = bare_step(net(), images, labels, channels_last=channels_last, **common)
        theirs = d2l_style(net(), images, labels, workers=args.workers, **common)
        book = d2l_train_ch6(net(), images, labels, workers=args.workers, **common)
        runs.append((mine, *theirs, ceiling, book))
    # the median run by our share of the ceiling, so one noisy run does not decide
    runs.sort(key=lambda r: r[0] / r[3])
    ours_speed, base_speed, base_compute, bare_speed, book = runs[len(runs) // 2]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"arch {args.arch}, input {input_size} px, batch {batch_size}, {args.examples} images/epoch, "
          f"{args.epochs} timed epochs, device {name}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}")
    if args.repeats > 1:
        print("convbench / bare step in the runs: " + ", ".join(f"{r[0] / r[3]:.0%}" for r in runs)
              + " (median shown)")
    print(f"{'loop':<30}{'end-to-end ex/s':>18}{'compute-only ex/s':>20}")
    print(f"{'convbench (data on device)':<30}{ours_speed:>18,.0f}{'':>20}")
    print(f"{'bare step (the ceiling)':<30}{'':>18}{bare_speed:>20,.0f}")
    print(f"{'d2l-style (DataLoader)':<30}{base_speed:>18,.0f}{base_compute:>20,.0f}")
    if book is None:
        print("d2l train_ch6: not installed (pip install --no-deps d2l==1.0.3)")
    else:
        print(f"{'d2l train_ch6 (d2l 1.0.3)':<30}{book[1]:>18,.0f}{book[0]:>20,.0f}")
    print(f"convbench at {ours_speed / bare_speed:.0%} of the bare step; "
          f"{ours_speed / base_speed:.2f}x the d2l-style loop"
          + ("" if book is None else f", {ours_speed / book[1]:.2f}x d2l's train_ch6 end to end"))


if __name__ == "__main__":
    main()
