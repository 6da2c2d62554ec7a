"""A data set of the user's own images (convbench.imagefolder): a folder in ImageFolder layout
taken stock of and prepared into the built-in sets' .npz, its test part held out once with a
recorded seed, every bad input refused naming the file, nothing half-written left behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from convbench.prepare import load_prepared

STUDY = """\
study: shapes
dataset: shapes
images: {{size: 16, channels: {channels}{extra}}}
folds: 3
results_dir: results
recipe: {{batch_size: 8, epochs: 1}}
experiments:
  lenet: {{arch: lenet, input_size: 16}}
"""
CLASSES = ("circle", "cross", "square")


def write_images(root: Path, per_class: int = 10, seed: int = 0) -> None:
    """Grey and colour, PNG and JPEG, of several sizes: what a real folder holds."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = int(rng.integers(12, 40))
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // (c + 1)
            image = Image.fromarray(pixels if i % 3 else pixels[..., 0])
            image.save(root / name / f"{i:03d}.{'png' if i % 2 else 'jpg'}")


def project(tmp_path: Path, channels: int = 1, extra: str = "", per_class: int = 10) -> Path:
    write_images(tmp_path / "images/shapes", per_class)
    (tmp_path / "study.yaml").write_text(STUDY.format(channels=channels, extra=extra))
    return tmp_path


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convbench: Callable[[list[str]], int],
        capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """``cli(*argv) -> (exit code, stderr)`` in the project."""
    monkeypatch.chdir(tmp_path)

    def call(*argv: str) -> tuple[int, str]:
        code = convbench(list(argv))
        return code, capsys.readouterr().err

    return call


def prepare(cli: Callable[..., tuple[int, str]]) -> tuple[int, str]:
    code, err = cli("download", "--study", "study.yaml")
    return (code, err) if code else cli("prepare", "--study", "study.yaml")


def test_a_folder_becomes_the_built_in_sets_npz_with_a_held_out_test_part(
    tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    project(tmp_path)
    assert prepare(cli) == (0, "")
    manifest = tmp_path / "data/raw/shapes/manifest.json"
    listed = json.loads(manifest.read_text())
    assert len(listed["files"]) == 30 and listed["settings"] == {"size": 16, "channels": 1, "test_fraction": 0.2,
                                                                  "test_seed": 0}
    data = load_prepared(tmp_path / "data/prepared/shapes.npz")
    assert data.classes == list(CLASSES) and data.train_images.shape == (24, 1, 16, 16)
    assert np.bincount(data.test_labels).tolist() == [2, 2, 2]  # stratified: 20 % of each class
    assert data.source_sha256 == hashlib.sha256(manifest.read_bytes()).hexdigest()
    # one image by hand: grey, resized bilinearly to 16 x 16
    first = Image.open(tmp_path / "images/shapes/circle/000.jpg").convert("L").resize((16, 16), Image.Resampling.BILINEAR)
    assert any(np.array_equal(np.asarray(first), image[0]) for image in data.train_images[:8]) or \
        any(np.array_equal(np.asarray(first), image[0]) for image in data.test_images)
    before = (tmp_path / "data/prepared/shapes.npz").read_bytes()
    assert prepare(cli) == (0, "") and (tmp_path / "data/prepared/shapes.npz").read_bytes() == before  # same bytes

    (tmp_path / "study.yaml").write_text(STUDY.format(channels=1, extra=", test_seed: 1"))
    assert prepare(cli) == (0, "")
    other = load_prepared(tmp_path / "data/prepared/shapes.npz")
    assert other.sha256 != data.sha256 and not np.array_equal(other.test_images, data.test_images)


def test_a_test_part_is_the_test_set_and_colour_keeps_three_channels(
    tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    write_images(tmp_path / "images/shapes/train", 9)
    write_images(tmp_path / "images/shapes/test", 4, seed=1)
    (tmp_path / "study.yaml").write_text(STUDY.format(channels=3, extra=""))
    assert prepare(cli) == (0, "")
    data = load_prepared(tmp_path / "data/prepared/shapes.npz")
    assert data.train_images.shape == (27, 3, 16, 16) and data.test_images.shape == (12, 3, 16, 16)
    assert np.bincount(data.test_labels).tolist() == [4, 4, 4]


def broken(case: str, root: Path) -> str:
    """Damage the folder one way; return what the error must say."""
    images = root / "images/shapes"
    if case == "truncated":
        path = images / "cross/001.png"
        path.write_bytes(path.read_bytes()[:60])
        return f"{Path('images/shapes/cross/001.png')}: not a readable image ("
    if case == "not an image":
        (images / "cross/notes.txt").write_text("a note")
        return f"{Path('images/shapes/cross/notes.txt')}: not an image file (expected .png, .jpg, .jpeg)"
    if case == "image of text":
        (images / "cross/fake.png").write_text("not a PNG at all")
        return f"{Path('images/shapes/cross/fake.png')}: not a readable image ("
    if case == "empty class":
        (images / "empty").mkdir()
        return f"{Path('images/shapes/empty')}: an empty class folder; add its images or remove it"
    if case == "file among classes":
        (images / "labels.csv").write_text("a,b\n")
        return f"{Path('images/shapes/labels.csv')}: a file where class folders are expected"
    if case == "test classes":
        for part in ("train", "test"):
            (images / part).mkdir()
        for name in CLASSES:
            (images / name).rename(images / "train" / name)
        write_images(images / "test", 2)
        (images / "test/square").rename(images / "test/squares")
        return "the test part's classes differ from training's: ['square'] only in train/; ['squares'] only in test/"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated", "not an image", "image of text", "empty class", "file among classes",
                                  "test classes"])
def test_bad_input_is_refused_naming_the_file_and_nothing_is_left_half_written(
    case: str, tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    project(tmp_path)
    message = broken(case, tmp_path)
    code, err = prepare(cli)
    assert code == 1 and message in err, err
    assert not (tmp_path / "data/prepared/shapes.npz").exists()
    assert not [p for p in (tmp_path / "data").rglob("*.tmp")] if (tmp_path / "data").exists() else True


def test_a_class_with_fewer_images_than_folds_is_refused_at_the_study_check(
    tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    project(tmp_path, per_class=3)  # 3 images: 2 after the 20 % hold-out, fewer than 3 folds
    code, err = cli("study", "--study", "study.yaml", "--no-estimate")
    assert code == 1
    assert (f"images: {Path('images/shapes/circle')}: 2 training image(s) after the test hold-out, fewer than "
            "the 3 folds; add images or use fewer folds") in err


def test_a_folder_image_changed_after_stock_was_taken_is_refused(tmp_path: Path, cli: Callable[..., tuple[int, str]]) -> None:
    project(tmp_path)
    assert cli("download", "--study", "study.yaml")[0] == 0
    Image.new("L", (20, 20), 7).save(tmp_path / "images/shapes/square/001.png")
    code, err = cli("prepare", "--study", "study.yaml")
    assert code == 1 and "square/001.png: changed since convbench download took stock of the folder; run it again" in err


def test_the_study_says_which_data_sets_need_images(tmp_path: Path, cli: Callable[..., tuple[int, str]]) -> None:
    (tmp_path / "study.yaml").write_text(STUDY.format(channels=1, extra="").replace("images: {size: 16, channels: 1}\n", ""))
    code, err = cli("study", "--study", "study.yaml", "--no-estimate")
    assert code == 1 and "dataset: unknown data set 'shapes': give images: for a folder images/shapes/" in err
    (tmp_path / "study.yaml").write_text(STUDY.format(channels=1, extra="").replace("dataset: shapes", "dataset: digits"))
    code, err = cli("study", "--study", "study.yaml", "--no-estimate")
    assert code == 1 and "images: 'digits' is a built-in data set: drop images:" in err
    (tmp_path / "study.yaml").write_text(STUDY.format(channels=1, extra=""))
    code, err = cli("study", "--study", "study.yaml", "--no-estimate")
    assert code == 1 and f"{Path('images/shapes')}: no such folder" in err


def test_the_estimate_sizes_the_folder_as_prepare_will(tmp_path: Path, cli: Callable[..., tuple[int, str]]) -> None:
    from convbench.imagefolder import sizes

    project(tmp_path)
    assert sizes("shapes", {"size": 16, "channels": 1}) == (24, 6, 3)  # ceil(20 % of 30) held out
    assert prepare(cli) == (0, "")
    data = load_prepared(tmp_path / "data/prepared/shapes.npz")
    assert (len(data.train_labels), len(data.test_labels), data.num_classes) == (24, 6, 3)
