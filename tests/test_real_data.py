"""The real Fashion-MNIST, from Debian's package ``dataset-fashion-mnist`` (no network needed).

Skipped where the package is not installed (``.ci/run`` installs it). The package's files are
re-gzipped: their .gz md5s differ from the published ones, their content does not.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from convbench import cli, datasets, prepare

from conftest import regzip

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = [name for name, _ in datasets.DATASETS["fashion_mnist"].resources]
# Fashion-MNIST's training set: 6,000 images per class (Xiao, Rasul & Vollgraf 2017,
# arXiv:1708.07747), pixel mean 0.2860 and std 0.3530 on the 0..1 scale (the normalization
# constants commonly quoted for it, e.g. `Normalize((0.2860,), (0.3530,))`).
PER_CLASS, PIXEL_MEAN, PIXEL_STD = 6000, 0.2860, 0.3530

pytestmark = pytest.mark.skipif(
    not all((DEBIAN_DIR / name).is_file() for name in FILES),
    reason=f"the real Fashion-MNIST is not installed ({DEBIAN_DIR}): "
    "apt-get install dataset-fashion-mnist",
)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, closed_port_url: str) -> None:
    """The official mirrors unreachable: whatever works here works without network."""
    spec = dataclasses.replace(datasets.DATASETS["fashion_mnist"], mirrors=(closed_port_url,))
    monkeypatch.setitem(datasets.DATASETS, "fashion_mnist", spec)
    monkeypatch.delenv(datasets.MIRRORS_ENV, raising=False)


@pytest.fixture(scope="module")
def debian_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared file made straight from the package's files (read only)."""
    return prepare.prepare("fashion_mnist", DEBIAN_DIR, tmp_path_factory.mktemp("fm") / "fm.npz")


def test_download_without_flags_finds_the_debian_copy(
    tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "raw"
    assert cli.main(["download", "fashion_mnist", "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"convbench download: {name}: from {DEBIAN_DIR / name}, "
        "matches the published md5 of its decompressed content"
        for name in FILES
    ]
    assert all((out / name).read_bytes() == (DEBIAN_DIR / name).read_bytes() for name in FILES)


def test_download_with_the_debian_directory_as_mirror(tmp_path: Path, offline: None) -> None:
    out = tmp_path / "raw"
    argv = ["download", "fashion_mnist", "--out", str(out), "--mirror", str(DEBIAN_DIR),
            "--no-progress"]
    assert cli.main(argv) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(FILES)


def test_one_altered_byte_of_real_content_is_refused(
    tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in FILES:
        shutil.copyfile(DEBIAN_DIR / name, mirror / name)
    regzip(DEBIAN_DIR / FILES[1], mirror / FILES[1], change_byte_at=100)  # one training label
    out = tmp_path / "raw"
    argv = ["download", "fashion_mnist", "--out", str(out), "--mirror", str(mirror), "--no-progress"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"convbench download: error: could not get a verified {FILES[1]}" in err
    assert f"{mirror / FILES[1]}: {FILES[1]} failed its checksum" in err
    assert sorted(path.name for path in out.iterdir()) == [FILES[0]]  # verified before it


def test_prepared_file_is_the_same_from_debian_and_official_style_files(
    tmp_path: Path, debian_prepared: Path
) -> None:
    official_style = tmp_path / "official"
    official_style.mkdir()
    for name in FILES:  # the same payload, gzipped otherwise than Debian's package did (level 1 is fast)
        payload = gzip.decompress((DEBIAN_DIR / name).read_bytes())
        (official_style / name).write_bytes(gzip.compress(payload, compresslevel=1, mtime=0))
    assert (official_style / FILES[0]).read_bytes() != (DEBIAN_DIR / FILES[0]).read_bytes()
    remade = prepare.prepare("fashion_mnist", official_style, tmp_path / "fm.npz")
    assert remade.read_bytes() == debian_prepared.read_bytes()


def test_the_real_data_is_what_the_paper_describes(debian_prepared: Path) -> None:
    dataset = prepare.load_prepared(debian_prepared)
    assert dataset.train_images.shape == (60000, 1, 28, 28)
    assert dataset.test_images.shape == (10000, 1, 28, 28)
    assert np.bincount(dataset.train_labels).tolist() == [PER_CLASS] * 10
    pixels = dataset.train_images.astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(PIXEL_MEAN, abs=5e-5)
    assert pixels.std() == pytest.approx(PIXEL_STD, abs=5e-5)
