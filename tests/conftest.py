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
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from convbench import datasets, download, prepare

# ---------------------------------------------------------------------------------- IDX datasets

IDX_TRAIN, IDX_TEST, IDX_SIZE, IDX_CLASSES = 20, 10, 28, 10


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (MNIST format); mtime 0 keeps the bytes fixed."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as file:
        file.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def regzip(source: Path, target: Path, change_byte_at: int | None = None) -> Path:
    """Write ``source``'s content re-gzipped another way (level 1, another header), as a
    distribution's package does; with ``change_byte_at``, one content byte is altered too."""
    content = bytearray(gzip.decompress(source.read_bytes()))
    if change_byte_at is not None:
        content[change_byte_at] ^= 0xFF
    target.write_bytes(gzip.compress(bytes(content), compresslevel=1, mtime=1234567890))
    return target


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def content_md5_of(path: Path) -> str:
    return hashlib.md5(gzip.decompress(path.read_bytes()), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class IdxMirror:
    """A directory of generated raw files laid out like a torchvision mirror, and their content."""

    directory: Path
    resources: tuple[tuple[str, str], ...]  # (file name, md5), as in a DatasetSpec
    content_md5: tuple[tuple[str, str], ...]  # (file name, md5 of the decompressed file)
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
        content_md5=tuple((name, content_md5_of(directory / name)) for name in arrays),
        train_images=arrays["train-images-idx3-ubyte.gz"],
        train_labels=arrays["train-labels-idx1-ubyte.gz"],
        test_images=arrays["t10k-images-idx3-ubyte.gz"],
        test_labels=arrays["t10k-labels-idx1-ubyte.gz"],
    )


@pytest.fixture
def use_mirror(monkeypatch: pytest.MonkeyPatch, idx_mirror: IdxMirror) -> Callable[..., None]:
    """Point the real ``fashion_mnist`` spec at the generated files: their md5s, given mirrors.

    ``use_mirror(*mirrors, local_copies=())`` swaps in a copy of the registry entry, so download
    and prepare run their real code path, only with the tiny files' checksums. No system copy (the
    real Debian package may be installed) and no ``$CONVBENCH_DATA_MIRRORS`` unless a test sets
    them. Undone after the test.
    """

    def point(*mirrors: str, local_copies: tuple[str, ...] = ()) -> None:
        spec = dataclasses.replace(
            datasets.DATASETS["fashion_mnist"],
            resources=idx_mirror.resources,
            content_md5=idx_mirror.content_md5,
            mirrors=tuple(mirrors),
            local_copies=local_copies,
        )
        monkeypatch.setitem(datasets.DATASETS, "fashion_mnist", spec)
        monkeypatch.delenv(datasets.MIRRORS_ENV, raising=False)

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
    download.download("digits", root / "raw")
    return prepare.prepare("digits", root / "raw", root / "digits.npz")


@pytest.fixture(scope="session")
def digits(digits_npz: Path) -> prepare.Dataset:
    """The prepared digits, loaded. Shared: do not modify its arrays."""
    return prepare.load_prepared(digits_npz)


# ------------------------------------------------------------------------- trained digits runs

DIGITS_FOLDS = 3
# A LeNet that learns digits in a fraction of a second per epoch (1 thread, ~900 training images).
TINY_TRAIN_ARGS = (
    "--arch", "lenet", "--set", "activation=relu", "--input-size", "16",
    "--recipe", "epochs=3", "--recipe", "batch_size=64", "--recipe", "lr=0.1", "--threads", "1",
)


@pytest.fixture(scope="session")
def digits_split(digits: prepare.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-fold split of the digits' train part, written as ``convbench split`` writes it."""
    from convbench.split import make_split, write_split

    return write_split(
        make_split(digits, DIGITS_FOLDS, seed=0), tmp_path_factory.mktemp("split") / "split.json"
    )


@dataclass(frozen=True)
class TrainedRun:
    """The files of one ``convbench train`` + ``convbench evaluate`` job."""

    out_dir: Path

    @property
    def model(self) -> Path:
        return self.out_dir / "model.pt"

    @property
    def history(self) -> Path:
        return self.out_dir / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.out_dir / "metrics.json"

    @property
    def perf(self) -> Path:
        return self.out_dir / "perf.json"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Train on one thread, as ``convbench train`` does by default: two threads on 2 busy cores
    thrash (seconds per tiny epoch instead of a tenth), and results depend on the thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _convbench_in_process(argv: list[str]) -> int:
    import torch

    from convbench import cli

    threads = torch.get_num_threads()  # train/evaluate set it from --threads
    try:
        return cli.main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def raiser() -> Callable[[Exception], Callable[..., Any]]:
    """``raiser(error)``: a stand-in for a function, raising ``error`` whatever it is called with
    (to plant a bug, or a CUDA failure, inside a command)."""

    def make(error: Exception) -> Callable[..., Any]:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise error

        return broken

    return make


@pytest.fixture(scope="session")
def convbench() -> Callable[[list[str]], int]:
    """``convbench(argv) -> exit code``: the real CLI in this process, without its start-up cost.

    torch's thread count, which ``--threads`` sets, is restored afterwards.
    """
    return _convbench_in_process


@pytest.fixture(scope="session")
def train_argv(digits_npz: Path, digits_split: Path) -> Callable[..., list[str]]:
    """``train_argv(out_dir, *extra, fold=0)``: the arguments of a tiny ``convbench train`` job
    on the digits, ``train`` included; ``extra`` come after TINY_TRAIN_ARGS, so they override."""

    def argv(out_dir: Path, *extra: str, fold: int = 0) -> list[str]:
        return [
            "train", "--data", str(digits_npz), "--split", str(digits_split), "--fold", str(fold),
            *TINY_TRAIN_ARGS, *extra, "--out-dir", str(out_dir),
        ]

    return argv


@pytest.fixture(scope="session")
def train_and_evaluate(
    digits_npz: Path, digits_split: Path, train_argv: Callable[..., list[str]]
) -> Callable[..., TrainedRun]:
    """``train_and_evaluate(out_dir, *extra, fold=0)``: ``convbench train`` (see ``train_argv``)
    then ``convbench evaluate``, in process; fails the test unless both exit 0."""

    def run(out_dir: Path, *extra: str, fold: int = 0) -> TrainedRun:
        assert _convbench_in_process(train_argv(out_dir, *extra, fold=fold)) == 0, "train failed"
        run = TrainedRun(out_dir)
        evaluate = [
            "evaluate", "--data", str(digits_npz), "--split", str(digits_split),
            "--checkpoint", str(run.model), "--out", str(run.metrics),
        ]
        assert _convbench_in_process(evaluate) == 0, "evaluate failed"
        return run

    return run


@pytest.fixture(scope="session")
def digits_run(
    train_and_evaluate: Callable[..., TrainedRun], tmp_path_factory: pytest.TempPathFactory
) -> TrainedRun:
    """Fold 0 of the digits trained and evaluated once per session. Read only."""
    return train_and_evaluate(tmp_path_factory.mktemp("run") / "fold0")


@pytest.fixture(scope="session")
def other_digits(digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Other data: a valid prepared file of the first 600 digits train images, and its split."""
    from convbench._io import write_npz_deterministic
    from convbench.split import make_split, write_split

    root = tmp_path_factory.mktemp("other")
    with np.load(digits_npz) as npz:
        arrays = {key: npz[key] for key in npz.files}
    for key in ("train_images", "train_labels"):
        arrays[key] = arrays[key][:600]
    path = write_npz_deterministic(root / "other.npz", arrays)
    split = make_split(prepare.load_prepared(path), DIGITS_FOLDS, seed=0)
    return path, write_split(split, root / "split.json")


@pytest.fixture(autouse=True)
def _no_project_networks_left() -> Iterator[None]:
    """A test that imports a project's network files (convbench.user_networks) leaves none
    registered for the next: the zoo's tests compare the registry with the catalogue."""
    yield
    from convbench import user_networks

    user_networks.forget_all()
