"""Fold means and spreads per experiment: the numbers worth comparing.

Single runs are noisy (ANCHORS.md: the same d2l notebook gives ResNet-18 0.893 or 0.922), so every
figure here is a mean over folds with its sample standard deviation (ddof=1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from convbench._io import write_json_atomic


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return float(array.mean()), std


def mean_of(records: list[dict[str, Any]], key: str, total: bool = False) -> float | None:
    """Mean (or sum) of a measured value over the folds that have it; None when none has."""
    values = [r[key] for r in records if r.get(key) is not None]
    if not values:
        return None
    return float(np.sum(values) if total else np.mean(values))


def aggregate(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Group per-fold metrics by experiment into means, standard deviations and per-fold lists.

    Each fold's dict may carry its perf.json under ``"perf"``; timings are then averaged too.
    """
    by_experiment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for metrics in fold_metrics:
        by_experiment[metrics["experiment"]].append(metrics)
    experiments: dict[str, Any] = {}
    for name in sorted(by_experiment):
        runs = sorted(by_experiment[name], key=lambda m: m["fold"])
        folds = [m["fold"] for m in runs]
        if len(set(folds)) != len(folds):
            raise ValueError(f"experiment {name!r}: fold(s) given twice: {folds}")
        first = runs[0]
        for m in runs[1:]:
            for key in ("arch", "knobs", "input_size", "split_id", "data_sha256", "recipe"):
                if m[key] != first[key]:
                    raise ValueError(f"experiment {name!r}: folds disagree on {key}")
        val = [m["val"]["accuracy"] for m in runs]
        test = [m["test"]["accuracy"] for m in runs]
        training = [m.get("perf", {}).get("training", {}) for m in runs]
        inference = [m.get("perf", {}).get("inference", {}) for m in runs]
        val_mean, val_std = mean_std(val)
        test_mean, test_std = mean_std(test)
        experiments[name] = {
            "arch": first["arch"],
            "knobs": first["knobs"],
            "input_size": first["input_size"],
            "params": first["params"],
            "macs": first["macs"],
            "folds": len(runs),
            "val_acc_mean": val_mean,
            "val_acc_std": val_std,
            "test_acc_mean": test_mean,
            "test_acc_std": test_std,
            "train_seconds_mean": mean_of(training, "seconds"),
            "train_seconds_total": mean_of(training, "seconds", total=True),
            "examples_per_s_mean": mean_of(training, "examples_per_s"),
            "inference_images_per_s_mean": mean_of(inference, "images_per_s"),
            "best_epoch_mean": float(np.mean([m["best_epoch"] for m in runs])),
            "val_acc_per_fold": val,
            "test_acc_per_fold": test,
        }
    return {"experiments": experiments}


class ResultFileError(ValueError):
    """A results file is unreadable, not JSON, or lacks what ``convbench evaluate`` writes."""


# What aggregation reads from a fold's metrics.json ("a.b": key b inside a).
FOLD_KEYS = ("experiment", "fold", "arch", "knobs", "input_size", "split_id", "data_sha256",
             "recipe", "params", "macs", "best_epoch", "val.accuracy", "test.accuracy")


def read_json_file(path: Path, made_by: str) -> dict[str, Any]:
    """A JSON object from ``path``; errors name the file and what should have written it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ResultFileError(f"{path}: not a text file ({err.reason}); expected JSON written by "
                              f"{made_by}; run it again") from None
    except json.JSONDecodeError as err:
        raise ResultFileError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); "
                              f"expected a file written by {made_by}; run it again") from None
    if not isinstance(value, dict):
        raise ResultFileError(f"{path}: expected a JSON object written by {made_by}, found "
                              f"{type(value).__name__}; run it again")
    return value


def load_fold(metrics_path: Path) -> dict[str, Any]:
    """A fold's metrics.json, with the perf.json beside it (if any) under ``"perf"``."""
    metrics = read_json_file(metrics_path, "convbench evaluate")
    for key in FOLD_KEYS:
        node: Any = metrics
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ResultFileError(f"{metrics_path}: no {key!r}; expected a metrics.json "
                                      "written by convbench evaluate; evaluate it again")
            node = node[part]
    perf_path = metrics_path.with_name("perf.json")
    if perf_path.exists():
        metrics["perf"] = read_json_file(perf_path, "convbench evaluate")
    return metrics


SUMMARY_DIR = "_summary"  # results/_summary/<experiment>.json; "_" never starts an experiment name


def summary_path(results_dir: str, experiment: str) -> str:
    """Where one experiment's fold summary goes: outside every run directory, so DVC can depend on
    ``results/<experiment>`` (a directory) and the final step on ``results/_summary``."""
    return f"{results_dir}/{SUMMARY_DIR}/{experiment}.json"


def summarize_experiment(study: Any, experiment: str) -> dict[str, Any]:
    """Fold means and spreads of one experiment, from its run directories."""
    folds = [load_fold(Path(study.run_dir(experiment, k)) / "metrics.json") for k in range(study.folds)]
    return aggregate(folds)["experiments"][experiment]


def combine(study: Any) -> dict[str, Any]:
    """results/metrics.json: the study card plus every experiment's summary, in study order."""
    experiments = {
        name: read_json_file(Path(summary_path(study.results_dir, name)),
                             f"convbench aggregate --experiment {name}")
        for name in study.experiments
    }
    first = load_fold(Path(study.run_dir(next(iter(study.experiments)), 0)) / "metrics.json")
    return {
        "study": {
            "name": study.name,
            "dataset": study.dataset,
            "data_sha256": first["data_sha256"],
            "split_id": first["split_id"],
            "folds": study.folds,
            "seed": study.seed,
            "code_version": first["code_version"],
            "packages": first["packages"],
        },
        "experiments": experiments,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench aggregate",
        description="Fold means and spreads: with --experiment, of one experiment's folds "
        "(results/<experiment>/fold<k>/metrics.json and perf.json); without, the study's "
        "results/metrics.json from every experiment's summary.",
    )
    parser.add_argument("--study", type=Path, required=True, help="the study file (params.yaml)")
    parser.add_argument("--experiment", default=None, help="summarize this experiment's folds")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    from convbench.study import load_study

    args = build_parser().parse_args(argv)
    try:
        study = load_study(args.study)
        if args.experiment is not None:
            study.experiment(args.experiment)  # refuses an unknown name
            result = {"experiments": {args.experiment: summarize_experiment(study, args.experiment)}}
            write_json_atomic(args.out, result["experiments"][args.experiment])
        else:
            result = combine(study)
            write_json_atomic(args.out, result)
    except (OSError, ValueError) as err:  # StudyError and ResultFileError are ValueErrors
        print(f"convbench aggregate: error: {err}", file=sys.stderr)
        return 1
    width = max(map(len, result["experiments"]), default=10)
    for name, row in result["experiments"].items():
        print(
            f"{name:<{width}}  val {row['val_acc_mean']:.4f} ± {row['val_acc_std']:.4f}  "
            f"test {row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f}  ({row['folds']} folds)"
        )
    return 0
