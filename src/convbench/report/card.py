"""The page's opening paragraph and the study card: what was run, on what, with what.

The facts a reader needs to trust or redo the numbers: the data and its checksum, the
cross-validation, the recipe and its exceptions, the code versions and packages, the CPU types
(with a warning when the runs came from several: CPU results are bit-identical only on one), the
devices and the compute time.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from convbench import provenance
from convbench.report.load import ReportData
from convbench.report.tables import MISSING, best_experiment, percent
from convbench.study import SMOKE_EPOCHS, SMOKE_EVAL_BATCH, SMOKE_SUFFIX, Study


def _settings(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def recipe_exceptions(
    recipes: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The recipe most experiments share (each setting's most common value) and, per experiment,
    the settings where it departs from that."""
    keys = list(dict.fromkeys(k for recipe in recipes.values() for k in recipe))
    common = {}
    for key in keys:
        values = [json.dumps(recipe.get(key), sort_keys=True) for recipe in recipes.values()]
        common[key] = json.loads(max(dict.fromkeys(values), key=values.count))
    exceptions = {
        name: diff for name, recipe in recipes.items()
        if (diff := {k: recipe.get(k) for k in keys if recipe.get(k) != common[k]})
    }
    return common, exceptions


def study_card(data: ReportData) -> pd.DataFrame:
    """What was run, on what, with what: the facts a reader needs to trust or redo the numbers."""
    study, results, dataset = data.study, data.results, data.dataset
    card = results.get("study", {})
    common, exceptions = recipe_exceptions(
        {name: data.runs_of(name)[0]["recipe"] for name in study.experiments}
    )
    training_devices = sorted({d for p in data.perf.values() for d in p["training"].get("devices", [])})
    inference_devices = sorted({p["inference"]["device"] for p in data.perf.values()})
    mismatch = "" if card.get("data_sha256") == dataset.sha256 else \
        f" (the models were trained on {card.get('data_sha256')}: the data file has changed since)"
    size = f"{dataset.in_channels} × {dataset.image_size} × {dataset.image_size}"
    rows = [
        *([("smoke run", f"{SMOKE_WARNING}: {study.smoke} batch(es) per epoch, folds "
                         f"{', '.join(map(str, study.run_folds))} of {study.folds}")] if study.smoke else []),
        ("study", f"{study.name}: {study.description}".rstrip(": ")),
        ("data set", f"{dataset.name}: {len(dataset.train_labels):,} train / {len(dataset.test_labels):,} "
                     f"test images of {size}"),
        ("classes", f"{dataset.num_classes}: {', '.join(dataset.classes)}"),
        ("data checksum (sha256)", f"{dataset.sha256}{mismatch}"),
        ("cross-validation", cross_validation_text(study, card)),
        ("experiments", f"{len(study.experiments)} ({len(study.all_runs())} training runs), "
                        f"{len(study.ablations)} named ablations"),
        ("recipe", _settings(common)),
        *([("recipe exceptions", "; ".join(f"{n}: {_settings(d)}" for n, d in exceptions.items()))]
          if exceptions else []),
        ("code version(s)", code_versions_text(card)),
        ("packages", _settings(card.get("packages", {}))),
        ("CPU type(s)", cpu_types(data)),
        ("device per run", run_devices(data)),
        ("TF32", tf32_text(data)),
        ("training device(s)", ", ".join(training_devices) or MISSING),
        ("inference device(s)", ", ".join(inference_devices) or MISSING),
        ("compute time", compute_time(data)),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


def code_versions_text(card: dict[str, Any]) -> str:
    """The code that trained the runs, by commit: each run records the version of the files its
    network's training executes (``convbench.provenance.training_code_version``), so one commit
    has one source sha256 per network."""
    by_commit: dict[str, tuple[int, set[str]]] = {}
    for entry in card.get("code_versions", []):
        version = entry["code_version"]
        if isinstance(version, dict) and "scope" in version:
            key = provenance.commit_text(version)
            runs, hashes = by_commit.get(key, (0, set()))
            by_commit[key] = (runs + entry["runs"], hashes | {str(version.get("source_sha256"))})
        else:  # the whole package's version, as older results record it
            by_commit[provenance.describe(version)] = (entry["runs"], set())
    return "; ".join(
        f"{key}{f', the training code of {len(hashes)} network(s)' if hashes else ''} ({runs} runs)"
        for key, (runs, hashes) in by_commit.items()
    ) or str(card.get("code_version", "?"))


def cpu_types(data: ReportData) -> str:
    """The CPU model and instruction set the runs were trained on, warning when there are several:
    CPU results are bit-identical only on one CPU type with one thread count."""
    counts: dict[str, int] = {}
    for metrics in data.run_metrics.values():
        cpu = metrics.get("cpu")
        name = f"{cpu['model']} ({cpu['capability']})" if isinstance(cpu, dict) else "not recorded"
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return f"{next(iter(counts))}, all {len(data.run_metrics)} runs"
    listed = "; ".join(f"{name}: {runs} runs" for name, runs in sorted(counts.items(), key=lambda c: -c[1]))
    return (f"WARNING: the runs came from {len(counts)} CPU types ({listed}). CPU results are "
            "bit-identical only on one CPU type with one thread count, so a rerun on one machine "
            "may differ from these numbers")


def run_devices(data: ReportData) -> str:
    """Each run's training device as its metrics.json records it (asked, used, auto's fallback to
    the CPU with its reason), counted; a fallback leads, so a study meant for a GPU cannot pass a
    CPU run off as a GPU one."""
    counts: dict[str, int] = {}
    fell_back = 0
    for metrics in data.run_metrics.values():
        device = metrics.get("device")
        if not isinstance(device, dict):
            name = "not recorded"
        elif device.get("fallback"):
            fell_back += 1
            name = f"{device['used']} (asked {device['asked']}; fell back to the CPU: {device['fallback']})"
        else:
            name = f"{device['used']} (asked {device['asked']})"
        counts[name] = counts.get(name, 0) + 1
    listed = "; ".join(f"{name}: {runs} run{'s' if runs != 1 else ''}"
                       for name, runs in sorted(counts.items(), key=lambda c: -c[1]))
    if fell_back:
        return f"{fell_back} of {len(data.run_metrics)} runs fell back to the CPU (device auto). {listed}"
    return listed or MISSING


def tf32_text(data: ReportData) -> str:
    """Whether fp32 convolutions and matrix products ran in TF32 (recipe ``tf32``; GPU runs only)."""
    recorded = [m["device"] for m in data.run_metrics.values() if isinstance(m.get("device"), dict)]
    on = sum(bool(d.get("tf32")) for d in recorded)
    unknown = len(data.run_metrics) - len(recorded)
    if on:
        text = f"on in {on} of {len(data.run_metrics)} runs (recipe tf32: true, on a GPU): not full fp32"
    else:
        text = (f"off in all {len(recorded)} runs that record it: fp32 convolutions and matrix products "
                "in full fp32 (recipe tf32: false, or a CPU)")
    return text + (f"; not recorded in {unknown} runs" if unknown else "")


def compute_time(data: ReportData) -> str:
    """Training and test-set inference time summed over the jobs, saying which jobs it covers when
    some have no perf.json (aggregate allows that), rather than passing a part off as the whole."""
    jobs, timed = len(data.run_metrics), len(data.perf)
    if not timed:
        return f"{MISSING}: none of the {jobs} jobs has a perf.json"
    seconds = sum(p["training"]["seconds"] for p in data.perf.values())
    inference_seconds = sum(
        len(data.dataset.test_labels) / p["inference"]["images_per_s"] for p in data.perf.values()
        if p["inference"].get("images_per_s")
    )
    over = f"all {timed} jobs' epochs" if timed == jobs else \
        f"the epochs of the {timed} of {jobs} jobs with a perf.json"
    return (f"{seconds:,.1f} s of training (sum over {over}) "
            f"+ {inference_seconds:,.1f} s of test-set inference")


def cross_validation_text(study: Study, card: dict[str, Any]) -> str:
    """Repeats, folds, split and training seeds in words, said the same way in the header and the
    study card."""
    repeats = (f"{study.repeats} repeats of " if study.repeats > 1 else "")
    seeds = (f"; each fold trained with seeds {', '.join(map(str, study.seeds))}"
             if len(study.seeds) > 1 else f"; training seed {study.seeds[0]}")
    for own, names in list(study.seed_groups().items())[1:]:  # experiments with their own seeds
        seeds += f"; {', '.join(names)} with seeds {', '.join(map(str, own))}"
    split_seeds = (f"split seeds {study.seed}–{study.split_seed(study.repeats - 1)}" if study.repeats > 1
                   else f"split seed {study.seed}, split {card.get('split_id', '?')}")
    return f"{repeats}{study.folds} stratified folds of the train part ({split_seeds}){seeds}"


SMOKE_WARNING = "SMOKE RUN: these numbers mean nothing"


def smoke_banner_html(study: Study) -> str:
    """A smoke run's report says so before anything else, in a box no reader can miss; a real
    study's has none."""
    if not study.smoke:
        return ""
    real_dir = study.results_dir.removesuffix(SMOKE_SUFFIX)
    return (
        '<div class="convbench-smoke" style="border: 6px solid #c00; background: #fee; color: #900; '
        'padding: 1em; margin: 1em 0; font-size: 1.4em;">'
        f"<b>{SMOKE_WARNING}.</b> Every run trained {study.smoke} batch(es) per epoch for "
        f"{SMOKE_EPOCHS} epoch(s), stopping and resuming from its checkpoint after the first, on folds {', '.join(map(str, study.run_folds))} of "
        f"{study.folds}, and was validated and tested on {study.smoke} batch(es) of at most "
        f"{SMOKE_EVAL_BATCH} images (smoke: {study.smoke}). This report shows that the study runs "
        "end to end (data, every network at its input size, checkpoints and resume, evaluation, aggregation, "
        f"every section of the report), not how well any network learns. The real study's results "
        f"are in {html.escape(real_dir)}/, never here.</div>"
    )


def header_html(data: ReportData) -> str:
    """The title and the one-sentence answer: the best experiment by validation accuracy."""
    study = data.study
    best = best_experiment(data.results)
    row = data.results["experiments"][best]
    return (
        smoke_banner_html(study)
        + f"<h1>convbench {'SMOKE ' if study.smoke else ''}report: {html.escape(study.name)}</h1>"
        f"<p>{html.escape(study.description)}</p>"
        f"<p>{len(study.experiments)} experiments on <b>{html.escape(data.dataset.name)}</b>, "
        f"{cross_validation_text(study, data.results.get('study', {}))}. Best by cross-validated "
        f"validation accuracy: <b>{html.escape(best)}</b>, {percent(row['val_acc_mean'])} ± "
        f"{percent(row['val_acc_std'])} % (test {percent(row['test_acc_mean'])} ± "
        f"{percent(row['test_acc_std'])} %).</p>"
    )
