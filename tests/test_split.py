"""Stratified K-fold splits over the train part of the real digits data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from convbench import cli, datasets, prepare
from convbench.split import (
    Split,
    SplitMismatchError,
    check_matches,
    load_split,
    make_folds,
    make_split,
    write_split,
)


@pytest.mark.parametrize("k", [2, 5, 7])
def test_folds_are_stratified_disjoint_and_cover_the_train_part(
    digits: prepare.Dataset, k: int
) -> None:
    labels = digits.train_labels
    folds = make_folds(labels, k, seed=0)
    assert len(folds) == k

    everything = np.concatenate(folds)
    assert len(everything) == len(labels) == 1347  # the 450 test images are never in a fold
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))
    ideal = np.bincount(labels) / k
    for fold in folds:
        assert fold.dtype == np.int64
        assert np.all(np.diff(fold) > 0)  # sorted, no repeats
        assert np.all(np.abs(np.bincount(labels[fold], minlength=10) - ideal) <= 1)


def test_folds_depend_on_the_seed_only(digits: prepare.Dataset) -> None:
    first = make_folds(digits.train_labels, 5, seed=1)
    again = make_folds(digits.train_labels.copy(), 5, seed=1)
    other = make_folds(digits.train_labels, 5, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("k", [1, 0, -3, 2.5])
def test_fewer_than_two_folds_is_an_error(k: object) -> None:
    with pytest.raises(ValueError, match="folds"):
        make_folds(np.arange(20) % 2, k, seed=0)  # type: ignore[arg-type]


def test_split_indices_and_id(digits: prepare.Dataset) -> None:
    split = make_split(digits, folds=5, seed=0)
    assert (split.dataset, split.data_sha256, split.folds, split.seed) == (
        "digits",
        digits.sha256,
        5,
        0,
    )
    assert split.n_train == len(digits.train_labels)
    assert len(split.split_id) == 12 and int(split.split_id, 16) >= 0

    for fold in range(5):
        train, val = split.train_indices(fold), split.val(fold)
        assert train.dtype == np.int64 and np.all(np.diff(train) > 0)
        assert len(np.intersect1d(train, val)) == 0
        assert len(train) + len(val) == split.n_train
    with pytest.raises(ValueError, match="fold 5 out of range"):
        split.val(5)

    # the id is a function of data checksum, k, seed and indices: equal inputs, equal id
    assert make_split(digits, folds=5, seed=0).split_id == split.split_id
    assert make_split(digits, folds=5, seed=1).split_id != split.split_id
    assert make_split(digits, folds=4, seed=0).split_id != split.split_id
    other_data = dataclasses.replace(digits, sha256="0" * 64)
    assert make_split(other_data, folds=5, seed=0).split_id != split.split_id


def test_split_refuses_folds_that_do_not_partition() -> None:
    with pytest.raises(ValueError, match="partition"):
        Split("d", "0" * 64, 2, 0, [np.array([0, 1]), np.array([1, 2])])


def test_check_matches_detects_other_data(digits: prepare.Dataset) -> None:
    split = make_split(digits, folds=3, seed=0)
    check_matches(split, digits)  # the data it was made from: fine
    rebuilt = dataclasses.replace(digits, sha256="f" * 64)  # e.g. prepared from other raw files
    with pytest.raises(SplitMismatchError, match=split.split_id) as info:
        check_matches(split, rebuilt)
    assert digits.sha256[:12] in str(info.value) and "convbench split" in str(info.value)


def test_json_round_trip(tmp_path: Path, digits: prepare.Dataset) -> None:
    split = make_split(digits, folds=5, seed=3)
    path = write_split(split, tmp_path / "splits" / "digits.json")
    loaded = load_split(path)
    assert (loaded.dataset, loaded.data_sha256, loaded.folds, loaded.seed, loaded.split_id) == (
        split.dataset,
        split.data_sha256,
        split.folds,
        split.seed,
        split.split_id,
    )
    assert all(
        np.array_equal(a, b) for a, b in zip(loaded.val_indices, split.val_indices, strict=True)
    )
    assert all(indices.dtype == np.int64 for indices in loaded.val_indices)
    assert [p.name for p in path.parent.iterdir()] == ["digits.json"]  # no temporary file left


def test_edited_or_broken_split_file_is_refused(tmp_path: Path, digits: prepare.Dataset) -> None:
    path = write_split(make_split(digits, folds=5, seed=0), tmp_path / "split.json")
    document = json.loads(path.read_text())
    a, b = document["val_indices"][0][0], document["val_indices"][1][0]
    document["val_indices"][0][0], document["val_indices"][1][0] = b, a  # still a partition
    document["val_indices"][0].sort()
    document["val_indices"][1].sort()
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document))
    with pytest.raises(datasets.DataError, match="does not match its contents"):
        load_split(edited)

    broken = tmp_path / "broken.json"
    broken.write_text(path.read_text()[:100])
    with pytest.raises(datasets.DataError, match="broken.json"):
        load_split(broken)


def test_split_cli(tmp_path: Path, digits_npz: Path, digits: prepare.Dataset, capsys) -> None:
    out = tmp_path / "split.json"
    argv = ["split", "--data", str(digits_npz), "--folds", "5", "--seed", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    split = load_split(out)
    assert capsys.readouterr().out == f"{split.split_id}\n"
    assert split.split_id == make_split(digits, folds=5, seed=0).split_id
    check_matches(split, digits)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--folds": "1"}, "folds must be an integer of at least 2"),
        ({"--folds": "400"}, "400 folds need at least 400 images of every class, but class "),
        ({"--data": "missing.npz"}, "missing.npz"),
    ],
)
def test_split_cli_errors_are_one_line(
    tmp_path: Path, digits_npz: Path, capsys, change: dict[str, str], message: str
) -> None:
    options = {
        "--data": str(digits_npz),
        "--folds": "5",
        "--seed": "0",
        "--out": str(tmp_path / "s.json"),
    }
    options.update(change)
    assert cli.main(["split", *[part for item in options.items() for part in item]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("convbench split: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("command", ["split", "download", "prepare"])
def test_a_bug_inside_a_data_command_keeps_its_traceback(
    command: str, tmp_path: Path, digits_npz: Path, monkeypatch: pytest.MonkeyPatch, raiser
) -> None:
    """A ValueError from the code is not the user's: no one-line message hides it."""
    bug = ValueError("operands could not be broadcast together")
    target, argv = {
        "split": ("convbench.split.make_split",
                  ["--data", str(digits_npz), "--folds", "3", "--seed", "0", "--out", str(tmp_path / "s.json")]),
        "download": ("convbench.download.download", ["digits", "--out", str(tmp_path / "raw")]),
        "prepare": ("convbench.prepare.prepare", ["digits", "--raw", str(tmp_path), "--out", str(tmp_path / "d.npz")]),
    }[command]
    monkeypatch.setattr(target, raiser(bug))
    with pytest.raises(ValueError) as raised:
        cli.main([command, *argv])
    assert raised.value is bug
