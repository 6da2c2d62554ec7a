"""Stratified K-fold splits of a prepared dataset's train part.

Each experiment trains on K-1 folds and validates on the remaining one, so fold means and spreads
can be compared. Folds index into ``train_images`` only: the official test set (for ``digits``, its
fixed hold-out) is never part of a split, so it stays untouched for the final comparison.

A split records the sha256 of the prepared file it was cut from, and every consumer calls
:func:`check_matches` before using it: indices are meaningless against other data, and nothing
else would notice. Its ``split_id`` hashes the data checksum, K, the seed and the indices, so two
runs that report the same id trained and validated on exactly the same images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convbench._io import run_cli, write_json_atomic
from convbench.datasets import DataError
from convbench.prepare import Dataset, load_prepared

SPLIT_FORMAT = "convbench-split/1"


class SplitError(ValueError):
    """K-fold cross-validation that cannot be made: fewer than 2 folds, or more folds than images of
    a class. ``convbench split`` turns it into one line; any other ValueError is a bug."""


class SplitMismatchError(DataError):
    """A split used with data other than the data it was made from."""


def make_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Validation indices of each of ``k`` stratified folds (sorted int64), via StratifiedKFold.

    Every index appears in exactly one fold, and each fold's class counts are within one of
    ``count / k``, so validation accuracy is not skewed by an unlucky class mix.
    """
    from sklearn.model_selection import StratifiedKFold

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise SplitError(f"folds must be an integer of at least 2, got {k!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if k > counts.min():
        raise SplitError(f"{k} folds need at least {k} images of every class, but class "
                         f"{classes[counts.argmin()]} has {counts.min()}")
    folds = StratifiedKFold(n_splits=int(k), shuffle=True, random_state=seed)
    return [np.sort(val).astype(np.int64) for _, val in folds.split(np.zeros(len(labels)), labels)]


@dataclass(frozen=True, eq=False)
class Split:
    """K validation folds over a prepared dataset's train part, tied to that data by its sha256."""

    dataset: str
    data_sha256: str
    folds: int
    seed: int
    val_indices: list[np.ndarray] = field(repr=False)
    split_id: str = field(init=False)

    def __post_init__(self) -> None:
        val_indices = [np.asarray(indices, dtype=np.int64) for indices in self.val_indices]
        if self.folds < 2 or len(val_indices) != self.folds:
            raise ValueError(
                f"a split needs folds >= 2 index arrays; got folds={self.folds}, "
                f"{len(val_indices)} arrays"
            )
        everything = np.sort(np.concatenate(val_indices))
        if not np.array_equal(everything, np.arange(len(everything))):
            raise ValueError("the folds must partition range(n_train): each index exactly once")
        if any(np.any(np.diff(indices) <= 0) for indices in val_indices):
            raise ValueError("each fold's indices must be sorted")
        object.__setattr__(self, "val_indices", val_indices)
        object.__setattr__(self, "split_id", self._compute_id())

    def _compute_id(self) -> str:
        digest = hashlib.sha256(
            f"{SPLIT_FORMAT}\n{self.data_sha256}\n{self.folds}\n{self.seed}\n".encode()
        )
        for indices in self.val_indices:
            digest.update(len(indices).to_bytes(8, "little"))
            digest.update(
                indices.astype("<i8").tobytes()
            )  # explicit byte order: same id everywhere
        return digest.hexdigest()[:12]

    @property
    def n_train(self) -> int:
        """Size of the train part the folds partition."""
        return sum(len(indices) for indices in self.val_indices)

    def val(self, fold: int) -> np.ndarray:
        """Indices into ``train_images`` held out for validation in ``fold`` (0-based)."""
        return self.val_indices[self._check_fold(fold)]

    def train_indices(self, fold: int) -> np.ndarray:
        """Indices into ``train_images`` trained on in ``fold``: all the others, sorted."""
        return np.setdiff1d(
            np.arange(self.n_train, dtype=np.int64), self.val(fold), assume_unique=True
        )

    def _check_fold(self, fold: int) -> int:
        if not 0 <= fold < self.folds:
            raise ValueError(
                f"fold {fold} out of range: split {self.split_id} has folds 0..{self.folds - 1}"
            )
        return fold


def make_split(dataset: Dataset, folds: int, seed: int) -> Split:
    """Stratified ``folds``-fold split of ``dataset``'s train part (see :func:`make_folds`)."""
    return Split(
        dataset=dataset.name,
        data_sha256=dataset.sha256,
        folds=folds,
        seed=seed,
        val_indices=make_folds(dataset.train_labels, folds, seed),
    )


def check_matches(split: Split, dataset: Dataset) -> None:
    """Raise SplitMismatchError unless ``split`` was made from exactly ``dataset``'s file."""
    if split.data_sha256 != dataset.sha256 or split.n_train != len(dataset.train_labels):
        raise SplitMismatchError(
            f"split {split.split_id} was made from {split.dataset} data with sha256 "
            f"{split.data_sha256[:12]} ({split.n_train} train images), but the data given is "
            f"{dataset.name} with sha256 {dataset.sha256[:12]} ({len(dataset.train_labels)} train "
            "images); make a new split with 'convbench split'"
        )


def write_split(split: Split, path: str | Path) -> Path:
    """Write ``split`` as JSON, atomically; metadata first, indices as one compact list per fold."""
    document: dict[str, Any] = {
        "format": SPLIT_FORMAT,
        "split_id": split.split_id,
        "dataset": split.dataset,
        "data_sha256": split.data_sha256,
        "folds": split.folds,
        "seed": split.seed,
        "n_train": split.n_train,
        "val_indices": [indices.tolist() for indices in split.val_indices],
    }
    return write_json_atomic(path, document, indent=None)  # tens of thousands of indices


def load_split(path: str | Path) -> Split:
    """Read a split written by :func:`write_split`; a malformed or edited file is a DataError."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != SPLIT_FORMAT:
            raise ValueError(f"format is {document.get('format')!r}, expected {SPLIT_FORMAT!r}")
        split = Split(
            dataset=str(document["dataset"]),
            data_sha256=str(document["data_sha256"]),
            folds=int(document["folds"]),
            seed=int(document["seed"]),
            val_indices=[
                np.asarray(indices, dtype=np.int64) for indices in document["val_indices"]
            ],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError: ValueError
        raise DataError(f"{path}: not a valid split file ({type(exc).__name__}: {exc})") from None
    if split.split_id != document.get("split_id"):
        raise DataError(
            f"{path}: recorded split_id {document.get('split_id')!r} does not match its contents "
            f"({split.split_id}); the file was changed after it was written"
        )
    return split


def split_command(study: Any, repeat: int) -> str:
    """The command that writes repeat ``repeat``'s split of ``study`` (the pipeline's own)."""
    return (f"convbench split --data {study.prepared_path} --folds {study.folds} "
            f"--seed {study.split_seed(repeat)} --out {study.split_path(repeat)}")


def check_split_files(study: Any, study_path: str | Path = "params.yaml") -> None:
    """Refuse a damaged split file of ``study`` before any job runs (Snakemake's parse): its run
    jobs would each fail on it, and Snakemake deletes a job's outputs before running it. A missing
    file is the split rule's to make."""
    for repeat in range(study.repeats):
        path = Path(study.split_path(repeat))
        if not path.exists():
            continue
        try:
            load_split(path)
        except DataError as err:
            raise DataError(
                f"{err}. Nothing was run or deleted. Write it again with '{split_command(study, repeat)}' "
                f"(the split is a function of the data, K and seed: the same bytes, so no run "
                f"retrains), then run the pipeline again"
            ) from None


def study_split_ids(study: Any, study_path: str | Path = "params.yaml") -> dict[int, str]:
    """The split id of each repeat's split file of ``study``, read again from the files (what every
    run of the study must have been trained on); a missing or damaged file is a DataError naming
    the file and the command that writes it."""
    ids = {}
    for repeat in range(study.repeats):
        path = Path(study.split_path(repeat))
        if not path.exists():
            raise DataError(f"{path} does not exist: the study's split (K={study.folds}, seed "
                            f"{study.split_seed(repeat)}) was never made; make it: "
                            f"'{split_command(study, repeat)}', then rerun the experiments on it")
        try:
            ids[repeat] = load_split(path).split_id
        except DataError as err:
            raise DataError(f"{err}; write it again: '{split_command(study, repeat)}'") from None
    return ids


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench split",
        description="Write stratified K-fold validation splits of a prepared dataset's train part "
        "(the test set is never split). Prints the split id. With --study, the study's data, K and "
        "seeds give the split of each repeat (repeat r shuffles with seed + r), written where the "
        "pipeline reads it.",
    )
    parser.add_argument("--study", type=Path, default=None, metavar="FILE",
                        help="a study file (params.yaml): data, folds, seeds and paths from it")
    parser.add_argument("--repeat", type=int, default=None, metavar="R",
                        help="with --study: only this repeat's split (default: every repeat)")
    parser.add_argument("--data", type=Path, metavar="FILE.npz", help="from 'convbench prepare'")
    parser.add_argument("--folds", type=int, metavar="K", help="number of folds, at least 2")
    parser.add_argument("--seed", type=int, metavar="S", help="shuffling seed")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="split file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``convbench split --data FILE.npz --folds K --seed S --out FILE.json``, or ``convbench split
    --study params.yaml [--repeat R]`` for the study's split of every repeat (or of one); prints
    the split id(s)."""
    parser = build_parser()

    def action(args: argparse.Namespace) -> None:
        if args.study is None:
            missing = [flag for flag in ("data", "folds", "seed", "out") if getattr(args, flag) is None]
            if missing or args.repeat is not None:
                parser.error("give --data, --folds, --seed and --out (or --study [--repeat R])")
            jobs = [(args.data, args.folds, args.seed, args.out)]
        else:
            from convbench.study import StudyError, load_study

            if any(getattr(args, flag) is not None for flag in ("folds", "seed", "out")):
                parser.error("--study takes K, seeds and paths from the study: drop --folds, --seed, --out")
            study = load_study(args.study)
            if args.repeat is not None and args.repeat not in range(study.repeats):
                raise StudyError(f"repeat {args.repeat} is not in study {study.name!r}, which has "
                                 f"repeats {', '.join(map(str, range(study.repeats)))}")
            repeats = [args.repeat] if args.repeat is not None else list(range(study.repeats))
            data = args.data or Path(study.prepared_path)
            jobs = [(data, study.folds, study.split_seed(r), Path(study.split_path(r))) for r in repeats]
        dataset = None
        for data, folds, seed, out in jobs:
            dataset = dataset or load_prepared(data)
            split = make_split(dataset, folds, seed)
            write_split(split, out)
            print(split.split_id)

    from convbench.study import StudyError

    return run_cli(parser, argv, action, expected=(DataError, SplitError, StudyError, OSError))
