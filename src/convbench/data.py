"""Datasets: fetch raw files verified by checksum, prepare one compact array file, load it back.

Three stages, each a pure function plus a thin CLI:

- :func:`download` puts a dataset's raw files in a directory, each verified: either its bytes match
  the md5 torchvision publishes for the ``.gz`` file (its ``mirrors``, ``resources`` and
  ``classes`` are reused, never retyped), or its decompressed content matches the published md5 of
  the uncompressed IDX file (a re-gzipped copy, such as Debian's ``dataset-fashion-mnist``, holds
  the same data in another container). Known local copies are tried before the network. Nothing
  unverified ever appears under a final name, so a directory filled by hand (or by an earlier run)
  is as good as a download and works without network.
- :func:`prepare` turns the raw files into one uncompressed ``.npz`` of uint8 images (N, 1, H, W)
  and int64 labels whose bytes depend only on the data (never on the gzip container it came in),
  so its sha256 identifies the data: every split, checkpoint and result records it.
- :func:`load_prepared` reads that file back as a :class:`Dataset`, validated.

``digits`` is scikit-learn's bundled 8x8 digits (1797 real images, no network). It has no official
test set, so :func:`prepare` holds out a fixed, stratified 25% (``train_test_split`` with
``random_state=0``) as its test set. Like the official test sets of the other datasets, that
hold-out is never used for training or model selection: folds are cut from the train part only.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterator, Sequence
from urllib.parse import urljoin, urlsplit
from urllib.request import Request, urlopen

import numpy as np
from tqdm.auto import tqdm

from convbench import __version__
from convbench._io import CHUNK_BYTES, atomic_write, run_cli, sha256_file, write_npz_deterministic
from convbench.prepared import DataError, Dataset, check_prepared, load_prepared
from convbench.prepared import reason as _reason

if TYPE_CHECKING:
    from convbench.study import Study

__all__ = ["DATASETS", "ChecksumError", "DataError", "Dataset", "download", "load_prepared", "prepare"]

DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: a dead mirror fails fast, a slow one still works
URL_SCHEMES = ("http", "https", "file")
DIGITS_FILE = "digits.npz"
DIGITS_TEST_SIZE = 0.25
DIGITS_SPLIT_SEED = 0
# Directories (or URLs) to look in before the network, separated like PATH. Each entry may hold a
# dataset's files directly or in a sub-directory named after the dataset.
MIRRORS_ENV = "CONVBENCH_DATA_MIRRORS"

# md5 of each *decompressed* raw file. A copy that was re-gzipped (another compression level,
# header or tool) has another .gz md5 but the same content. Fashion-MNIST: the md5s of the
# uncompressed IDX files of Zalando's release (the .gz files whose md5s torchvision publishes),
# as public loaders record them (e.g. loaders that check `raw_data` next to torchvision's
# `resources`); the files of Debian's `dataset-fashion-mnist` match them (checked 2026-11-23).
# MNIST and KMNIST: their publishers (yann.lecun.com/exdb/mnist, github.com/rois-codh/kmnist) give
# no checksums of the uncompressed files that we could find and cite, so their files are verified
# by the .gz md5 alone until a citable source is added here.
CONTENT_MD5: dict[str, tuple[tuple[str, str], ...]] = {
    "fashion_mnist": (
        ("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
        ("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
        ("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
}
# Where distributions install a data set (Debian: `apt-get install dataset-fashion-mnist`).
SYSTEM_COPIES: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}


class ChecksumError(DataError):
    """A file's bytes do not match its published checksum (corrupt, truncated or tampered)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's raw files come from and how to check them.

    ``resources`` are (file name, md5 of the file) pairs fetched from one of ``mirrors``; an empty
    tuple means the raw data is bundled with scikit-learn (``digits``). ``content_md5`` are (file
    name, md5 of the decompressed file) pairs, where published. ``local_copies`` are directories
    where a system package installs the files.
    """

    name: str
    summary: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...] = ()
    resources: tuple[tuple[str, str], ...] = ()
    content_md5: tuple[tuple[str, str], ...] = ()
    local_copies: tuple[str, ...] = ()

    @property
    def raw_files(self) -> tuple[str, ...]:
        """File names :func:`download` writes and :func:`prepare` reads."""
        return tuple(name for name, _ in self.resources) or (DIGITS_FILE,)


# torchvision's own description of the IDX data sets (torchvision/datasets/mnist.py of 0.29.1:
# ``classes``, ``mirrors``, ``resources``: file name and md5 of the .gz), copied so that download and
# prepare start without importing torch (seconds per job); tests/test_data.py holds the copy equal
# to torchvision's.
TORCHVISION_IDX: dict[str, dict[str, tuple]] = {
    "fashion_mnist": {  # torchvision.datasets.FashionMNIST
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot"),
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "resources": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                      ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                      ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                      ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    },
    "mnist": {  # torchvision.datasets.MNIST
        "classes": ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five",
                    "6 - six", "7 - seven", "8 - eight", "9 - nine"),
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        "resources": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                      ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                      ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                      ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    },
    "kmnist": {  # torchvision.datasets.KMNIST
        "classes": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        "mirrors": ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        "resources": (("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
                      ("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
                      ("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
                      ("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134")),
    },
}


def _idx_spec(name: str, summary: str) -> DatasetSpec:
    published = TORCHVISION_IDX[name]
    return DatasetSpec(
        name=name,
        summary=summary,
        classes=published["classes"],
        mirrors=published["mirrors"],
        resources=published["resources"],
        content_md5=CONTENT_MD5.get(name, ()),
        local_copies=SYSTEM_COPIES.get(name, ()),
    )


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": _idx_spec("fashion_mnist", "Zalando's 28x28 clothing images, 60k train / 10k test"),
    "mnist": _idx_spec("mnist", "handwritten digits, 28x28, 60k train / 10k test"),
    "kmnist": _idx_spec("kmnist", "Kuzushiji (cursive Japanese) characters, 28x28, 60k train / 10k test"),
    "digits": DatasetSpec(
        name="digits",
        summary="scikit-learn's bundled 8x8 digits, 1797 images; fixed stratified 25% test set",
        classes=tuple(str(digit) for digit in range(10)),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``, or a ValueError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None


# --------------------------------------------------------------------------------------- download


def download(
    name: str,
    out_dir: str | Path,
    mirror: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> list[Path]:
    """Make ``out_dir`` hold the dataset's raw files, each verified; return their paths.

    A file already there that passes :func:`match_checksum` is kept untouched (so a directory
    filled by hand works offline, and its modification time does not trigger pipeline reruns).
    Otherwise each source is tried in turn: ``mirror`` alone if given (an http/https/file URL or a
    local directory); else local copies first (the entries of ``$CONVBENCH_DATA_MIRRORS``, then
    the directories a system package installs, such as Debian's), then torchvision's mirrors. A
    download streams into a temporary file that is renamed into place only after it verified; on
    any failure, Ctrl-C included, the temporary file is removed. ``say`` receives one line per file
    telling where it came from and which checksum it matched.

    ``digits`` needs no network (``mirror`` is ignored): its raw file is scikit-learn's bundled
    copy, written as ``digits.npz`` (uint8 images 0..16 and int64 targets), rewritten only if its
    content differs; :func:`prepare` records its sha256 in ``source_sha256``.
    """
    spec = get_spec(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not spec.resources:
        return [_write_digits_raw(out_dir / DIGITS_FILE)]
    if mirror is not None and not _is_url(str(mirror)) and not Path(mirror).is_dir():
        raise DataError(
            f"mirror {str(mirror)!r} is neither a URL ({', '.join(URL_SCHEMES)}) "
            "nor an existing directory"
        )
    sources = [str(mirror)] if mirror is not None else [*local_sources(spec), *spec.mirrors]
    return [
        _fetch_verified(spec, file, out_dir, sources, progress, say or (lambda line: None))
        for file, _ in spec.resources
    ]


def local_sources(spec: DatasetSpec) -> list[str]:
    """Local copies to try before the network: ``$CONVBENCH_DATA_MIRRORS``, then system copies.

    A directory entry of the variable is used as ``DIR/<dataset>`` when that exists (one variable
    can serve several data sets), else as ``DIR``. Directories that do not exist are skipped.
    """
    found: list[str] = []
    for entry in filter(None, os.environ.get(MIRRORS_ENV, "").split(os.pathsep)):
        if _is_url(entry):
            found.append(entry)
        elif (Path(entry) / spec.name).is_dir():
            found.append(str(Path(entry) / spec.name))
        elif Path(entry).is_dir():
            found.append(entry)
    found += [directory for directory in spec.local_copies if Path(directory).is_dir()]
    return list(dict.fromkeys(found))


def _is_url(text: str) -> bool:
    return urlsplit(text).scheme in URL_SCHEMES


class RawDigests:
    """md5 of a raw file's bytes and of its gzip-decompressed content, fed chunk by chunk.

    Streaming both keeps a download to one pass and little memory. Concatenated gzip members are
    one payload, as ``gzip.open`` reads them.
    """

    def __init__(self) -> None:
        self._raw = hashlib.md5(usedforsecurity=False)
        self._content = hashlib.md5(usedforsecurity=False)
        self._inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self._members = 0  # complete gzip members seen
        self._in_member = False  # bytes of an unfinished member have been fed
        self._is_gzip = True
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._raw.update(chunk)
        self.size += len(chunk)
        while chunk and self._is_gzip:
            try:
                self._content.update(self._inflate.decompress(chunk))
            except zlib.error:
                self._is_gzip = False
                return
            self._in_member = not self._inflate.eof
            if not self._inflate.eof:
                return
            self._members += 1  # a member ended; any bytes left over start the next one
            chunk = self._inflate.unused_data
            self._inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)

    @property
    def md5(self) -> str:
        return self._raw.hexdigest()

    @property
    def content_md5(self) -> str | None:
        """md5 of the decompressed bytes; None unless the bytes are complete gzip data."""
        if not self._is_gzip or self._members == 0 or self._in_member:
            return None
        return self._content.hexdigest()


def digest_file(path: Path) -> RawDigests:
    digests = RawDigests()
    with open(path, "rb") as file:
        for chunk in _chunks(file):
            digests.update(chunk)
    return digests


def match_checksum(spec: DatasetSpec, file: str, digests: RawDigests) -> str | None:
    """Which published checksum ``file``'s digests match, in words ("the published md5" of the
    file, or "the published md5 of its decompressed content"), or None if neither."""
    if digests.md5 == dict(spec.resources).get(file):
        return "the published md5"
    content = dict(spec.content_md5).get(file)
    if content is not None and digests.content_md5 == content:
        return "the published md5 of its decompressed content"
    return None


def checksum_problem(spec: DatasetSpec, file: str, digests: RawDigests) -> str:
    """Why ``file`` failed: the md5s found and the ones expected."""
    expected = f"expected {dict(spec.resources)[file]}"
    content = dict(spec.content_md5).get(file)
    if content is not None:
        found = digests.content_md5 or "not gzip data"
        expected += f", or decompressed content {content} (found {found})"
    return f"md5 {digests.md5}, {expected}"


def _fetch_verified(
    spec: DatasetSpec,
    file: str,
    out_dir: Path,
    sources: list[str],
    progress: bool,
    say: Callable[[str], None],
) -> Path:
    target = out_dir / file
    stale = ""
    if target.is_file():
        digests = digest_file(target)
        matched = match_checksum(spec, file, digests)
        if matched:
            say(f"{file}: already in {out_dir}, matches {matched}")
            return target
        stale = f" ({target} exists but failed its checksum, so it was not used)"

    failures: list[str] = []
    checksum_failed = False
    for base in sources:
        location = (
            urljoin(base.rstrip("/") + "/", file) if _is_url(base) else str(Path(base) / file)
        )
        try:
            with _open_source(location) as (stream, size):
                digests = RawDigests()
                verified_copy = functools.partial(
                    _copy_verified,
                    stream=stream,
                    size=size,
                    spec=spec,
                    file=file,
                    location=location,
                    progress=progress,
                    digests=digests,
                )
                atomic_write(target, verified_copy)
            say(f"{file}: from {location}, matches {match_checksum(spec, file, digests)}")
            return target
        except ChecksumError as exc:
            checksum_failed = True
            failures.append(str(exc))
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
            failures.append(f"{location} ({_reason(exc)})")

    message = (
        f"could not get a verified {file}{stale}; tried {'; '.join(failures) or 'no sources'}. "
        f"Use --mirror URL_OR_DIR (a URL or directory holding {', '.join(spec.raw_files)}), "
        f"list such directories in ${MIRRORS_ENV}, or put those files in {out_dir} yourself"
    )
    raise (ChecksumError if checksum_failed else DataError)(message)


@contextmanager
def _open_source(location: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """Open a URL or a local file for streaming; also yield its size where the source says it."""
    if not _is_url(location):
        with open(location, "rb") as file:
            yield file, Path(location).stat().st_size
        return
    request = Request(location, headers={"User-Agent": f"convbench/{__version__}"})
    with urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length", "")
        yield response, int(length) if length.isdigit() else None


def _copy_verified(
    out: IO[bytes],
    *,
    stream: IO[bytes],
    size: int | None,
    spec: DatasetSpec,
    file: str,
    location: str,
    progress: bool,
    digests: RawDigests,
) -> None:
    """Copy ``stream`` to ``out``, feeding ``digests``; raise ChecksumError (nothing is kept)
    unless it verifies."""
    with tqdm(
        total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=file, disable=not progress
    ) as bar:
        for chunk in _chunks(stream):
            out.write(chunk)
            digests.update(chunk)
            bar.update(len(chunk))
    truncated = size is not None and digests.size != size
    matched = None if truncated else match_checksum(spec, file, digests)
    if matched is None:
        detail = f"; received {digests.size} of {size} bytes" if truncated else ""
        raise ChecksumError(
            f"{location}: {file} failed its checksum ({checksum_problem(spec, file, digests)}{detail})"
        )


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    except http.client.IncompleteRead as exc:  # the server closed the connection early
        yield exc.partial


def _write_digits_raw(path: Path) -> Path:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # the values are the integers 0..16
    target = bunch.target.astype(np.int64)
    if path.is_file():
        try:
            old_images, old_target = _read_digits_raw(path)
        except DataError:
            pass
        else:
            if np.array_equal(old_images, images) and np.array_equal(old_target, target):
                return path  # untouched: same data, same modification time
    return write_npz_deterministic(path, {"images": images, "target": target})


def _read_digits_raw(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as raw:
            images, target = raw["images"], raw["target"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a digits raw file ({_reason(exc)})") from None
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:] != (8, 8)
        or images.max(initial=0) > 16
        or target.shape != images.shape[:1]
    ):
        raise DataError(
            f"{path}: expected uint8 images (N, 8, 8) valued 0..16 and N targets, "
            f"got {images.dtype} {images.shape} and {target.shape}"
        )
    return images, target.astype(np.int64)


# ---------------------------------------------------------------------------------------- prepare


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
            for chunk in _chunks(file):
                digest.update(chunk)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({_reason(exc)})") from None
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
        raise DataError(f"{path}: not a readable gzip file ({_reason(exc)})") from None
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

    images, labels = _read_digits_raw(path)
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


# ------------------------------------------------------------------------------------------- CLIs


def download_main(argv: Sequence[str] | None = None) -> int:
    """``convbench download NAME --out DIR [--mirror URL_OR_DIR] [--no-progress]``, or
    ``convbench download --study params.yaml`` for the study's data set, where the pipeline reads it."""
    parser = argparse.ArgumentParser(
        prog="convbench download",
        description="Put a dataset's raw files in a directory, each verified by its checksum "
        "(of the file, or of its decompressed content). Without --mirror, local copies are tried "
        f"before the network: the directories in ${MIRRORS_ENV} (separated by "
        f"'{os.pathsep}'), then where a system package installs the data (Debian's "
        "dataset-fashion-mnist). Prints 'sha256  path' per file; where each file came from "
        "goes to stderr. With --study, the study is checked first and gives the data set, the "
        "mirror and the directory.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", choices=sorted(DATASETS), help=_names_help())
    parser.add_argument("--study", type=Path, metavar="FILE",
                        help="a study file (params.yaml): data set, mirror and directory from it")
    parser.add_argument("--out", type=Path, metavar="DIR", help="raw-file directory")
    parser.add_argument(
        "--mirror",
        metavar="URL_OR_DIR",
        help="fetch from this URL (http, https, file) or local directory only",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")

    def action(args: argparse.Namespace) -> None:
        if args.study is None:
            if args.name is None or args.out is None:
                parser.error("give NAME and --out DIR (or --study FILE)")
            name, out, mirror = args.name, args.out, args.mirror
        else:
            if args.name is not None or args.out is not None:
                parser.error("--study takes the data set and the directory from the study: drop NAME and --out")
            study = _load_study(args.study)
            name, out, mirror = study.dataset, Path(study.raw_dir), args.mirror or study.mirror
        for path in download(
            name,
            out,
            mirror=mirror,
            progress=not args.no_progress,
            say=lambda line: print(f"convbench download: {line}", file=sys.stderr),
        ):
            print(f"{sha256_file(path)}  {path}")

    return run_cli(parser, argv, action, expected=_expected_errors())


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """``convbench prepare NAME --raw DIR --out FILE.npz``, or ``convbench prepare --study
    params.yaml`` for the study's data set, from and to where the pipeline keeps it."""
    parser = argparse.ArgumentParser(
        prog="convbench prepare",
        description="Turn a dataset's raw files into one byte-reproducible .npz of uint8 images "
        "and int64 labels. Prints 'sha256  path' of the result (the data checksum). With --study, "
        "the study is checked first and gives the data set and both paths.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", choices=sorted(DATASETS), help=_names_help())
    parser.add_argument("--study", type=Path, metavar="FILE",
                        help="a study file (params.yaml): data set and paths from it")
    parser.add_argument("--raw", type=Path, metavar="DIR", help="directory from 'convbench download'")
    parser.add_argument("--out", type=Path, metavar="FILE.npz", help="prepared file to write")

    def action(args: argparse.Namespace) -> None:
        if args.study is None:
            if args.name is None or args.raw is None or args.out is None:
                parser.error("give NAME, --raw DIR and --out FILE.npz (or --study FILE)")
            name, raw, out = args.name, args.raw, args.out
        else:
            if args.name is not None or args.raw is not None or args.out is not None:
                parser.error("--study takes the data set and the paths from the study: drop NAME, --raw and --out")
            study = _load_study(args.study)
            name, raw, out = study.dataset, Path(study.raw_dir), Path(study.prepared_path)
        path = prepare(name, raw, out)
        print(f"{sha256_file(path)}  {path}")

    return run_cli(parser, argv, action, expected=_expected_errors())


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a user of download and prepare can cause and fix (one line, exit 1); anything else, a
    ValueError included, is a bug and keeps its traceback."""
    from convbench.study import StudyError

    return (DataError, StudyError, OSError)


def _load_study(path: Path) -> Study:
    """The whole study, checked before any data moves: a bad value stops the first stage."""
    from convbench.study import load_study

    return load_study(path)


def _names_help() -> str:
    names = "; ".join(f"{name} ({spec.summary})" for name, spec in sorted(DATASETS.items()))
    return "one of: " + names.replace("%", "%%")  # argparse %-formats help strings
