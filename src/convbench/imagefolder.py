"""A data set of your own images: a folder in torchvision's ``ImageFolder`` layout, turned into the
same uint8 ``.npz`` as the built-in data sets.

A study names it by its ``dataset`` and says how to prepare it (``images:``); the images live in
``images/<dataset>/``, one sub-folder per class (PNG or JPEG, any size, grey or colour), or in
``train/`` and ``test/`` sub-folders of it laid out that way::

    dataset: microscope
    images: {size: 28, channels: 1}          # test_fraction: 0.2, test_seed: 0 without a test/ part

Two stages, as for a downloaded data set: ``convbench download`` takes stock of the folder (every
file's class, part and sha256, in ``data/raw/<dataset>/manifest.json``; nothing is copied), and
``convbench prepare`` decodes, converts and resizes every image it lists (checking each one's sha256
against it) into ``data/prepared/<dataset>.npz``. Without a ``test/`` part a stratified test part is
held out once, with ``test_seed``; the manifest's sha256 (which includes the settings) is the
``source_sha256`` every result's data checksum stands on. Both engines track the folder (DVC's
``download`` stage depends on ``images/``, Snakemake's on every file in it), so an added image
reruns everything from ``prepare`` on. Names starting with ``.`` (``.DS_Store``) are skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convbench._io import atomic_write
from convbench.errors import DataError

IMAGES_DIR = Path("images")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST = "manifest.json"
DEFAULTS = {"test_fraction": 0.2, "test_seed": 0}
PARTS = ("train", "test")


@dataclass(frozen=True)
class Layout:
    """What a folder holds: its classes and, per part, each class's files (sorted)."""

    root: Path
    classes: tuple[str, ...]
    parts: dict[str, dict[str, list[Path]]]  # "train" (and "test") -> class -> files

    @property
    def smallest_class(self) -> tuple[str, int]:
        counts = {c: len(files) for c, files in self.parts["train"].items()}
        name = min(counts, key=lambda c: (counts[c], c))
        return name, counts[name]


def folder(dataset: str, root: Path = Path(".")) -> Path:
    return root / IMAGES_DIR / dataset


def settings(images: dict[str, Any]) -> dict[str, Any]:
    """A study's ``images:`` with its defaults."""
    return {**DEFAULTS, **images}


def _visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def _classes(part_dir: Path) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    for entry in _visible(part_dir):
        if not entry.is_dir():
            raise DataError(f"{entry}: a file where class folders are expected; put each image in "
                            f"its class's folder ({part_dir}/<class>/)")
        files = []
        for file in _visible(entry):
            if file.is_dir():
                raise DataError(f"{file}: a folder inside the class folder {entry}; a class folder "
                                "holds images only")
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{file}: not an image file (expected {', '.join(IMAGE_SUFFIXES)}); "
                                "remove it or move it out of the folder")
            files.append(file)
        if not files:
            raise DataError(f"{entry}: an empty class folder; add its images or remove it")
        classes[entry.name] = files
    if len(classes) < 2:
        raise DataError(f"{part_dir}: {len(classes)} class folder(s); a classification needs at least two")
    return classes


def scan(root: Path) -> Layout:
    """The folder's layout, checked; errors name the file or folder at fault."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; a study with images: reads them from "
                        f"{IMAGES_DIR}/<dataset>/, one sub-folder per class (or train/ and test/ "
                        "sub-folders laid out that way)")
    names = {p.name for p in _visible(root)}
    if names == set(PARTS):
        parts = {part: _classes(root / part) for part in PARTS}
        train, test = set(parts["train"]), set(parts["test"])
        if train != test:
            only = [f"{sorted(a - b)} only in {part}/" for a, b, part in ((train, test, "train"), (test, train, "test")) if a - b]
            raise DataError(f"{root}: the test part's classes differ from training's: {'; '.join(only)}; "
                            "both parts need the same class folders")
    else:
        parts = {"train": _classes(root)}
    return Layout(root, tuple(sorted(parts["train"])), parts)


def check_for_study(dataset: str, images: dict[str, Any], folds: int) -> tuple[int, int, int, int]:
    """For the study check (no image is decoded): training images, the smallest class's count after
    the test hold-out, channels and classes; refuses a class with fewer images than folds."""
    layout = scan(folder(dataset))
    config = settings(images)
    train = layout.parts["train"]
    held = "test" not in layout.parts
    counts = {c: len(files) - (round(len(files) * config["test_fraction"]) if held else 0) for c, files in train.items()}
    name = min(counts, key=lambda c: (counts[c], c))
    if counts[name] < folds:
        after = " after the test hold-out" if held else ""
        raise DataError(f"{layout.root / name}: {counts[name]} training image(s){after}, fewer than the "
                        f"{folds} folds; add images or use fewer folds")
    return sum(counts.values()), counts[name], int(config["channels"]), len(layout.classes)


def sizes(dataset: str, images: dict[str, Any]) -> tuple[int, int, int]:
    """(training images, test images, classes) the folder will give, for the cost estimate: the
    test/ part, or the hold-out's share (rounded up, as scikit-learn's train_test_split does)."""
    layout = scan(folder(dataset))
    total = sum(len(files) for files in layout.parts["train"].values())
    if "test" in layout.parts:
        return total, sum(len(files) for files in layout.parts["test"].values()), len(layout.classes)
    test = math.ceil(settings(images)["test_fraction"] * total)
    return total - test, test, len(layout.classes)


def take_stock(dataset: str, images: dict[str, Any], out_dir: Path) -> Path:
    """``data/raw/<dataset>/manifest.json``: each image's part, class, path and sha256, and the
    settings to prepare them with. Written atomically; nothing else is written or copied."""
    layout = scan(folder(dataset))
    files = [{"part": part, "class": name, "path": file.as_posix(),
              "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
             for part, classes in layout.parts.items() for name, paths in classes.items() for file in paths]
    manifest = {"dataset": dataset, "folder": layout.root.as_posix(), "settings": settings(images),
                "classes": list(layout.classes), "files": files}
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    path = out_dir / MANIFEST
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run 'convbench download --study ...' first (it takes stock "
                        "of the image folder)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a manifest written by convbench download ({err}); run it again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise DataError(f"{path}: not a manifest written by convbench download; run it again")
    return manifest


def _decode(file: Path, expected_sha256: str, size: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        data = file.read_bytes()
    except OSError as err:
        raise DataError(f"{file}: cannot be read ({err.strerror or err})") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise DataError(f"{file}: changed since convbench download took stock of the folder; run it again")
    try:
        with Image.open(__import__("io").BytesIO(data)) as image:
            image.load()
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{file}: not a readable image ({err}); replace or remove it") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # C x S x S


def folder_arrays(raw_dir: Path, folds: int) -> dict[str, np.ndarray]:
    """The prepared arrays (convbench.prepare's keys) of the images ``raw_dir``'s manifest lists:
    same images and settings in, same arrays out. A bad image stops it before anything is written."""
    from sklearn.model_selection import train_test_split

    manifest_path = raw_dir / MANIFEST
    manifest = _read_manifest(manifest_path)
    config, classes = manifest["settings"], list(manifest["classes"])
    index = {name: i for i, name in enumerate(classes)}
    parts: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "test": ([], [])}
    for entry in manifest["files"]:
        image = _decode(Path(entry["path"]), entry["sha256"], int(config["size"]), int(config["channels"]))
        parts[entry["part"]][0].append(image)
        parts[entry["part"]][1].append(index[entry["class"]])
    images = np.stack(parts["train"][0])
    labels = np.asarray(parts["train"][1], dtype=np.int64)
    if parts["test"][1]:
        arrays = {"train_images": images, "train_labels": labels, "test_images": np.stack(parts["test"][0]),
                  "test_labels": np.asarray(parts["test"][1], dtype=np.int64)}
    else:
        try:
            train, test = train_test_split(np.arange(len(labels)), test_size=config["test_fraction"],
                                           stratify=labels, random_state=config["test_seed"])
        except ValueError as err:
            raise DataError(f"{manifest['folder']}: cannot hold out a stratified test part of "
                            f"{config['test_fraction']} ({err}); add images or change images.test_fraction") from None
        train, test = np.sort(train), np.sort(test)
        arrays = {"train_images": images[train], "train_labels": labels[train], "test_images": images[test],
                  "test_labels": labels[test]}
    counts = np.bincount(arrays["train_labels"], minlength=len(classes))
    if counts.min() < folds:
        name = classes[int(counts.argmin())]
        raise DataError(f"{manifest['folder']}/{name}: {counts.min()} training image(s), fewer than the "
                        f"{folds} folds; add images or use fewer folds")
    arrays["name"] = np.array(manifest["dataset"])
    arrays["classes"] = np.array(classes)
    arrays["source_sha256"] = np.array(hashlib.sha256(manifest_path.read_bytes()).hexdigest())
    return arrays
