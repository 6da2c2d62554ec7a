"""Prepared datasets in memory: what every stage after ``prepare`` reads.

Kept apart from :mod:`convbench.data` (downloads) so that training and evaluation jobs do not pay
for importing torchvision at start-up.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convbench._io import sha256_file

PREPARED_KEYS = (
    "name",
    "train_images",
    "train_labels",
    "test_images",
    "test_labels",
    "classes",
    "source_sha256",
)


class DataError(Exception):
    """A dataset file is missing, unreachable, corrupt, or not the data it claims to be."""



def reason(exc: BaseException) -> str:
    """The readable part of an I/O error (URLError wraps the socket error in ``reason``)."""
    why = getattr(exc, "reason", None)
    return str(why if why is not None else exc) or type(exc).__name__


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A prepared dataset in memory. ``sha256`` (of the ``.npz`` bytes) is the data checksum
    recorded by every split, checkpoint and result."""

    name: str
    train_images: np.ndarray  # uint8, N x C x H x W
    train_labels: np.ndarray  # int64, N
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source_sha256: str
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        """Height (= width) of the images."""
        return int(self.train_images.shape[2])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"{self.in_channels}x{self.image_size}x{self.image_size}, "
            f"classes={self.num_classes}, sha256={self.sha256[:12]})"
        )


def load_prepared(path: str | Path) -> Dataset:
    """Load and validate a file written by :func:`prepare`; errors name the path."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in PREPARED_KEYS if key not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: not a prepared dataset, missing {', '.join(missing)}; "
                    "make it with 'convbench prepare'"
                )
            arrays = {key: npz[key] for key in PREPARED_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read prepared dataset ({reason(exc)})") from None
    check_prepared(path, arrays)
    return Dataset(
        name=str(arrays["name"]),
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
        classes=[str(c) for c in arrays["classes"]],
        source_sha256=str(arrays["source_sha256"]),
        sha256=sha256_file(path),
    )


def check_prepared(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The one definition of a valid prepared file: :func:`prepare` checks before writing,
    :func:`load_prepared` after reading."""

    def fail(problem: str) -> None:
        raise DataError(f"{path}: invalid prepared dataset: {problem}")

    for key in ("name", "source_sha256"):
        if arrays[key].dtype.kind != "U" or arrays[key].ndim != 0:
            fail(f"{key} must be a 0-d string array")
    classes = arrays["classes"]
    if classes.dtype.kind != "U" or classes.ndim != 1 or len(classes) < 2:
        fail("classes must be a 1-d string array of at least two names")
    train_shape = arrays["train_images"].shape
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
            fail(f"{part}_images must be uint8 N x C x H x H, got {images.dtype} {images.shape}")
        if images.shape[1:] != train_shape[1:]:
            fail(f"{part}_images are {images.shape[1:]} but train_images are {train_shape[1:]}")
        if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
            fail(
                f"{part}_labels must be int64 of shape {images.shape[:1]}, "
                f"got {labels.dtype} {labels.shape}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            fail(f"{part}_labels must lie in 0..{len(classes) - 1}")
