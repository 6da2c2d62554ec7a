"""Every number a report shows belongs to the study it is reported under.

A run records the settings it was trained with (metrics.json); nothing stops a person, or a study
file edited while the pipeline runs, from leaving runs of other settings where the study's layout
puts its own. ``convbench aggregate`` (both steps) and ``convbench report`` therefore compare what
each run recorded with what the study asks for, and an aggregate with the runs it lists, and refuse
a mismatch naming the file, the setting, both values and the command that fixes it. The checks
only read files the engines already declare as the step's inputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from convbench.stats import mean_std, spread

# A run's settings that must equal the study's (metrics.json's keys; "recipe" is compared key by key).
RUN_SETTINGS = ("experiment", "arch", "knobs", "input_size", "recipe", "repeat", "fold", "seed",
                "train_seed", "threads")
# The same, as an experiment's results file (convbench aggregate --experiment) records them.
EXPERIMENT_SETTINGS = ("arch", "knobs", "input_size", "recipe", "threads")
_NOT_RECORDED = "<not recorded>"


class InconsistentResultsError(ValueError):
    """Results that do not belong to the study they are reported under, or an aggregate that does
    not follow from the runs it lists. The message names the file, what differs, both values and
    the command that fixes it."""


def rerun_command(study_path: str | Path, experiment: str) -> str:
    return f"convbench run --study {study_path} --experiment {experiment}"


def expected_run_settings(study: Any, experiment: str, run: Any) -> dict[str, Any]:
    """What a run of ``experiment`` must have recorded to belong to ``study``."""
    e = study.experiment(experiment)
    return {"experiment": experiment, "arch": e.arch, "knobs": dict(e.knobs),
            "input_size": e.input_size, "recipe": e.recipe.to_dict(), "repeat": run.repeat,
            "fold": run.fold, "seed": run.seed, "train_seed": run.train_seed, "threads": study.threads}


def expected_experiment_settings(study: Any, experiment: str) -> dict[str, Any]:
    e = study.experiment(experiment)
    return {"arch": e.arch, "knobs": dict(e.knobs), "input_size": e.input_size,
            "recipe": e.recipe.to_dict(), "threads": study.threads}


def differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(setting, found, wanted) for each setting that differs; dicts compared key by key
    (``recipe.lr``), a missing key shown as not recorded."""
    out = []
    for key, want in wanted.items():
        have = found.get(key, _NOT_RECORDED)
        if isinstance(want, dict) and isinstance(have, dict) and key != "knobs":
            out += [(f"{key}.{k}", h, w) for k, h, w in differences(have, want)]
            out += [(f"{key}.{k}", have[k], _NOT_RECORDED) for k in have if k not in want]
        elif have != want:
            out.append((key, have, want))
    return out


def _value(value: Any) -> str:
    return value if value is _NOT_RECORDED else repr(value)


def check_run_settings(metrics_path: str | Path, metrics: dict[str, Any], study: Any,
                       experiment: str, run: Any, study_path: str | Path) -> None:
    """Refuse a run whose recorded settings are not those ``study`` asks for."""
    wanted = expected_run_settings(study, experiment, run)
    found = {key: metrics.get(key, _NOT_RECORDED) for key in wanted}
    # a smoke run's result said as such first: its other differences follow from it
    diff = sorted(differences(found, wanted), key=lambda d: d[0] != "recipe.smoke")
    if diff:
        key, have, want = diff[0]
        more = f" (and {len(diff) - 1} more setting(s))" if len(diff) > 1 else ""
        what = ("a smoke run's result, whose numbers mean nothing" if key == "recipe.smoke" and have
                else "this run was made with other settings than the study reports")
        raise InconsistentResultsError(
            f"{metrics_path}: {key} is {_value(have)}, but the study {study_path} asks for "
            f"{_value(want)}{more}: {what}; "
            f"rerun experiment {experiment!r}: {rerun_command(study_path, experiment)}"
        )


def aggregate_fix(study: Any, experiment: str, results_path: str | Path, study_path: str | Path) -> str:
    """How to remake ``results_path``: the experiment's own results file, or the study's
    (study.json, which lists every experiment)."""
    if str(results_path) == str(study.study_results_path):
        return f"aggregate the study again: convbench aggregate --study {study_path} --out {results_path}"
    return (f"aggregate it again: convbench aggregate --study {study_path} --experiment {experiment} "
            f"--out {results_path}")


def check_experiment_settings(results_path: str | Path, results: dict[str, Any], study: Any,
                              experiment: str, study_path: str | Path) -> None:
    """Refuse an experiment's results file (or its entry in study.json) whose settings or runs are
    not the study's."""
    wanted = expected_experiment_settings(study, experiment)
    found = {key: results.get(key, _NOT_RECORDED) for key in wanted}
    diff = differences(found, wanted)
    if diff:
        key, have, want = diff[0]
        raise InconsistentResultsError(
            f"{results_path}: {key} is {_value(have)}, but the study {study_path} asks for "
            f"{_value(want)}: experiment {experiment!r} was run with other settings than the study "
            f"reports; rerun it: {rerun_command(study_path, experiment)}"
        )
    have_runs = sorted((r["repeat"], r["fold"], r["seed"]) for r in results.get("per_run", []))
    want_runs = sorted((run.repeat, run.fold, run.seed) for run in study.runs(experiment))
    if have_runs != want_runs:
        raise InconsistentResultsError(
            f"{results_path}: lists the runs (repeat, fold, seed) {have_runs}, but the study "
            f"{study_path} asks for {want_runs}; {aggregate_fix(study, experiment, results_path, study_path)}"
        )


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_experiment_means(results_path: str | Path, results: dict[str, Any], study: Any, experiment: str,
                           study_path: str | Path) -> None:
    """Refuse an experiment's means and spreads that do not follow from the per-run values it
    lists (a hand edit, or a file written half by one aggregation and half by another)."""
    runs = results.get("per_run") or []
    fix = aggregate_fix(study, experiment, results_path, study_path)
    if results.get("runs") != len(runs):
        raise InconsistentResultsError(f"{results_path}: runs is {results.get('runs')!r}, but it lists "
                                       f"{len(runs)} runs; {fix}")
    for metric in ("val_acc", "test_acc"):
        values = [r[metric] for r in runs]
        mean, std = mean_std(values)
        parts = spread(runs, values)
        recomputed = {f"{metric}_mean": mean, f"{metric}_std": std,
                      f"{metric}_fold_std": parts["fold_std"], f"{metric}_seed_std": parts["seed_std"]}
        for key, value in recomputed.items():
            if not _close(results.get(key), value):
                raise InconsistentResultsError(
                    f"{results_path}: {key} is {results.get(key)!r}, but its {len(runs)} runs' "
                    f"{metric} values give {value!r}; {fix}"
                )


def check_listed_runs(results_path: str | Path, results: dict[str, Any], experiment: str,
                      run_metrics: dict[tuple[int, int, int], tuple[Path, dict[str, Any]]],
                      study_path: str | Path) -> None:
    """Refuse per-run values of an aggregate that differ from the runs' own metrics.json."""
    for listed in results.get("per_run", []):
        key = (listed["repeat"], listed["fold"], listed["seed"])
        if key not in run_metrics:
            continue  # the run list itself is check_experiment_settings's
        path, metrics = run_metrics[key]
        for name, section in (("val_acc", "val"), ("test_acc", "test")):
            own = metrics[section]["accuracy"]
            if listed[name] != own:
                raise InconsistentResultsError(
                    f"{results_path}: experiment {experiment!r} lists {name} {listed[name]!r} for the "
                    f"run in {path.parent}, whose metrics.json says {own!r}; aggregate again: "
                    f"convbench aggregate --study {study_path} --experiment {experiment}, then "
                    f"convbench aggregate --study {study_path}"
                )


def evaluate_command(study_path: str | Path, experiment: str, run: Any) -> str:
    return (f"convbench evaluate --study {study_path} --experiment {experiment} --repeat {run.repeat} "
            f"--fold {run.fold} --seed {run.seed}")


def retrain_command(study_path: str | Path, experiment: str, run: Any) -> str:
    return (f"convbench run --study {study_path} --experiment {experiment} --repeat {run.repeat} "
            f"--fold {run.fold} --seed {run.seed}")


def check_run_numbers(metrics_path: str | Path, metrics: dict[str, Any], fix: str) -> None:
    """A run's reported numbers against the counts they come from: each accuracy (validation and
    test) and per-class accuracy against its confusion matrix, the image count against its sum."""
    for section in ("val", "test"):
        part = metrics.get(section) or {}
        matrix = part.get("confusion_matrix")
        if not (isinstance(matrix, list) and matrix and all(isinstance(row, list) and len(row) == len(matrix)
                                                             and all(type(v) is int for v in row)
                                                             for row in matrix)):
            raise InconsistentResultsError(f"{metrics_path}: no {section} confusion matrix to check its "
                                           f"accuracy against; {fix}")
        total = sum(map(sum, matrix))
        right = sum(matrix[i][i] for i in range(len(matrix)))
        counted = {"n": total, "accuracy": right / total if total else None}
        counted["per_class_accuracy"] = [row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]
        for key, value in counted.items():
            have = part.get(key)
            if not _same(have, value):
                raise InconsistentResultsError(
                    f"{metrics_path}: {section}.{key} is {have!r}, but its confusion matrix gives "
                    f"{value!r}: the file was edited or damaged after evaluation; {fix}")


def _same(have: Any, want: Any) -> bool:
    """Equal numbers (to rounding), or equal lists of them."""
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(_same, have, want))
    if have is None or want is None:
        return have is want
    return isinstance(have, (int, float)) and not isinstance(have, bool) and _close(have, want)


def check_run_model(metrics_path: str | Path, metrics: dict[str, Any], model_path: str | Path,
                    study_path: str | Path, experiment: str, run: Any) -> None:
    """A run's metrics against the model beside it: metrics.json records the sha256 of the
    model.pt it scored, so a model replaced (another fold's), truncated or retrained since is
    refused rather than reported under numbers that are not its own."""
    from convbench._io import sha256_file

    recorded = metrics.get("model_sha256")
    if recorded is None:
        raise InconsistentResultsError(
            f"{metrics_path}: does not name the model it scored (no model_sha256: written by an older "
            f"convbench evaluate); score it again: {evaluate_command(study_path, experiment, run)}")
    try:
        actual = sha256_file(model_path)
    except FileNotFoundError:
        raise InconsistentResultsError(
            f"{model_path} does not exist, so the numbers in {metrics_path} cannot be checked against "
            f"it; train and score the run again: {retrain_command(study_path, experiment, run)}") from None
    if actual != recorded:
        raise InconsistentResultsError(
            f"{model_path}: its sha256 is {actual[:16]}…, but {metrics_path} was computed from the model "
            f"{recorded[:16]}…: the model was replaced, damaged or retrained after it was scored; train "
            f"and score the run again: {retrain_command(study_path, experiment, run)} (or, if model.pt is "
            f"the one you want, score it: {evaluate_command(study_path, experiment, run)})")


def check_run_split(metrics_path: str | Path, metrics: dict[str, Any], split_ids: dict[int, str],
                    study: Any, experiment: str, run: Any, study_path: str | Path) -> None:
    """A run against the study's split, read again from its file: after an edit of ``folds`` or the
    split ``seed``, runs trained on the old split are refused, not reported with the new K."""
    want = split_ids[run.repeat]
    if metrics.get("split_id") != want:
        raise InconsistentResultsError(
            f"{metrics_path}: this run was trained on split {str(metrics.get('split_id'))[:12]}, but the "
            f"study {study_path} splits with K={study.folds} and seed {study.split_seed(run.repeat)} "
            f"({study.split_path(run.repeat)}, split {want[:12]}); rerun experiment {experiment!r} on "
            f"it: {rerun_command(study_path, experiment)}")


def check_run(metrics_path: Path, metrics: dict[str, Any], study: Any, experiment: str, run: Any,
              study_path: str | Path, split_ids: dict[int, str]) -> None:
    """Everything a run's metrics.json must satisfy to be reported under ``study``: its settings,
    its split, its numbers against their counts and against the model beside it."""
    check_run_settings(metrics_path, metrics, study, experiment, run, study_path)
    check_run_split(metrics_path, metrics, split_ids, study, experiment, run, study_path)
    check_run_numbers(metrics_path, metrics, f"score it again: {evaluate_command(study_path, experiment, run)}")
    check_run_model(metrics_path, metrics, metrics_path.parent / "model.pt", study_path, experiment, run)


def check_curve(curve_path: str | Path, rows: list[dict[str, Any]], metrics_path: str | Path,
                metrics: dict[str, Any], fix: str) -> None:
    """A run's learning curve (history.csv, or the curve written from it) against the curve its
    metrics.json took from the checkpoint: to the 6 significant digits history.csv keeps."""
    want = metrics.get("curve")
    if not isinstance(want, list):
        raise InconsistentResultsError(f"{metrics_path}: no learning curve to check {curve_path} against "
                                       f"(written by an older convbench evaluate); {fix}")
    if len(rows) != len(want):
        raise InconsistentResultsError(f"{curve_path}: {len(rows)} epochs, but {metrics_path} records "
                                       f"{len(want)}; {fix}")
    for have, expected in zip(rows, want):
        for key, value in expected.items():
            try:
                found = float(have[key])
            except (KeyError, TypeError, ValueError):
                found = None
            if found is None or not math.isclose(found, value, rel_tol=1e-5, abs_tol=1e-9):
                raise InconsistentResultsError(
                    f"{curve_path}: epoch {expected['epoch']} {key} is {have.get(key)!r}, but the run's "
                    f"checkpoint recorded {value!r} ({metrics_path}): the file was edited or damaged; {fix}")
