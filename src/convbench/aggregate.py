"""Means and spreads per experiment over its runs (repeats x folds x seeds): the numbers worth
comparing.

Single runs are noisy (d2l's own ResNet-18 notebook scores between 0.838 and 0.922 test accuracy
across 20 builds of the book, src/convbench/reference/d2l.yaml), so every figure here is a mean over runs with
its sample standard deviation (ddof=1).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from convbench._io import atomic_write, run_cli, write_json_atomic
from convbench.consistency import (
    InconsistentResultsError,
    check_experiment_means,
    check_experiment_settings,
    check_run,
    rerun_command,
)
from convbench.split import study_split_ids
from convbench.stats import mean_std, run_key, spread
from convbench.study import add_smoke_option


class AggregateError(ValueError):
    """Runs that cannot be aggregated together, or a results file aggregation cannot read.

    ``convbench aggregate`` turns it into one line and exit code 1; anything else is a bug and
    keeps its traceback.
    """


def aggregate(run_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Group per-run metrics by experiment into means, standard deviations and per-run lists.

    Every mean and standard deviation is over all of an experiment's runs (R repeats x K folds x
    S seeds); ``*_fold_std`` and ``*_seed_std`` separate the spread over data from the spread over
    seeds. No timing: wall-clock measurements differ between bit-identical runs, so they stay in the
    runs' perf.json (which DVC does not track) and the report averages them from there.
    """
    by_experiment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for metrics in run_metrics:
        by_experiment[metrics["experiment"]].append(metrics)
    experiments: dict[str, Any] = {}
    for name in sorted(by_experiment):
        runs = sorted(by_experiment[name], key=run_key)
        keys = [run_key(m) for m in runs]
        if len(set(keys)) != len(keys):
            raise AggregateError(f"experiment {name!r}: a run (repeat, fold, seed) given twice: {keys}")
        first = runs[0]
        for m in runs[1:]:
            for key in ("arch", "knobs", "input_size", "data_sha256", "recipe"):
                if m[key] != first[key]:
                    raise AggregateError(f"experiment {name!r}: runs disagree on {key}")
        split_ids: dict[int, str] = {}
        for m, (repeat, _, _) in zip(runs, keys):
            if split_ids.setdefault(repeat, m["split_id"]) != m["split_id"]:
                raise AggregateError(f"experiment {name!r}: the runs of repeat {repeat} disagree on the split")
        val = [m["val"]["accuracy"] for m in runs]
        test = [m["test"]["accuracy"] for m in runs]
        val_mean, val_std = mean_std(val)
        test_mean, test_std = mean_std(test)
        val_spread, test_spread = spread(runs, val), spread(runs, test)
        versions: dict[str, dict[str, Any]] = {}
        for m in runs:
            version = m.get("code_version")
            entry = versions.setdefault(json.dumps(version, sort_keys=True), {"code_version": version, "runs": 0})
            entry["runs"] += 1
        # with test-time augmentation, what the same weights score without it (the report shows both)
        without_tta = {part: [m[part].get("accuracy_without_tta") for m in runs] for part in ("val", "test")}
        experiments[name] = {
            "arch": first["arch"],
            "knobs": first["knobs"],
            "input_size": first["input_size"],
            "params": first["params"],
            "macs": first["macs"],
            "runs": len(runs),
            "repeats": len({k[0] for k in keys}),
            "folds": len({k[1] for k in keys}),
            "seeds": len({k[2] for k in keys}),
            "val_acc_mean": val_mean,
            "val_acc_std": val_std,
            "val_acc_fold_std": val_spread["fold_std"],
            "val_acc_seed_std": val_spread["seed_std"],
            "test_acc_mean": test_mean,
            "test_acc_std": test_std,
            "test_acc_fold_std": test_spread["fold_std"],
            "test_acc_seed_std": test_spread["seed_std"],
            "best_epoch_mean": float(np.mean([m["best_epoch"] for m in runs])),
            **{f"{part}_acc_without_tta_mean": float(np.mean(values))
               for part, values in without_tta.items() if all(v is not None for v in values)},
            "per_run": [
                {"repeat": r, "fold": k, "seed": s, "val_acc": v, "test_acc": t}
                for (r, k, s), v, t in zip(keys, val, test)
            ],
            "code_versions": list(versions.values()),
            # what the study card reports, so the study step reads these files alone
            "data_sha256": first["data_sha256"],
            "split_ids": [split_ids[repeat] for repeat in sorted(split_ids)],
            "packages": first.get("packages"),
            # the settings the runs were made with, checked against the study by the study step
            "recipe": first["recipe"],
            "threads": first.get("threads"),
        }
    return {"experiments": experiments}


class ResultFileError(AggregateError):
    """A results file is unreadable, not JSON, or lacks what ``convbench evaluate`` writes."""


# What aggregation reads from a run's metrics.json ("a.b": key b inside a).
RUN_KEYS = ("experiment", "fold", "seed", "arch", "knobs", "input_size", "split_id", "data_sha256",
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


def load_run(metrics_path: Path) -> dict[str, Any]:
    """A run's metrics.json, checked to hold what aggregation reads."""
    metrics = read_json_file(metrics_path, "convbench evaluate")
    for key in RUN_KEYS:
        node: Any = metrics
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ResultFileError(f"{metrics_path}: no {key!r}; expected a metrics.json "
                                      "written by convbench evaluate; evaluate it again")
            node = node[part]
    return metrics


def aggregate_experiment(study: Any, experiment: str, study_path: str | Path = "params.yaml") -> dict[str, Any]:
    """Means and spreads of one experiment, from the metrics of every run the study asks for; a
    run made with other settings than the study's (``study_path``) is refused."""
    split_ids = study_split_ids(study, study_path)
    runs = []
    for run in study.runs(experiment):
        metrics_path = Path(study.run_dir(experiment, run)) / "metrics.json"
        metrics = load_run(metrics_path)
        if run_key(metrics) != (run.repeat, run.fold, run.seed):
            raise ResultFileError(
                f"{study.run_dir(experiment, run)}/metrics.json: holds repeat {run_key(metrics)[0]} "
                f"fold {run_key(metrics)[1]} seed {run_key(metrics)[2]}, not the run {run.name} its "
                "directory names; evaluate it again"
            )
        check_run(metrics_path, metrics, study, experiment, run, study_path, split_ids)
        runs.append(metrics)
    return aggregate(runs)["experiments"][experiment]


CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def write_curves(
    study: Any, experiment: str, out_dir: Path, study_path: str | Path = "params.yaml"
) -> list[Path]:
    """Each run's learning curve, ``<run>.csv`` in ``out_dir``: the per-epoch losses, accuracies and
    learning rate its checkpoint recorded, as its metrics.json carries them (checked against the
    model by aggregation), spelled as history.csv spells them, without history.csv's timings.

    A directory that holds only plottable, bit-identical files is what ``dvc plots`` reads (a run's
    directory also holds model.pt, and its history.csv wall-clock columns). It needs no history.csv,
    a by-product DVC does not share. Files of runs the study no longer has are removed.
    """
    from convbench.consistency import evaluate_command

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in study.runs(experiment):
        metrics_path = Path(study.run_dir(experiment, run)) / "metrics.json"
        curve = load_run(metrics_path).get("curve")
        if not isinstance(curve, list) or not all(isinstance(row, dict) and set(CURVE_COLUMNS) <= set(row)
                                                  for row in curve):
            raise ResultFileError(f"{metrics_path}: no learning curve (written by an older convbench "
                                  f"evaluate); score it again: {evaluate_command(study_path, experiment, run)}")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in curve:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CURVE_COLUMNS})
        path = out_dir / f"{run.name}.csv"
        written.append(atomic_write(path, lambda file, text=buffer.getvalue(): file.write(text.encode())))
    for stale in set(out_dir.glob("*.csv")) - set(written):
        stale.unlink()
    return written


def aggregate_study(study: Any, study_path: str | Path = "params.yaml") -> dict[str, Any]:
    """results/study.json: the study card plus every experiment's results, in study order.

    The card names every code version the runs were made with, and how many runs each made: after
    a code change reruns part of a study, both versions show. An experiment's file made with other
    settings than the study's (``study_path``), or whose means do not follow from its runs, is
    refused.
    """
    experiments = {
        name: read_json_file(Path(study.experiment_results_path(name)),
                             f"convbench aggregate --experiment {name}")
        for name in study.experiments
    }
    for name, results in experiments.items():
        path = study.experiment_results_path(name)
        check_experiment_settings(path, results, study, name, study_path)
        check_experiment_means(path, results, study, name, study_path)
    first_name, first = next(iter(experiments.items()))
    for name, results in experiments.items():
        if "split_ids" not in results:
            raise ResultFileError(f"{study.experiment_results_path(name)}: no 'split_ids'; written by an "
                                  f"older convbench aggregate --experiment {name}; run it again")
        for key in ("data_sha256", "split_ids"):
            if results.get(key) != first.get(key):
                raise AggregateError(f"experiments {first_name!r} and {name!r} were run on different "
                                     f"{'data' if key == 'data_sha256' else 'splits'}: aggregate them "
                                     "again from runs of this study")
    split_ids = study_split_ids(study, study_path)  # read again: the study's split may have changed
    if first["split_ids"] != [split_ids[r] for r in sorted(split_ids)]:
        raise AggregateError(
            f"{study.experiment_results_path(first_name)}: its runs were trained on split(s) "
            f"{', '.join(i[:12] for i in first['split_ids'])}, but the study's split (K={study.folds}, seed "
            f"{study.seed}) is {', '.join(split_ids[r][:12] for r in sorted(split_ids))}; aggregate each "
            f"experiment again (convbench aggregate --study {study_path} --experiment NAME), which names "
            "the runs to retrain")
    versions: dict[str, dict[str, Any]] = {}
    for results in experiments.values():
        for entry in results.get("code_versions", []):
            key = json.dumps(entry["code_version"], sort_keys=True)
            versions.setdefault(key, {"code_version": entry["code_version"], "runs": 0})["runs"] += entry["runs"]
    return {
        "study": {
            "name": study.name,
            "dataset": study.dataset,
            "data_sha256": first["data_sha256"],
            "split_id": first["split_ids"][0],
            "folds": study.folds,
            "repeats": study.repeats,
            "seed": study.seed,
            "seeds": list(study.seeds),
            "code_versions": sorted(versions.values(), key=lambda v: -v["runs"]),
            "packages": first.get("packages"),
        },
        "experiments": experiments,
    }


SCORE_KEYS = ("val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std", "params", "macs")


def scores(study_results: dict[str, Any]) -> dict[str, Any]:
    """results/scores.json: per experiment the numbers people compare (accuracies with their
    spread, size and cost), each once, and nothing that differs between two bit-identical runs."""
    return {"experiments": {name: {key: row[key] for key in SCORE_KEYS}
                            for name, row in study_results["experiments"].items()}}


def ablations(study: Any, study_results: dict[str, Any]) -> dict[str, Any]:
    """results/ablations.json: every named ablation compared fold by fold (convbench.stats)."""
    from convbench.stats import ComparisonError, ablation_results, ablations_document

    try:
        return ablations_document(study, ablation_results(study, study_results))
    except ComparisonError as err:
        raise AggregateError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench aggregate",
        description="Means and spreads: with --experiment, of one experiment's runs "
        "(results/<experiment>/r<repeat>-fold<k>-seed<s>/metrics.json; no timings, which stay in "
        "each run's perf.json); without, the "
        "study's results/study.json from every experiment's results/_experiments/<experiment>.json, "
        "with scores.json (what DVC shows as metrics) and ablations.json (each named ablation's "
        "paired comparison and verdict) beside it.",
    )
    parser.add_argument("--study", type=Path, required=True, help="the study file (params.yaml)")
    add_smoke_option(parser)
    parser.add_argument("--experiment", default=None, help="aggregate this experiment's runs")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--curves-out", type=Path, default=None,
                        help="with --experiment: also write each run's learning curve (from its metrics.json; "
                             "no timings) as <run>.csv in this directory, for DVC's plots")
    parser.add_argument("--scores-out", type=Path, default=None,
                        help="without --experiment: the scores to write (default: scores.json beside --out)")
    parser.add_argument("--ablations-out", type=Path, default=None,
                        help="without --experiment: the ablation results to write (default: "
                             "ablations.json beside --out)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from convbench.study import StudyError, load_study

    def action(args: argparse.Namespace) -> None:
        study = load_study(args.study, smoke=args.smoke)
        if args.experiment is not None:
            study.experiment(args.experiment)  # refuses an unknown name
            result = {"experiments": {args.experiment: aggregate_experiment(study, args.experiment, args.study)}}
            write_json_atomic(args.out, result["experiments"][args.experiment])
            if args.curves_out is not None:
                write_curves(study, args.experiment, args.curves_out, args.study)
        else:
            result = aggregate_study(study, args.study)
            compared = ablations(study, result)
            write_json_atomic(args.out, result)
            write_json_atomic(args.scores_out or args.out.with_name("scores.json"), scores(result))
            write_json_atomic(args.ablations_out or args.out.with_name("ablations.json"), compared)
        width = max(map(len, result["experiments"]), default=10)
        for name, row in result["experiments"].items():
            print(
                f"{name:<{width}}  val {row['val_acc_mean']:.4f} ± {row['val_acc_std']:.4f}  "
                f"test {row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f}  ({row['runs']} runs)"
            )
        if args.experiment is None:
            for name, entry in compared["ablations"].items():
                val = entry["val_acc"]
                print(f"ablation {name}: {entry['treatment']} − {entry['baseline']} "
                      f"{val['difference']:+.2f} points (validation): {val['verdict']}")

    # What a user can cause and fix; a KeyError or any other error is a bug and keeps its traceback.
    from convbench.datasets import DataError

    return run_cli(build_parser(), argv, action, expected=(AggregateError, InconsistentResultsError,
                                                          StudyError, DataError, OSError))
