"""``convbench prepare``: one compact, byte-reproducible array file per data set, and loading it back.

:func:`prepare` turns the raw files into one uncompressed ``.npz`` of uint8 images (N, 1, H, W)
and int64 labels whose bytes depend only on the data (never on the gzip container it came in), so
its sha256 identifies the data: every split, checkpoint and result records it.
:func:`load_prepared` reads that file back as a :class:`Dataset`, validated; every stage after
``prepare`` reads its data through it.

``digits`` is scikit-learn's bundled 8x8 digits (1797 real images, no network). It has no official
test set, so :func:`prepare` holds out a fixed, stratified 25% (``train_test_split`` with
``random_state=0``) as its test set. Like the official test sets of the other datasets, that
hold-out is never used for training or model selection: folds are cut from the train part only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from convbench._io import run_cli, sha256_file, write_npz_deterministic
from convbench.datasets import (
    DATASETS,
    DIGITS_FILE,
    ChecksumError,
    DataError,
    DatasetSpec,
    checksum_problem,
    chunks,
    digest_file,
    expected_errors,
    get_spec,
    load_study_checked,
    match_checksum,
    names_help,
    read_digits_raw,
    reason,
)

DIGITS_TEST_SIZE = 0.25
DIGITS_SPLIT_SEED = 0

PREPARED_KEYS = (
    "name",
    "train_images",
    "train_labels",
    "test_images",
    "test_labels",
    "classes",
    "source_sha256",
)



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


def prepare(name: str, raw_dir: str | Path, out_path: str | Path) -> Path:
    """Turn the raw files in ``raw_dir`` into one ``.npz`` at ``out_path``; return its path.

    The file holds ``name``, ``train_images``/``test_images`` (uint8, N x 1 x H x W),
    ``train_labels``/``test_labels`` (int64), ``classes`` and ``source_sha256`` (see
    :func:`source_sha256`: it depends on the files' content, not on their gzip container). Same
    data in, same bytes out, whether the files came from the official mirrors, a re-gzipped system
    copy or a hand-filled directory, so the file's own sha256 (``Dataset.sha256``) is a stable name
    for the data. Raw files are verified first (:func:`match_checksum`), so a stale or hand-edited
    directory cannot slip through.
    """
    spec = get_spec(name)
    raw_dir = Path(raw_dir)
    out_path = Path(out_path)
    paths = [raw_dir / file for file in spec.raw_files]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DataError(
            f"{raw_dir}: missing raw file(s) {', '.join(missing)}; "
            f"run 'convbench download {name} --out {raw_dir}' first"
        )
    for file, _ in spec.resources:
        digests = digest_file(raw_dir / file)
        if match_checksum(spec, file, digests) is None:
            raise ChecksumError(
                f"{raw_dir / file}: {file} failed its checksum "
                f"({checksum_problem(spec, file, digests)}); download it again"
            )

    arrays = (
        _read_digits(raw_dir / DIGITS_FILE) if not spec.resources else _read_idx_set(spec, raw_dir)
    )
    arrays["name"] = np.array(spec.name)
    arrays["classes"] = np.array(spec.classes)
    arrays["source_sha256"] = np.array(source_sha256(paths))
    check_prepared(out_path, arrays)
    return write_npz_deterministic(out_path, arrays)


def source_sha256(paths: Sequence[Path]) -> str:
    """sha256 of ``sha256sum``-style lines for the raw files' content, in sorted name order.

    A ``.gz`` file counts by its decompressed bytes, under its name without ``.gz``, so a
    re-gzipped copy of the same data gives the same value. By hand, in the raw directory:
    ``gunzip -k *.gz && sha256sum $(ls | grep -v '\\.gz$' | sort) | sha256sum`` (or ``sha256sum
    digits.npz | sha256sum`` for digits).
    """
    lines = "".join(
        f"{content_sha256(path)}  {content_name(path)}\n"
        for path in sorted(paths, key=content_name)
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def content_name(path: Path) -> str:
    return path.name.removesuffix(".gz")


def content_sha256(path: Path) -> str:
    """sha256 of a raw file's content: the decompressed bytes of a ``.gz`` file, else the bytes."""
    if path.suffix != ".gz":
        return sha256_file(path)
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as file:
            for chunk in chunks(file):
                digest.update(chunk)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({reason(exc)})") from None
    return digest.hexdigest()


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with ``ndim`` dimensions (the MNIST format).

    Header: two zero bytes, type code 0x08 (uint8), the number of dimensions, then each dimension
    as a big-endian uint32. The payload must be exactly as long as the header says.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as exc:  # BadGzipFile is an OSError; EOFError: truncated gzip
        raise DataError(f"{path}: not a readable gzip file ({reason(exc)})") from None
    magic = bytes([0, 0, 0x08, ndim])
    if data[:4] != magic:
        raise DataError(
            f"{path}: bad IDX magic number {data[:4].hex()}, expected {magic.hex()} "
            f"({ndim}-d unsigned bytes)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: IDX header cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(shape):
        raise DataError(
            f"{path}: IDX header says shape {shape} ({math.prod(shape)} bytes), "
            f"but the payload has {len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_idx_set(spec: DatasetSpec, raw_dir: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images_path = raw_dir / _resource(spec, f"{prefix}-images")
        labels_path = raw_dir / _resource(spec, f"{prefix}-labels")
        images = read_idx(images_path, ndim=3)  # N x H x W
        labels = read_idx(labels_path, ndim=1)
        if len(images) != len(labels):
            raise DataError(
                f"{images_path.name} has {len(images)} images "
                f"but {labels_path.name} has {len(labels)} labels"
            )
        arrays[f"{part}_images"] = images[:, None]  # N x 1 x H x W
        arrays[f"{part}_labels"] = labels.astype(np.int64)
    return arrays


def _resource(spec: DatasetSpec, prefix: str) -> str:
    matches = [file for file, _ in spec.resources if file.startswith(prefix)]
    if len(matches) != 1:
        raise DataError(
            f"dataset {spec.name!r}: expected one raw file named {prefix}*, found {matches}"
        )
    return matches[0]


def _read_digits(path: Path) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    images, labels = read_digits_raw(path)
    scaled = np.round(images.astype(np.float64) * 255 / 16).astype(np.uint8)[
        :, None
    ]  # N x 1 x 8 x 8
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    train, test = np.sort(train), np.sort(test)  # keep the original order within each part
    return {
        "train_images": scaled[train],
        "train_labels": labels[train],
        "test_images": scaled[test],
        "test_labels": labels[test],
    }



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench prepare",
        description="Turn a dataset's raw files into one byte-reproducible .npz of uint8 images "
        "and int64 labels. Prints 'sha256  path' of the result (the data checksum). With --study, "
        "the study is checked first and gives the data set and both paths.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", choices=sorted(DATASETS), help=names_help())
    parser.add_argument("--study", type=Path, metavar="FILE",
                        help="a study file (params.yaml): data set and paths from it")
    parser.add_argument("--raw", type=Path, metavar="DIR", help="directory from 'convbench download'")
    parser.add_argument("--out", type=Path, metavar="FILE.npz", help="prepared file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``convbench prepare NAME --raw DIR --out FILE.npz``, or ``convbench prepare --study
    params.yaml`` for the study's data set, from and to where the pipeline keeps it."""
    parser = build_parser()

    def action(args: argparse.Namespace) -> None:
        if args.study is None:
            if args.name is None or args.raw is None or args.out is None:
                parser.error("give NAME, --raw DIR and --out FILE.npz (or --study FILE)")
            name, raw, out = args.name, args.raw, args.out
        else:
            if args.name is not None or args.raw is not None or args.out is not None:
                parser.error("--study takes the data set and the paths from the study: drop NAME, --raw and --out")
            study = load_study_checked(args.study)
            name, raw, out = study.dataset, Path(study.raw_dir), Path(study.prepared_path)
            if study.images:  # a folder of the project's own images (convbench.imagefolder)
                from convbench.imagefolder import folder_arrays

                arrays = folder_arrays(raw, study.folds)
                check_prepared(out, arrays)
                path = write_npz_deterministic(out, arrays)
                print(f"{sha256_file(path)}  {path}")
                return
        path = prepare(name, raw, out)
        print(f"{sha256_file(path)}  {path}")

    return run_cli(parser, argv, action, expected=expected_errors())


