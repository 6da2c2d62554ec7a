"""What the report reads, and the checks that refuse a report that would be wrong.

Everything comes from the files the pipeline wrote: ``results/study.json`` and
``results/ablations.json`` (``convbench aggregate``), each run's metrics.json and perf.json, each
run's learning curve (``results/_curves/<experiment>/<run>.csv``, ``convbench aggregate
--experiment``: history.csv less its timings) and the prepared data. A file that is missing,
unreadable or disagrees with study.json (a stale aggregate) is refused with its name and the
command that makes it, before anything is drawn. perf.json alone may be missing: it holds
wall-clock measurements, not results, which DVC neither tracks nor shares (``.dvcignore``), so a
clone that pulled a study has none, and the report says "n/a".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from convbench.prepare import Dataset
from convbench.study import Run, Study


class ReportError(ValueError):
    """The report cannot be made from what is on disk; the message says what is missing."""


@dataclass(frozen=True)
class ReportData:
    """Everything the report reads, loaded once."""

    study: Study
    results: dict[str, Any]  # results/study.json, as written by ``convbench aggregate``
    run_metrics: dict[tuple[str, Run], dict[str, Any]]  # results/<exp>/<run>/metrics.json
    perf: dict[tuple[str, Run], dict[str, Any]]  # results/<exp>/<run>/perf.json, of the runs that have one
    history: pd.DataFrame  # every run's learning curve, with experiment, repeat, fold and seed columns
    dataset: Dataset
    # results/ablations.json, as convbench.stats.ablation_results rows
    ablations: list[dict[str, Any]] = field(default_factory=list)

    def runs_of(self, experiment: str) -> list[dict[str, Any]]:
        """The metrics of every run of ``experiment``."""
        return [self.run_metrics[experiment, run] for run in self.study.runs(experiment)]


def _read_json(path: Path, made_by: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist; make it with '{made_by}'") from None
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None


def load_ablations(study: Study, results: dict[str, Any], study_path: str | Path) -> list[dict[str, Any]]:
    """results/ablations.json, checked to compare exactly the study's named pairs on its folds, and
    every number in it (differences, interval, p, Holm's p, verdict, what it would take) against the
    same computation from study.json's per-run accuracies: a hand-edited verdict is refused."""
    from convbench.aggregate import ablations

    path = Path(study.ablations_path)
    document = _read_json(path, "convbench aggregate")
    found = {name: (entry.get("baseline"), entry.get("treatment"))
             for name, entry in document.get("ablations", {}).items()}
    wanted = {name: (a.baseline, a.treatment) for name, a in study.ablations.items()}
    if found != wanted or (document.get("folds"), document.get("repeats")) != (study.folds, study.repeats):
        raise ReportError(f"{path} does not compare this study's ablations on its {study.repeats} x "
                          f"{study.folds} folds (found {found or 'none'}); rerun 'convbench aggregate'")
    difference = first_difference(document, ablations(study, results))
    if difference is not None:
        key, have, want = difference
        raise ReportError(
            f"{path}: {key} is {have!r}, but the per-run accuracies in {study.study_results_path} give "
            f"{want!r}: the file was edited or is stale; write it again: convbench aggregate --study "
            f"{study_path} --out {study.study_results_path}")
    from convbench.stats import results_from_document

    return results_from_document(study, document)


def first_difference(have: Any, want: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first place where two JSON documents differ (numbers to rounding), as (key, have, want)."""
    import math

    if isinstance(want, dict):
        if not isinstance(have, dict) or set(have) != set(want):
            return key or "(top)", have if not isinstance(have, dict) else sorted(have), sorted(want)
        for k in want:
            found = first_difference(have[k], want[k], f"{key}.{k}" if key else k)
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return key, have, want
        for i, (a, b) in enumerate(zip(have, want)):
            found = first_difference(a, b, f"{key}[{i}]")
            if found:
                return found
        return None
    if isinstance(want, float) and isinstance(have, (int, float)) and not isinstance(have, bool):
        return None if math.isclose(have, want, rel_tol=1e-9, abs_tol=1e-12) else (key, have, want)
    return None if have == want else (key, have, want)


def load_study_results(
    study_path: str | Path, selection: str | None = None, results_dir: str | Path | None = None,
    smoke: int | None = None,
) -> tuple[Study, dict[str, Any]]:
    """The study and its results/study.json, checked to cover every experiment and fold.

    ``results_dir`` replaces the study's own (where its ``convbench aggregate`` wrote).
    """
    from convbench.study import load_study

    study = load_study(study_path, selection, smoke)
    if results_dir is not None:
        study = replace(study, results_dir=str(results_dir).rstrip("/"))
    results = _read_json(Path(study.study_results_path), "convbench aggregate")
    check_results_belong_to_study(study, results, study_path)
    return study, results


def check_results_belong_to_study(study: Study, results: dict[str, Any], study_path: str | Path) -> None:
    """study.json's card (K, repeats, seeds, split) against the study and its split file, every
    experiment of it made with the study's settings, its means following from the runs it lists,
    those equal to the runs' own metrics.json, and every run recorded with the study's settings and
    split, its numbers following from its confusion matrices and scored from the model beside it
    (convbench.consistency); a ReportError naming the file and the fix otherwise."""
    from convbench.aggregate import ResultFileError, aggregate, read_json_file
    from convbench.consistency import (
        InconsistentResultsError,
        check_experiment_means,
        check_experiment_settings,
        check_listed_runs,
        check_run,
    )
    from convbench.datasets import DataError
    from convbench.split import study_split_ids

    where = study.study_results_path
    fix = f"aggregate the study again: convbench aggregate --study {study_path} --out {where}"
    try:
        split_ids = study_split_ids(study, study_path)
        card = results.get("study") or {}
        wanted = {"folds": study.folds, "repeats": study.repeats, "seed": study.seed,
                  "seeds": list(study.seeds), "split_id": split_ids[0]}
        for key, want in wanted.items():
            if card.get(key) != want:
                raise ReportError(f"{where}: study.{key} is {card.get(key)!r}, but the study {study_path} "
                                  f"(and its split file {study.split_path(0)}) gives {want!r}; {fix}")
        for name in study.experiments:
            row = results.get("experiments", {}).get(name)
            if row is None:
                raise ReportError(f"{where} has no experiment {name!r}; {fix}")
            check_experiment_settings(where, row, study, name, study_path)
            check_experiment_means(where, row, study, name, study_path)
            runs = {}
            for run in study.runs(name):
                path = Path(study.run_dir(name, run)) / "metrics.json"
                if not path.exists():
                    raise ReportError(f"{path} does not exist; make it with 'convbench evaluate'")
                metrics = read_json_file(path, "convbench evaluate")
                check_run(path, metrics, study, name, run, study_path, split_ids)
                runs[run.repeat, run.fold, run.seed] = (path, metrics)
            check_listed_runs(where, row, name, runs, study_path)
            recomputed = aggregate([metrics for _, metrics in runs.values()])["experiments"][name]
            difference = first_difference(row, recomputed)
            if difference is not None:
                key, have, want = difference
                raise ReportError(f"{where}: experiments.{name}.{key} is {have!r}, but its runs' metrics.json "
                                  f"give {want!r}: the file was edited or is stale; {fix}")
    except (InconsistentResultsError, ResultFileError, DataError) as err:
        raise ReportError(str(err)) from None


def load_report_data(
    study_path: str | Path,
    selection: str | None = None,
    results_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    smoke: int | None = None,
) -> ReportData:
    """Read the study, results/study.json, every run's files and the prepared data.

    ``results_dir`` and ``data_path`` default to the study's own paths. A run file that disagrees
    with study.json (a stale aggregate) is refused rather than reported.
    """
    from convbench.consistency import InconsistentResultsError, check_curve
    from convbench.prepare import load_prepared

    study, results = load_study_results(study_path, selection, results_dir, smoke)
    run_metrics: dict[tuple[str, Run], dict[str, Any]] = {}
    perf: dict[tuple[str, Run], dict[str, Any]] = {}
    histories = []
    for name in study.experiments:
        expected = {(r["repeat"], r["fold"], r["seed"]): r["val_acc"]
                    for r in results["experiments"][name]["per_run"]}
        for run in study.runs(name):
            run_dir = Path(study.run_dir(name, run))
            metrics = _read_json(run_dir / "metrics.json", "convbench evaluate")
            value = expected[run.repeat, run.fold, run.seed]
            if metrics["val"]["accuracy"] != value:
                raise ReportError(
                    f"{run_dir / 'metrics.json'} disagrees with {study.study_results_path} "
                    f"(val accuracy {metrics['val']['accuracy']} vs {value}); "
                    "rerun 'convbench aggregate'"
                )
            run_metrics[name, run] = metrics
            timings = find_perf(run_dir, metrics, study, f"convbench run --study {study_path} --experiment {name}")
            if timings is not None:
                perf[name, run] = timings
            curve = Path(study.curves_dir(name)) / f"{run.name}.csv"
            made_by = f"convbench aggregate --study {study_path} --experiment {name} --out " \
                      f"{study.experiment_results_path(name)} --curves-out {study.curves_dir(name)}"
            history = read_history(curve, made_by)
            try:
                check_curve(curve, history.to_dict("records"), run_dir / "metrics.json", metrics,
                            f"write it again: {made_by}")
            except InconsistentResultsError as err:
                raise ReportError(str(err)) from None
            histories.append(history.assign(experiment=name, repeat=run.repeat, fold=run.fold, seed=run.seed))
    check_scores(study, results, study_path)
    dataset = load_prepared(data_path if data_path is not None else study.prepared_path)
    return ReportData(study, results, run_metrics, perf, pd.concat(histories, ignore_index=True), dataset,
                      load_ablations(study, results, study_path))


def check_scores(study: Study, results: dict[str, Any], study_path: str | Path) -> None:
    """results/scores.json (what DVC shows as metrics) against study.json, from which it is written:
    an edited copy is refused, not left for ``dvc metrics`` to show."""
    from convbench.aggregate import scores

    path = Path(study.scores_path)
    difference = first_difference(_read_json(path, "convbench aggregate"), scores(results))
    if difference is not None:
        key, have, want = difference
        raise ReportError(f"{path}: {key} is {have!r}, but {study.study_results_path} gives {want!r}: the "
                          f"file was edited or is stale; write it again: convbench aggregate --study "
                          f"{study_path} --out {study.study_results_path}")


# What the report reads from a run's perf.json ("a.b": key b inside a), and the types it needs.
PERF_KEYS = {"training.seconds": (int, float), "training.devices": (list,), "inference.device": (str,),
             "inference.images_per_s": (int, float, type(None))}


def read_perf(path: Path, rerun: str) -> dict[str, Any]:
    """A run's perf.json, checked to hold what the report reads; otherwise a ReportError naming the
    file and both fixes (it holds timings only, so deleting it loses no result)."""
    perf = _read_json(path, rerun)
    for key, types in PERF_KEYS.items():
        node: Any = perf
        for part in key.split("."):
            node = node.get(part, ReportError) if isinstance(node, dict) else ReportError
        if node is ReportError or not isinstance(node, types) or isinstance(node, bool):
            raise ReportError(f"{path}: {'no ' + key if node is ReportError else key + ' is ' + repr(node)}: not "
                              f"a perf.json written by convbench evaluate; delete it (it holds timings only: "
                              f"the report then shows n/a for this run) or remake it: {rerun}")
    return perf


def find_perf(run_dir: Path, metrics: dict[str, Any], study: Study, rerun: str) -> dict[str, Any] | None:
    """The timings of the model a run's metrics.json reports: its perf.json when that measured this
    model, else the study's store of timings by model (which a DVC checkout leaves alone), else
    None (never measured here: a clone that pulled the study)."""
    model = metrics.get("model_sha256")
    for path in (run_dir / "perf.json", Path(study.timings_dir) / f"{model}.json"):
        if path.exists():
            timings = read_perf(path, rerun)
            if timings.get("model_sha256") in (None, model):  # None: written before it was recorded
                return timings
    return None


HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def read_history(path: Path, made_by: str = "convbench train") -> pd.DataFrame:
    """A run's history.csv or learning curve, refused with the file's name (and the command that
    makes it, ``made_by``) when it is missing, empty or not one."""
    if not path.exists():
        raise ReportError(f"{path} does not exist; make it with '{made_by}'")
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not a history written by '{made_by}' ({err}); run it again") from None
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing or history.empty:
        raise ReportError(f"{path}: expected columns {', '.join(HISTORY_COLUMNS)} and one row per "
                          f"epoch, found {'no rows' if not missing else 'no ' + ', '.join(missing)}; "
                          f"run '{made_by}' again")
    if not all(pd.api.types.is_numeric_dtype(history[c]) for c in HISTORY_COLUMNS):
        raise ReportError(f"{path}: a column of {', '.join(HISTORY_COLUMNS)} holds text, not numbers; "
                          f"run '{made_by}' again")
    return history
