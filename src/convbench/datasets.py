"""The data sets convbench knows, where their raw files come from, and how a raw file is checked.

Each :class:`DatasetSpec` names a data set's classes, mirrors and published checksums. A raw file
is good if its bytes match the md5 torchvision publishes for the ``.gz`` file (its ``mirrors``,
``resources`` and ``classes`` are reused, never retyped), or if its decompressed content matches
the published md5 of the uncompressed IDX file: a re-gzipped copy, such as Debian's
``dataset-fashion-mnist``, holds the same data in another container. That content checksum is
written here rather than taken from a library (torchvision and pooch check a file's own bytes
only), because the copy this project can reach offline is re-gzipped.

``convbench download`` (:mod:`convbench.download`) fetches files and ``convbench prepare``
(:mod:`convbench.prepare`) reads them; both check them with the functions here.
"""

from __future__ import annotations

import hashlib
import http.client
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

import numpy as np

from convbench._io import CHUNK_BYTES
from convbench.errors import DataError

if TYPE_CHECKING:
    from convbench.study import Study

DIGITS_FILE = "digits.npz"
# Directories (or URLs) to look in before the network, separated like PATH. Each entry may hold a
# dataset's files directly or in a sub-directory named after the dataset.
MIRRORS_ENV = "CONVBENCH_DATA_MIRRORS"




def reason(exc: BaseException) -> str:
    """The readable part of an I/O error (URLError wraps the socket error in ``reason``)."""
    why = getattr(exc, "reason", None)
    return str(why if why is not None else exc) or type(exc).__name__


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
        for chunk in chunks(file):
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



def chunks(stream: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    except http.client.IncompleteRead as exc:  # the server closed the connection early
        yield exc.partial



def read_digits_raw(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as raw:
            images, target = raw["images"], raw["target"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a digits raw file ({reason(exc)})") from None
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



def expected_errors() -> tuple[type[BaseException], ...]:
    """What a user of download and prepare can cause and fix (one line, exit 1); anything else, a
    ValueError included, is a bug and keeps its traceback."""
    from convbench.study import StudyError

    return (DataError, StudyError, OSError)


def load_study_checked(path: Path) -> Study:
    """The whole study, checked before any data moves: a bad value stops the first stage."""
    from convbench.study import load_study

    return load_study(path)


def names_help() -> str:
    names = "; ".join(f"{name} ({spec.summary})" for name, spec in sorted(DATASETS.items()))
    return "one of: " + names.replace("%", "%%")  # argparse %-formats help strings
