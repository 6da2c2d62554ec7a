"""Shared fixtures: tiny real datasets made on the spot, and a local HTTP server to fetch them from.

No test touches the network: raw files are generated here in the real formats (gzipped IDX, the
bundled scikit-learn digits) and served from 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from convbench import data

# ---------------------------------------------------------------------------------- IDX datasets

IDX_TRAIN, IDX_TEST, IDX_SIZE, IDX_CLASSES = 20, 10, 28, 10


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (MNIST format); mtime 0 keeps the bytes fixed."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as file:
        file.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class IdxMirror:
    """A directory of generated raw files laid out like a torchvision mirror, and their content."""

    directory: Path
    resources: tuple[tuple[str, str], ...]  # (file name, md5), as in a DatasetSpec
    train_images: np.ndarray  # N x H x W, as stored in the IDX file
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def files(self) -> list[str]:
        return [name for name, _ in self.resources]


@pytest.fixture
def idx_mirror(tmp_path: Path) -> IdxMirror:
    """20 train and 10 test random 28x28 images in 10 classes, as the four Fashion-MNIST files."""
    rng = np.random.default_rng(0)
    directory = tmp_path / "mirror"
    directory.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(
            0, 256, (IDX_TRAIN, IDX_SIZE, IDX_SIZE), dtype=np.uint8
        ),
        "train-labels-idx1-ubyte.gz": np.arange(IDX_TRAIN, dtype=np.uint8) % IDX_CLASSES,
        "t10k-images-idx3-ubyte.gz": rng.integers(
            0, 256, (IDX_TEST, IDX_SIZE, IDX_SIZE), dtype=np.uint8
        ),
        "t10k-labels-idx1-ubyte.gz": rng.permutation(IDX_TEST).astype(np.uint8) % IDX_CLASSES,
    }
    for name, array in arrays.items():
        write_idx_gz(directory / name, array)
    return IdxMirror(
        directory=directory,
        resources=tuple((name, md5_of(directory / name)) for name in arrays),
        train_images=arrays["train-images-idx3-ubyte.gz"],
        train_labels=arrays["train-labels-idx1-ubyte.gz"],
        test_images=arrays["t10k-images-idx3-ubyte.gz"],
        test_labels=arrays["t10k-labels-idx1-ubyte.gz"],
    )


@pytest.fixture
def use_mirror(monkeypatch: pytest.MonkeyPatch, idx_mirror: IdxMirror) -> Callable[..., None]:
    """Point the real ``fashion_mnist`` spec at the generated files: their md5s, given mirrors.

    ``use_mirror(*mirrors)`` swaps in a copy of the registry entry, so download and prepare run
    their real code path, only with the tiny files' checksums. Undone after the test.
    """

    def point(*mirrors: str) -> None:
        spec = dataclasses.replace(
            data.DATASETS["fashion_mnist"], resources=idx_mirror.resources, mirrors=tuple(mirrors)
        )
        monkeypatch.setitem(data.DATASETS, "fashion_mnist", spec)

    return point


# ---------------------------------------------------------------------------------- HTTP serving


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path | type[BaseHTTPRequestHandler]], str]]:
    """``serve(directory_or_handler_class) -> base URL`` on 127.0.0.1, stopped after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(target: Path | type[BaseHTTPRequestHandler]) -> str:
        if isinstance(target, Path):
            handler: Callable[..., BaseHTTPRequestHandler] = functools.partial(
                _QuietFiles, directory=str(target)
            )
        else:
            handler = target
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        # a short poll interval keeps shutdown() (and so each test's teardown) quick
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits prepared once per session (real data, about a second). Read only."""
    root = tmp_path_factory.mktemp("digits")
    data.download("digits", root / "raw")
    return data.prepare("digits", root / "raw", root / "digits.npz")


@pytest.fixture(scope="session")
def digits(digits_npz: Path) -> data.Dataset:
    """The prepared digits, loaded. Shared: do not modify its arrays."""
    return data.load_prepared(digits_npz)
