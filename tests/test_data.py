"""Download, prepare and load, on generated IDX files served from 127.0.0.1 and the real digits."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from sklearn.datasets import load_digits

from convbench import cli, datasets, download, prepare
from convbench._io import atomic_write, sha256_file, write_npz_deterministic

from conftest import IdxMirror, md5_of, regzip, write_idx_gz


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# -------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("fashion_mnist", torchvision.datasets.FashionMNIST),
        ("mnist", torchvision.datasets.MNIST),
        ("kmnist", torchvision.datasets.KMNIST),
    ],
)
def test_specs_are_torchvisions_metadata(name: str, source: type) -> None:
    """datasets.TORCHVISION_IDX is a copy (so download starts without torch): it must stay torchvision's."""
    spec = datasets.DATASETS[name]
    assert spec.resources == tuple(tuple(resource) for resource in source.resources)
    assert spec.mirrors == tuple(source.mirrors)
    assert spec.classes == tuple(source.classes)
    assert len(spec.raw_files) == 4


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(ValueError, match="fashion_mnist") as info:
        download.download("cifar", "unused")
    assert "digits" in str(info.value)


# -------------------------------------------------------------------------------------- download


def test_download_from_http_mirror(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve
) -> None:
    use_mirror(serve(idx_mirror.directory))
    out = tmp_path / "raw"
    paths = download.download("fashion_mnist", out, progress=False)
    assert [path.name for path in paths] == idx_mirror.files
    for path in paths:
        assert path.read_bytes() == (idx_mirror.directory / path.name).read_bytes()
    assert leftovers(out) == sorted(idx_mirror.files)  # no temporary files


def test_download_tries_mirrors_in_order(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve, closed_port_url: str
) -> None:
    use_mirror(closed_port_url, serve(idx_mirror.directory))
    paths = download.download("fashion_mnist", tmp_path / "raw", progress=False)
    assert all(
        md5_of(path) == md5 for path, (_, md5) in zip(paths, idx_mirror.resources, strict=True)
    )


@pytest.mark.parametrize("kind", ["directory", "file_url", "http_url"])
def test_explicit_mirror_overrides_spec(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve, closed_port_url: str, kind: str
) -> None:
    use_mirror(closed_port_url)  # the spec's own mirror is dead: only --mirror can work
    mirror = {
        "directory": lambda: str(idx_mirror.directory),
        "file_url": lambda: idx_mirror.directory.as_uri(),
        "http_url": lambda: serve(idx_mirror.directory).rstrip("/"),  # trailing slash optional
    }[kind]()
    out = tmp_path / "raw"
    download.download("fashion_mnist", out, mirror=mirror, progress=False)
    assert leftovers(out) == sorted(idx_mirror.files)


def tamper(path: Path) -> None:
    """Flip a byte of the gzip trailer's CRC: neither the file's md5 nor its content verifies.
    (A flipped byte in the header's file name would leave the content, and so the data, intact.)"""
    content = bytearray(path.read_bytes())
    content[-6] ^= 0xFF
    path.write_bytes(bytes(content))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [tamper, truncate])
def test_damaged_file_is_rejected_and_not_kept(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve, damage
) -> None:
    first = idx_mirror.files[0]
    damage(idx_mirror.directory / first)
    use_mirror(serve(idx_mirror.directory))
    out = tmp_path / "raw"
    with pytest.raises(datasets.ChecksumError) as info:
        download.download("fashion_mnist", out, progress=False)
    assert "checksum" in str(info.value)
    assert first in str(info.value)
    assert leftovers(out) == []  # neither the file nor a temporary file


class _CutShort(BaseHTTPRequestHandler):
    """Promises 1000 bytes, sends 10, hangs up: a connection dropped mid-transfer."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_transfer_cut_short_is_rejected(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve
) -> None:
    use_mirror(serve(_CutShort))
    out = tmp_path / "raw"
    with pytest.raises(datasets.ChecksumError, match="checksum") as info:
        download.download("fashion_mnist", out, progress=False)
    assert "10 of 1000 bytes" in str(info.value)
    assert idx_mirror.files[0] in str(info.value)
    assert leftovers(out) == []


def test_unreachable_mirror_names_url_and_remedy(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, closed_port_url: str
) -> None:
    use_mirror(closed_port_url)
    with pytest.raises(datasets.DataError) as info:
        download.download("fashion_mnist", tmp_path / "raw", progress=False)
    message = str(info.value)
    assert closed_port_url + idx_mirror.files[0] in message
    assert "--mirror URL_OR_DIR" in message
    assert all(name in message for name in idx_mirror.files)  # what to pre-fill the directory with
    assert "\n" not in message
    assert leftovers(tmp_path / "raw") == []


def test_prefilled_directory_needs_no_network(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, closed_port_url: str
) -> None:
    use_mirror(closed_port_url)
    out = shutil.copytree(idx_mirror.directory, tmp_path / "raw")
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    download.download("fashion_mnist", out, progress=False)
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def test_stale_file_is_replaced_by_a_verified_one(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve
) -> None:
    use_mirror(serve(idx_mirror.directory))
    out = shutil.copytree(idx_mirror.directory, tmp_path / "raw")
    tamper(out / idx_mirror.files[1])
    download.download("fashion_mnist", out, progress=False)
    assert md5_of(out / idx_mirror.files[1]) == idx_mirror.resources[1][1]


def test_stale_file_is_reported_when_no_source_works(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, closed_port_url: str
) -> None:
    use_mirror(closed_port_url)
    out = shutil.copytree(idx_mirror.directory, tmp_path / "raw")
    tamper(out / idx_mirror.files[2])
    with pytest.raises(datasets.DataError, match="exists but failed its checksum"):
        download.download("fashion_mnist", out, progress=False)


def test_interrupted_download_leaves_nothing(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    class CtrlC:  # a progress bar whose first update is where the user presses Ctrl-C
        def __init__(self, **kwargs: object) -> None:
            pass

        def __enter__(self) -> CtrlC:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n: int) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "tqdm", CtrlC)
    use_mirror(serve(idx_mirror.directory))
    out = tmp_path / "raw"
    with pytest.raises(KeyboardInterrupt):
        download.download("fashion_mnist", out)
    assert leftovers(out) == []


def test_mirror_that_is_neither_url_nor_directory(tmp_path: Path, use_mirror) -> None:
    use_mirror()
    with pytest.raises(datasets.DataError, match="neither a URL"):
        download.download("fashion_mnist", tmp_path / "raw", mirror=str(tmp_path / "nowhere"))


# ---------------------------------------------------------- content checks and local copies


def regzipped_mirror(idx_mirror: IdxMirror, directory: Path, change: str | None = None) -> Path:
    """All four files re-gzipped another way; ``change`` names one whose content is altered."""
    directory.mkdir()
    for name in idx_mirror.files:
        regzip(idx_mirror.directory / name, directory / name, 20 if name == change else None)
    return directory


def test_regzipped_copy_is_accepted_by_its_content(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, closed_port_url: str
) -> None:
    use_mirror(closed_port_url)
    mirror = regzipped_mirror(idx_mirror, tmp_path / "debian")
    assert all(md5_of(mirror / name) != md5 for name, md5 in idx_mirror.resources)
    said: list[str] = []
    paths = download.download("fashion_mnist", tmp_path / "raw", mirror=mirror, progress=False,
                          say=said.append)
    assert [path.read_bytes() for path in paths] == [
        (mirror / name).read_bytes() for name in idx_mirror.files
    ]
    assert said == [
        f"{name}: from {mirror / name}, matches the published md5 of its decompressed content"
        for name in idx_mirror.files
    ]


def test_regzipped_copy_with_one_altered_byte_is_refused(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror
) -> None:
    use_mirror()
    altered = idx_mirror.files[2]
    mirror = regzipped_mirror(idx_mirror, tmp_path / "debian", change=altered)
    out = tmp_path / "raw"
    with pytest.raises(datasets.ChecksumError) as info:
        download.download("fashion_mnist", out, mirror=mirror, progress=False)
    message = str(info.value)
    assert f"{altered} failed its checksum" in message
    assert dict(idx_mirror.content_md5)[altered] in message  # what was expected
    assert leftovers(out) == idx_mirror.files[:2]  # the two good files before it, nothing else
    with pytest.raises(datasets.ChecksumError, match=altered):
        prepare.prepare("fashion_mnist", mirror, tmp_path / "fm.npz")
    assert not (tmp_path / "fm.npz").exists()


def test_without_a_published_content_md5_only_the_file_md5_counts(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_mirror()
    spec = dataclasses.replace(datasets.DATASETS["fashion_mnist"], content_md5=())
    monkeypatch.setitem(datasets.DATASETS, "fashion_mnist", spec)
    mirror = regzipped_mirror(idx_mirror, tmp_path / "debian")
    with pytest.raises(datasets.ChecksumError, match="failed its checksum"):
        download.download("fashion_mnist", tmp_path / "raw", mirror=mirror, progress=False)


def test_prepared_file_depends_on_content_not_on_the_gzip_container(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror
) -> None:
    use_mirror()
    official = prepare.prepare("fashion_mnist", idx_mirror.directory, tmp_path / "official.npz")
    mirror = regzipped_mirror(idx_mirror, tmp_path / "debian")
    repacked = prepare.prepare("fashion_mnist", mirror, tmp_path / "debian.npz")
    assert official.read_bytes() == repacked.read_bytes()


def test_local_copies_are_tried_before_the_network(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve
) -> None:
    class Forbidden(BaseHTTPRequestHandler):  # any request fails the test
        requests: list[str] = []

        def do_GET(self) -> None:
            Forbidden.requests.append(self.path)
            self.send_error(500)

        def log_message(self, format: str, *args: object) -> None:
            pass

    system_copy = regzipped_mirror(idx_mirror, tmp_path / "usr-share-datasets")
    use_mirror(serve(Forbidden), local_copies=(str(tmp_path / "absent"), str(system_copy)))
    said: list[str] = []
    download.download("fashion_mnist", tmp_path / "raw", progress=False, say=said.append)
    assert Forbidden.requests == []
    assert all(f"from {system_copy}/" in line for line in said) and len(said) == 4


@pytest.mark.parametrize("layout", ["flat", "per-dataset"])
def test_mirrors_from_the_environment_variable(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, closed_port_url: str,
    monkeypatch: pytest.MonkeyPatch, layout: str,
) -> None:
    use_mirror(closed_port_url)
    root = tmp_path / "datasets"
    root.mkdir()
    files = root if layout == "flat" else root / "fashion_mnist"
    shutil.copytree(idx_mirror.directory, files, dirs_exist_ok=True)
    monkeypatch.setenv(datasets.MIRRORS_ENV, os.pathsep.join([str(tmp_path / "missing"), str(root)]))
    said: list[str] = []
    download.download("fashion_mnist", tmp_path / "raw", progress=False, say=said.append)
    assert said[0] == (
        f"{idx_mirror.files[0]}: from {files / idx_mirror.files[0]}, matches the published md5"
    )


def test_already_present_files_say_so(tmp_path: Path, idx_mirror: IdxMirror, use_mirror) -> None:
    use_mirror()
    said: list[str] = []
    download.download("fashion_mnist", idx_mirror.directory, progress=False, say=said.append)
    assert said[0] == (
        f"{idx_mirror.files[0]}: already in {idx_mirror.directory}, matches the published md5"
    )


@pytest.mark.parametrize(
    ("make", "content_ok"),
    [
        (lambda payload: gzip.compress(payload, mtime=0), True),
        (lambda payload: gzip.compress(payload[:50], mtime=0) + gzip.compress(payload[50:]), True),
        (lambda payload: gzip.compress(payload, mtime=0)[:-30], False),  # truncated
        (lambda payload: payload, False),  # not gzip at all
        (lambda payload: gzip.compress(payload, mtime=0) + b"junk", False),
    ],
    ids=["one member", "two members", "truncated", "plain", "trailing junk"],
)
def test_raw_digests_content_md5(make, content_ok: bool) -> None:
    payload = bytes(range(256)) * 40
    blob = make(payload)
    digests = datasets.RawDigests()
    for start in range(0, len(blob), 777):  # chunk boundaries anywhere, members included
        digests.update(blob[start : start + 777])
    assert digests.md5 == hashlib.md5(blob).hexdigest()
    expected = hashlib.md5(payload).hexdigest() if content_ok else None
    assert digests.content_md5 == expected


def test_atomic_write_keeps_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")

    def fails_halfway(file) -> None:
        file.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fails_halfway)
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == ["result.json"]


def test_atomic_write_removes_temporaries_that_killed_writers_left(tmp_path: Path) -> None:
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)  # that process has exited: its temporary is a leftover
    target = tmp_path / "checkpoint.pt"
    leftover = tmp_path / f".checkpoint.pt.{dead_pid}.0badc0de.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getpid()}.0123abcd.tmp"  # a writer still running
    other = tmp_path / f".history.csv.{dead_pid}.0badc0de.tmp"  # another file's: not ours to judge
    for path in (leftover, live, other):
        path.write_bytes(b"partial")
    atomic_write(target, lambda file: file.write(b"done"))
    assert target.read_bytes() == b"done"
    assert not leftover.exists() and live.exists() and other.exists()


# ------------------------------------------------------------------------------------ CLI: download


def test_download_cli_prints_checksums(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, closed_port_url: str, capsys
) -> None:
    use_mirror(closed_port_url)
    out = tmp_path / "raw"
    argv = [
        "download",
        "fashion_mnist",
        "--out",
        str(out),
        "--mirror",
        str(idx_mirror.directory),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{sha256_file(out / name)}  {out / name}" for name in idx_mirror.files]


def test_download_cli_checksum_error_is_one_line(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror, serve, capsys
) -> None:
    tamper(idx_mirror.directory / idx_mirror.files[0])
    use_mirror(serve(idx_mirror.directory))
    code = cli.main(["download", "fashion_mnist", "--out", str(tmp_path / "raw"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("convbench download: error: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "checksum" in err and idx_mirror.files[0] in err


def test_download_cli_offline_error(
    tmp_path: Path, use_mirror, closed_port_url: str, capsys
) -> None:
    use_mirror(closed_port_url)
    code = cli.main(["download", "fashion_mnist", "--out", str(tmp_path / "raw"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("convbench download: error: ")
    assert closed_port_url in err and "--mirror URL_OR_DIR" in err


@pytest.mark.parametrize("command", ["download", "prepare"])
def test_cli_unknown_dataset_exits_2_with_known_names(command: str, tmp_path: Path, capsys) -> None:
    option = "--out" if command == "download" else "--raw"
    argv = [command, "cifar10", option, str(tmp_path), "--out", str(tmp_path / "x.npz")]
    assert cli.main(argv if command == "prepare" else argv[:4]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err
    assert all(name in err for name in datasets.DATASETS)


def test_cli_help_exits_0(capsys) -> None:
    assert cli.main(["download", "--help"]) == 0
    assert "--mirror URL_OR_DIR" in capsys.readouterr().out


# --------------------------------------------------------------------------------------- prepare


def test_prepare_round_trips_the_idx_arrays(
    tmp_path: Path, idx_mirror: IdxMirror, use_mirror
) -> None:
    use_mirror()
    out = prepare.prepare("fashion_mnist", idx_mirror.directory, tmp_path / "prepared" / "fm.npz")
    dataset = prepare.load_prepared(out)

    assert dataset.name == "fashion_mnist"
    assert dataset.train_images.dtype == np.uint8 and dataset.train_images.shape == (20, 1, 28, 28)
    assert dataset.test_images.dtype == np.uint8 and dataset.test_images.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(dataset.train_images[:, 0], idx_mirror.train_images)
    np.testing.assert_array_equal(dataset.test_images[:, 0], idx_mirror.test_images)
    assert dataset.train_labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.train_labels, idx_mirror.train_labels)
    np.testing.assert_array_equal(dataset.test_labels, idx_mirror.test_labels)
    assert dataset.classes == list(torchvision.datasets.FashionMNIST.classes)
    assert (dataset.num_classes, dataset.in_channels, dataset.image_size) == (10, 1, 28)
    assert dataset.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()

    # source_sha256 is `sha256sum <sorted decompressed raw files> | sha256sum`
    manifest = "".join(
        f"{hashlib.sha256(gzip.decompress((idx_mirror.directory / name).read_bytes())).hexdigest()}"
        f"  {name.removesuffix('.gz')}\n"
        for name in sorted(idx_mirror.files)
    )
    assert dataset.source_sha256 == hashlib.sha256(manifest.encode()).hexdigest()


def test_prepare_is_byte_deterministic(tmp_path: Path, idx_mirror: IdxMirror, use_mirror) -> None:
    use_mirror()
    first = prepare.prepare("fashion_mnist", idx_mirror.directory, tmp_path / "a.npz")
    os.utime(idx_mirror.directory / idx_mirror.files[0], (0, 0))  # file times must not matter
    second = prepare.prepare("fashion_mnist", idx_mirror.directory, tmp_path / "b.npz")
    assert first.read_bytes() == second.read_bytes()


def test_prepare_checks_raw_checksums(tmp_path: Path, idx_mirror: IdxMirror, use_mirror) -> None:
    use_mirror()
    tamper(idx_mirror.directory / idx_mirror.files[3])
    with pytest.raises(datasets.ChecksumError, match=idx_mirror.files[3]):
        prepare.prepare("fashion_mnist", idx_mirror.directory, tmp_path / "fm.npz")
    assert not (tmp_path / "fm.npz").exists()


def test_prepare_names_missing_raw_files(tmp_path: Path, idx_mirror: IdxMirror, use_mirror) -> None:
    use_mirror()
    (idx_mirror.directory / idx_mirror.files[0]).unlink()
    with pytest.raises(datasets.DataError, match=f"{idx_mirror.files[0]}.*convbench download"):
        prepare.prepare("fashion_mnist", idx_mirror.directory, tmp_path / "fm.npz")


@pytest.mark.parametrize(
    ("file_index", "array", "problem"),
    [
        (0, np.zeros((20, 28), np.uint8), "magic"),  # 2-d where 3-d images belong
        (1, np.zeros(19, np.uint8), "20 images but .* 19 labels"),
        (3, np.full(10, 10, np.uint8), "labels must lie in 0..9"),  # label out of range
    ],
)
def test_prepare_rejects_malformed_idx(
    tmp_path: Path,
    idx_mirror: IdxMirror,
    monkeypatch: pytest.MonkeyPatch,
    file_index: int,
    array: np.ndarray,
    problem: str,
) -> None:
    name = idx_mirror.files[file_index]
    write_idx_gz(idx_mirror.directory / name, array)
    resources = tuple((file, md5_of(idx_mirror.directory / file)) for file in idx_mirror.files)
    spec = datasets.DatasetSpec("fashion_mnist", "tiny", tuple(map(str, range(10))), (), resources)
    monkeypatch.setitem(datasets.DATASETS, "fashion_mnist", spec)
    with pytest.raises(datasets.DataError, match=problem):
        prepare.prepare("fashion_mnist", idx_mirror.directory, tmp_path / "fm.npz")


def test_read_idx_rejects_a_payload_of_the_wrong_length(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    write_idx_gz(path, np.zeros((3, 4, 4), np.uint8))
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-1]))
    with pytest.raises(datasets.DataError, match=r"short\.gz.*\(3, 4, 4\)"):
        prepare.read_idx(path, ndim=3)


# ---------------------------------------------------------------------------------------- digits


def test_digits_prepared_with_a_fixed_stratified_hold_out(digits: prepare.Dataset) -> None:
    assert digits.name == "digits"
    assert digits.classes == [str(d) for d in range(10)]
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    assert digits.train_images.shape == (1347, 1, 8, 8) and digits.test_images.shape == (
        450,
        1,
        8,
        8,
    )
    assert digits.train_images.dtype == np.uint8
    assert digits.train_images.min() == 0 and digits.train_images.max() == 255  # full range used

    counts = np.bincount(np.concatenate([digits.train_labels, digits.test_labels]), minlength=10)
    test_counts = np.bincount(digits.test_labels, minlength=10)
    assert np.all(np.abs(test_counts - counts * 0.25) <= 1)

    # train + test are exactly the 1797 bundled images, scaled by 255/16
    bundled = load_digits()
    expected = np.round(bundled.images * 255 / 16).astype(np.uint8).reshape(1797, 64)
    ours = np.concatenate([digits.train_images, digits.test_images]).reshape(1797, 64)
    ours_labels = np.concatenate([digits.train_labels, digits.test_labels])
    expected_rows = sorted(zip(map(bytes, expected), bundled.target.tolist(), strict=True))
    assert sorted(zip(map(bytes, ours), ours_labels.tolist(), strict=True)) == expected_rows


def test_digits_download_and_prepare_are_reproducible(tmp_path: Path, digits_npz: Path) -> None:
    raw = tmp_path / "raw"
    (path,) = download.download("digits", raw, mirror="ignored: digits needs no network")
    mtime = path.stat().st_mtime_ns
    download.download("digits", raw)
    assert path.stat().st_mtime_ns == mtime  # same data: left untouched
    again = prepare.prepare("digits", raw, tmp_path / "digits.npz")
    assert again.read_bytes() == digits_npz.read_bytes()


# ------------------------------------------------------------------------------------------- load


def test_load_prepared_rejects_other_files_naming_the_path(
    tmp_path: Path, digits_npz: Path
) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(digits_npz.read_bytes()[:5000])
    partial = write_npz_deterministic(
        tmp_path / "partial.npz", {"train_images": np.zeros((1, 1, 2, 2), np.uint8)}
    )
    wrong_dtype = tmp_path / "wrong_dtype.npz"
    with np.load(digits_npz) as npz:
        arrays = dict(npz)
    write_npz_deterministic(
        wrong_dtype, {**arrays, "train_labels": arrays["train_labels"].astype(np.int32)}
    )

    for path, problem in [
        (garbage, "cannot read"),
        (truncated, "cannot read"),
        (partial, "missing name"),
        (wrong_dtype, "train_labels must be int64"),
        (tmp_path / "absent.npz", "cannot read"),
    ]:
        with pytest.raises(datasets.DataError, match=problem) as info:
            prepare.load_prepared(path)
        assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------- CLI: prepare


def test_prepare_cli(tmp_path: Path, idx_mirror: IdxMirror, use_mirror, capsys) -> None:
    use_mirror()
    out = tmp_path / "fm.npz"
    assert (
        cli.main(
            ["prepare", "fashion_mnist", "--raw", str(idx_mirror.directory), "--out", str(out)]
        )
        == 0
    )
    assert capsys.readouterr().out == f"{prepare.load_prepared(out).sha256}  {out}\n"


def test_prepare_cli_missing_raw_is_one_line(tmp_path: Path, capsys) -> None:
    code = cli.main(
        ["prepare", "mnist", "--raw", str(tmp_path / "empty"), "--out", str(tmp_path / "m.npz")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("convbench prepare: error: ") and err.count("\n") == 1
    assert "convbench download mnist" in err


# ---------------------------------------------------------------------------- CLI: --study mode


def test_download_and_prepare_take_everything_from_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The engines' form: data set, mirror and paths from params.yaml, where the pipeline reads them."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    shutil.copy(root / "params.yaml", "params.yaml")
    assert cli.main(["download", "--study", "params.yaml", "--no-progress"]) == 0
    assert cli.main(["prepare", "--study", "params.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{sha256_file(Path('data/prepared/digits.npz'))}  data/prepared/digits.npz"
    assert out[0].endswith("  data/raw/digits/digits.npz")


@pytest.mark.parametrize("command", ["download", "prepare"])
def test_a_bad_study_stops_download_and_prepare_before_any_data_moves(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    params = (root / "params.yaml").read_text()
    assert "\nfolds: 5\n" in params
    Path("params.yaml").write_text(params.replace("\nfolds: 5\n", "\nfolds: 200\n"))
    assert cli.main([command, "--study", "params.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench {command}: error: params.yaml: folds") and "200" in err
    assert not Path("data").exists()


@pytest.mark.parametrize(
    "argv",
    [["download", "--study", "params.yaml", "--out", "x"], ["download", "digits"],
     ["prepare", "digits", "--study", "params.yaml"], ["prepare", "digits", "--raw", "x"]],
    ids=["download: --study and --out", "download: no --out", "prepare: --study and NAME",
         "prepare: no --out"],
)
def test_download_and_prepare_want_a_study_or_explicit_paths(argv: list[str], capsys) -> None:
    assert cli.main(argv) == 2
    assert "usage: convbench" in capsys.readouterr().err
