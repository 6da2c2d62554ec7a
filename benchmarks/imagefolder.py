"""How long a folder of 60,000 images takes to become a prepared data set (issue 39: at most 2
minutes on 2 cores), and whether it is the data it came from.

Writes the real Fashion-MNIST training set (Debian's dataset-fashion-mnist, or --raw DIR) as 60,000
28-px grey PNGs in ImageFolder layout into a scratch project, then times the two stages a study of
your own images runs: ``convbench download`` (takes stock: each file's sha256) and ``convbench
prepare`` (decode, convert, resize, hold out the test part), each in a fresh process, as the
pipeline runs them. Checks that every prepared image is a pixel-exact copy of its source.

    python benchmarks/imagefolder.py [--images 60000] [--keep DIR]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from convbench.datasets import DATASETS
from convbench.prepare import _read_idx_set, load_prepared

STUDY = """\
study: png
dataset: fashion_png
images: {size: 28, channels: 1}
folds: 3
results_dir: results
experiments:
  lenet: {arch: lenet}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--keep", type=Path, default=None, help="write the scratch project here (kept)")
    args = parser.parse_args()
    spec = DATASETS["fashion_mnist"]
    arrays = _read_idx_set(spec, args.raw)
    images, labels = arrays["train_images"][: args.images, 0], arrays["train_labels"][: args.images]
    root = args.keep or Path(tempfile.mkdtemp(prefix="imagefolder-"))
    folder = root / "images/fashion_png"
    started = time.perf_counter()
    for index, (image, label) in enumerate(zip(images, labels)):
        directory = folder / spec.classes[label].replace("/", "-")
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(directory / f"{index:05d}.png")
    print(f"wrote {len(images):,} PNGs in {time.perf_counter() - started:.1f} s under {folder}")
    (root / "study.yaml").write_text(STUDY)
    for stage in ("download", "prepare"):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "convbench.cli", stage, "--study", "study.yaml"], cwd=root,
                       check=True, capture_output=True)
        print(f"convbench {stage}: {time.perf_counter() - started:.1f} s (a fresh process, start-up included)")
    data = load_prepared(root / "data/prepared/fashion_png.npz")
    by_source = {}
    for index, (image, label) in enumerate(zip(images, labels)):
        by_source[image.tobytes()] = label
    prepared = np.concatenate([data.train_images, data.test_images])[:, 0]
    prepared_labels = np.concatenate([data.train_labels, data.test_labels])
    names = [spec.classes[label].replace("/", "-") for label in range(len(spec.classes))]
    exact = sum(by_source.get(image.tobytes()) is not None and names[by_source[image.tobytes()]] == data.classes[label]
                for image, label in zip(prepared, prepared_labels))
    print(f"{exact:,} of {len(prepared):,} prepared images are a pixel-exact copy of their source, with its class")
    return 0 if exact == len(prepared) else 1


if __name__ == "__main__":
    sys.exit(main())
