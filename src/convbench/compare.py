"""``convbench compare``: is a study, finished or not, the one its authors ran?

Holds the runs that exist against each expected file of the study (:mod:`convbench.expected`):

1. **Identical**: a run is identical to an expected one when its weights and its metric numbers
   are, whatever made it. Matching bytes count whatever the CPU record says (a Zen 4 can reproduce
   a Zen 5 exactly); the record (CPU type, threads, training code, packages) is printed beside.
2. **Reproduced within noise**, where no expected file's bytes match (another CPU type, thread
   count or training code round differently): per experiment, your mean validation and test
   accuracy against the expected mean of the same runs, within the tolerance the expected runs'
   own spread sets (:func:`tolerance`), and every ablation's verdict the same.

A partial study is checked as far as it goes, and the runs missing are listed; ``compare`` exits 0
only for a complete study that is identical or reproduced within noise (``--exact``: identical).

    convbench compare --select fashion_mnist_chapter             # after its snakemake run
    convbench compare --select fashion_mnist_chapter --write     # record them (the study's authors)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convbench._io import run_cli
from convbench.expected import (
    EXPECTED_DIR,
    METRICS,
    ExpectedError,
    canonical_sha256,
    collect,
    cpu_slug,
    cpu_type,
    default_paths,
    expected_document,
    load_expected,
    read_json,
    write_expected,
)
from convbench.provenance import changed_files, describe
from convbench.study import Study, StudyError, load_study, study_file

CONFIDENCE = 0.95
METRIC_NAMES = {"val_acc": "validation", "test_acc": "test"}


# ----------------------------------------------------------------------------- identity


def identical(run: dict[str, Any], entry: dict[str, Any], file_format: int) -> bool:
    """Does a run hold what an expected run holds? Format 1 files know only the files' bytes."""
    if file_format >= 2:
        return run["weights"] == entry["weights"] and run["metrics"] == entry["metrics"]
    return all(run["files"][name] == entry[name] for name in ("model.pt", "metrics.json"))


def matching(runs: dict[str, dict[str, Any]], document: dict[str, Any]) -> list[str]:
    return [key for key, run in runs.items()
            if key in document["runs"] and identical(run, document["runs"][key], document["format"])]


# -------------------------------------------------------------------------------- verdicts


def verdicts(study: Study, accuracies: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]] | None:
    """Each ablation's verdicts, computed from per-run accuracies as ``convbench aggregate`` does,
    or None when a run of an ablation's experiments is missing (the ablations are adjusted as one
    family, so one missing run leaves every verdict open)."""
    from convbench.stats import ABLATION_METRICS, ablation_results

    if not study.ablations:
        return {}
    experiments: dict[str, dict[str, Any]] = {}
    for experiment, run in study.all_runs():
        entry = accuracies.get(f"{experiment}/{run.name}")
        if entry is None:
            if any(experiment in (a.baseline, a.treatment) for a in study.ablations.values()):
                return None
            continue
        experiments.setdefault(experiment, {"per_run": []})["per_run"].append(
            {"repeat": run.repeat, "fold": run.fold, "seed": run.seed,
             **{metric: entry[metric] for metric in METRICS}})
    keys = {label: key for key, label in ABLATION_METRICS}
    found: dict[str, dict[str, str]] = {}
    for row in ablation_results(study, {"experiments": experiments}):
        found.setdefault(row["ablation"], {})[keys[row["metric"]]] = row["verdict_code"]
    return found


# ------------------------------------------------------------------------- within noise


def standard_error(expected: list[float], compared: int, images: int) -> float:
    """The standard error of the difference between your mean of ``compared`` runs and the expected
    mean of the same runs: ``s * sqrt(2 / k)``, with ``s`` the standard deviation of the m expected
    runs (folds and seeds), at least one image's worth of accuracy (``1 / images``), and ``k`` the
    runs compared. A run on another CPU type rounds differently from its first step and ends as far
    from the expected one as another seed would; ``s`` includes the spread over folds, which paired
    runs share, so the rule errs towards "within noise" for a difference smaller than the study's own
    spread."""
    if len(expected) < 2 or compared < 1:
        return math.nan
    spread = max(float(np.std(expected, ddof=1)), 1 / images if images else 0.0)
    return spread * math.sqrt(2 / compared)


def tolerance(expected: list[float], compared: int, images: int) -> float:
    """The 95 % bound of the difference of one experiment taken alone: ``t(0.975, m - 1)`` standard
    errors (:func:`standard_error`). Shown beside each difference; the verdict adjusts for the number
    of experiments compared (:func:`agreements`)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(expected) - 1) * standard_error(expected, compared, images))


@dataclass(frozen=True)
class Agreement:
    experiment: str
    metric: str
    runs: int  # compared: yours that the expected file also has
    yours: float
    expected: float
    error: float  # standard_error
    df: int  # the expected runs' degrees of freedom, m - 1
    tolerance: float  # the 95 % bound of this difference taken alone
    p_holm: float = math.nan

    @property
    def difference(self) -> float:
        return self.yours - self.expected

    @property
    def p(self) -> float:
        """Two-sided p of the difference, the t distribution with ``df`` degrees of freedom."""
        from scipy import stats

        if math.isnan(self.error):
            return math.nan
        if self.error == 0:
            return 1.0 if self.difference == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.difference) / self.error, self.df))

    @property
    def agrees(self) -> bool:
        """Off only when the difference is significant at 5 % after Holm's adjustment over every
        experiment and both accuracies compared: with 17 experiments, 34 comparisons at 5 % each
        would call about two of them off by chance alone."""
        return not self.p_holm < 1 - CONFIDENCE


def agreements(study: Study, runs: dict[str, dict[str, Any]], document: dict[str, Any]) -> list[Agreement]:
    """Per experiment with runs on both sides and metric, your mean against the expected one, with
    Holm's adjustment over them all (as the study's ablations are adjusted, convbench.stats)."""
    from convbench.stats import holm

    by_experiment: dict[str, list[str]] = {}
    for experiment, run in study.all_runs():
        by_experiment.setdefault(experiment, []).append(f"{experiment}/{run.name}")
    rows = []
    for experiment, keys in by_experiment.items():
        expected_runs = [document["runs"][k] for k in keys if k in document["runs"]]
        compared = [k for k in keys if k in runs and k in document["runs"]]
        if not compared:
            continue
        for metric in METRICS:
            images = min(int(document["runs"][k].get(metric.replace("acc", "images"), 0) or 0) for k in compared)
            values = [float(r[metric]) for r in expected_runs]
            rows.append(Agreement(
                experiment, metric, len(compared),
                float(np.mean([runs[k][metric] for k in compared])),
                float(np.mean([document["runs"][k][metric] for k in compared])),
                standard_error(values, len(compared), images), len(values) - 1,
                tolerance(values, len(compared), images)))
    adjusted = holm([row.p for row in rows])
    return [dataclasses.replace(row, p_holm=p) for row, p in zip(rows, adjusted)]


def agreement_table(rows: list[Agreement]) -> list[str]:
    head = "yours, expected, difference (95 % bound, Holm p)"
    lines = [f"  {'experiment':<28} {'runs':>4}  {'validation: ' + head:<62} test: {head}"]
    by_experiment: dict[str, dict[str, Agreement]] = {}
    for row in rows:
        by_experiment.setdefault(row.experiment, {})[row.metric] = row
    for experiment, metrics in by_experiment.items():
        cells = []
        for metric in METRICS:
            r = metrics[metric]
            cells.append(f"{100 * r.yours:6.2f} % {100 * r.expected:6.2f} % {100 * r.difference:+.2f} "
                         f"(±{100 * r.tolerance:.2f}, p {r.p_holm:.2f}){'' if r.agrees else '  OFF'}")
        lines.append(f"  {experiment:<28} {metrics['val_acc'].runs:>4}  {cells[0]:<62} {cells[1]}")
    return lines


# ---------------------------------------------------------------------------- the record


def record_lines(documents_made_with: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> list[str]:
    """Whether the CPU type, thread count, training code and packages that made your runs are the
    ones that made the expected: said beside the verdict, never deciding it."""
    yours = list({canonical_sha256(r["made_with"]): r["made_with"] for r in runs.values()}.values())
    lines = []
    for key, what, show in (("cpu", "CPU type", cpu_type), ("threads", "torch threads", str),
                            ("packages", "packages", lambda p: ", ".join(f"{k} {v}" for k, v in sorted((p or {}).items())))):
        have = sorted({show(m.get(key)) for m in yours})
        want = sorted({show(m.get(key)) for m in documents_made_with})
        if have == want:
            lines.append(f"{what}: the same: {'; '.join(have)}")
        else:
            lines.append(f"{what}: differs: yours {'; '.join(have)}; expected {'; '.join(want)}")
    lines.append(code_line([m.get("code_version") for m in yours],
                           [m.get("code_version") for m in documents_made_with]))
    return lines


def code_line(yours: list[Any], expected: list[Any]) -> str:
    """``code version: the same``, or the training files that differ."""
    if {canonical_sha256(v) for v in yours} == {canonical_sha256(v) for v in expected}:
        return "code version: the same"
    by_scope = {v.get("scope"): v for v in expected if isinstance(v, dict)}
    files: set[str] = set()
    for version in yours:
        scope = version.get("scope") if isinstance(version, dict) else None
        differing = changed_files(version, by_scope.get(scope)) if scope in by_scope else None
        if differing is None:
            have = "; ".join(sorted({describe(v) for v in yours}))
            want = "; ".join(sorted({describe(v) for v in expected}))
            return f"code version: differs: yours {have}; expected {want}"
        files.update(differing)
    if not files:  # the same files, another commit or dirty flag
        return "code version: the same training files, recorded under another commit"
    return f"code version: differs: {', '.join(sorted(files))}"


# ------------------------------------------------------------------------------- compare


def compare(study: Study, documents: list[dict[str, Any]], exact: bool = False) -> tuple[list[str], bool]:
    """The report's lines and whether the study is complete and reproduced."""
    runs, missing = collect(study)
    total = len(runs) + len(missing)
    if not runs:
        raise ExpectedError(f"{study.results_dir}: no finished run of the study {study.name!r} "
                            "(each run's model.pt and metrics.json); run the study first")
    lines = [f"{study.name}: {len(runs)} of {total} runs finished, held against "
             f"{len(documents)} expected file(s):"]
    matches = {id(d): matching(runs, d) for d in documents}
    for document in documents:
        made = "; ".join(sorted({cpu_type(m.get("cpu")) for m in document["made_with"]}))
        lines.append(f"  {document['path']}: {len(matches[id(document)])} of {len(runs)} runs identical "
                     f"(made on {made})")
    inconsistent = [k for k, r in runs.items() if r["scored_model"] is False]
    for key in inconsistent:
        lines.append(f"  {key}: its model.pt is not the model its metrics.json scored; score it again "
                     "(convbench evaluate) or retrain it")
    your_verdicts = verdicts(study, runs)

    best = max(documents, key=lambda d: len(matches[id(d)]))
    ok_runs = not inconsistent
    if len(matches[id(best)]) == len(runs) and ok_runs:
        same_verdicts = your_verdicts is None or your_verdicts == best["verdicts"]
        verdict_text = (f"all {len(best['verdicts'])} ablations' verdicts" if your_verdicts is not None
                        else "the ablations' verdicts not checked (runs missing)")
        if same_verdicts:
            head = "identical" if not missing else "identical so far"
            lines.append(f"{head}: {len(runs)} runs' weights and metrics and {verdict_text} match "
                         f"{best['path']}")
            lines += [f"  {line}" for line in record_lines(best["made_with"], runs)]
            return lines + missing_lines(missing, total), not missing

    numbered = [d for d in documents if d["format"] >= 2]
    if not numbered:
        lines.append(f"not identical: {len(runs) - len(matches[id(best)])} runs differ from {best['path']}, "
                     "and no expected file holds per-run numbers (written before format 2) to judge them "
                     "within noise; compare on the CPU type that made it, or ask for expected results "
                     "written by 'convbench compare --write' of this version")
        return lines + missing_lines(missing, total), False
    reference = max(numbered, key=lambda d: len(matches[id(d)]))
    lines.append(f"not identical to any expected file; within noise of {reference['path']}? Your mean "
                 "against the expected mean of the same runs; a difference is off when its t test (standard "
                 "error s * sqrt(2/k): s the spread of the m expected runs, k the runs compared) is "
                 "significant at 5 % after Holm's adjustment over every experiment and accuracy:")
    rows = agreements(study, runs, reference)
    lines += agreement_table(rows)
    experiments = sorted({r.experiment for r in rows})
    off = sorted({r.experiment for r in rows if not r.agrees})
    unknown = sorted(k for k in runs if k not in reference["runs"])
    if unknown:
        lines.append(f"  {len(unknown)} of your runs are not in the expected file (first: {unknown[0]})")
    verdict_notes, same = [], 0
    if your_verdicts is None:
        verdict_summary = "verdicts not checked (runs missing)"
    else:
        for name in sorted(reference["verdicts"].keys() | your_verdicts.keys()):
            have, want = your_verdicts.get(name), reference["verdicts"].get(name)
            if have == want:
                same += 1
            else:
                verdict_notes.append(f"ablation {name}: " + "; ".join(
                    f"{METRIC_NAMES[m]} {(have or {}).get(m, 'none')} (expected {(want or {}).get(m, 'none')})"
                    for m in METRICS if (have or {}).get(m) != (want or {}).get(m)))
        verdict_summary = f"{same} of {len(reference['verdicts'].keys() | your_verdicts.keys())} verdicts"
    lines += [f"  {note}" for note in verdict_notes]
    lines += [f"  {line}" for line in record_lines(reference["made_with"], runs)]
    reproduced = not off and not verdict_notes and not unknown and ok_runs
    summary = f"{len(experiments) - len(off)} of {len(experiments)} experiments, {verdict_summary}"
    if reproduced:
        lines.append(f"reproduced within noise: {summary}" + ("" if not missing else " (so far)"))
    else:
        named = [f"{experiment} (" + ", ".join(
                     f"{METRIC_NAMES[r.metric]} {100 * r.difference:+.2f} points, Holm p {r.p_holm:.2g}"
                     for r in rows if r.experiment == experiment and not r.agrees) + ")" for experiment in off]
        lines.append(f"not reproduced: {summary}; off: {', '.join(named + verdict_notes) or 'see above'}")
    lines += missing_lines(missing, total)
    return lines, reproduced and not missing and not exact


def missing_lines(missing: list[str], total: int) -> list[str]:
    if not missing:
        return []
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    return [f"incomplete: {len(missing)} of {total} runs missing ({shown}); checked the runs that exist"]


# ---------------------------------------------------------------------------------- write


def check_publishable(study: Study, runs: dict[str, dict[str, Any]], missing: list[str]) -> None:
    """Refuse to publish an unfinished, unaggregated or inconsistent study."""
    if missing:
        raise ExpectedError(f"the study {study.name!r} is not complete: {len(missing)} of "
                            f"{len(missing) + len(runs)} runs missing (first: {missing[0]}); finish it "
                            "before writing its expected results")
    for key, run in runs.items():
        if run["scored_model"] is not True:
            experiment, name = key.split("/")
            path = Path(study.results_dir) / experiment / name
            problem = ("is not the model its metrics.json scored (a truncated, replaced or retrained file)"
                       if run["scored_model"] is False else "is not named by its metrics.json (an older one)")
            raise ExpectedError(f"{path}/model.pt: {problem}; score it again with 'convbench evaluate' "
                                "or retrain it before writing expected results")
    results_path = Path(study.study_results_path)
    document = read_json(results_path, "the study's results written by 'convbench aggregate'")
    experiments = document.get("experiments") if isinstance(document, dict) else None
    if not isinstance(experiments, dict):
        raise ExpectedError(f"{results_path}: no 'experiments'; expected the study's results written by "
                            "'convbench aggregate'; run it again")
    for experiment, run in study.all_runs():
        listed = {(r.get("repeat"), r.get("fold"), r.get("seed")): r
                  for r in (experiments.get(experiment) or {}).get("per_run", [])}
        entry = listed.get((run.repeat, run.fold, run.seed))
        held = runs[f"{experiment}/{run.name}"]
        if entry is None or any(entry.get(m) != held[m] for m in METRICS):
            raise ExpectedError(f"{results_path}: does not hold the run {experiment}/{run.name} as it is "
                                "now (aggregated before it was retrained?); run the study's aggregation "
                                "(snakemake, dvc repro or 'convbench aggregate') before writing")


def target_path(study: Study, given: Path | None, runs: dict[str, dict[str, Any]], force: bool) -> Path:
    """Where --write writes: ``conf/expected/<study>/<cpu type>.json``, or a path given that
    belongs to the study (named after it, and not another study's file) unless ``force``."""
    slugs = sorted({cpu_slug(r["made_with"].get("cpu"), r["made_with"].get("threads")) for r in runs.values()})
    if given is None:
        if len(slugs) > 1:
            raise ExpectedError(f"the runs of {study.name!r} came from {len(slugs)} CPU types or thread "
                                f"counts ({', '.join(slugs)}): no one machine's expected results; give "
                                "--expected PATH to write them anyway")
        return EXPECTED_DIR / study.name / f"{slugs[0]}.json"
    path = given / f"{slugs[0]}.json" if given.is_dir() else given
    if force:
        return path
    if study.name not in (path.stem, path.parent.name):
        raise ExpectedError(f"{path}: not a file of the expected results of the study {study.name!r} (its "
                            f"name or directory is not {study.name!r}, as in {EXPECTED_DIR}/{study.name}/); "
                            "give --force to write there on purpose")
    if path.exists():
        existing = read_json(path, "expected results (it would be overwritten)")
        if not (isinstance(existing, dict) and existing.get("study") == study.name):
            found = existing.get("study") if isinstance(existing, dict) else type(existing).__name__
            raise ExpectedError(f"{path}: holds the expected results of {found!r}, not of {study.name!r}; "
                                "give --force to overwrite it on purpose")
    return path


def write(study: Study, given: Path | None, force: bool) -> str:
    runs, missing = collect(study)
    check_publishable(study, runs, missing)
    path = target_path(study, given, runs, force)
    found = verdicts(study, runs)
    document = expected_document(study, runs, found or {})
    write_expected(path, document)
    made = "; ".join(sorted({cpu_type(m.get("cpu")) for m in document["made_with"]}))
    return f"wrote {path}: {len(runs)} runs, {len(found or {})} ablations' verdicts, made on {made}"


# ------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench compare",
        description="Hold a study's runs (finished or not) against its expected results: 'identical' "
        "(the weights and metric numbers of every run, and the ablations' verdicts, whatever CPU or "
        "code made them), else 'reproduced within noise' (each experiment's mean accuracy within the "
        "expected runs' spread, every verdict the same), else what is off; the CPU type, threads, "
        "training code and packages beside it. Exit 0 only for a complete study that is identical or "
        "reproduced within noise.")
    parser.add_argument("--study", type=Path, default=Path("params.yaml"), help="a study file (params.yaml)")
    parser.add_argument("--select", default=None, metavar="NAME", help="a bundled study (conf/study/NAME.yaml)")
    parser.add_argument("--expected", type=Path, default=None, metavar="PATH",
                        help=f"an expected file or a directory of them (default: every file of "
                             f"{EXPECTED_DIR}/<study>/, and {EXPECTED_DIR}/<study>.json)")
    parser.add_argument("--exact", action="store_true",
                        help="exit 0 only if identical: reproduced within noise is not enough")
    parser.add_argument("--write", action="store_true",
                        help="record the finished, aggregated study as this machine's expected results "
                             f"({EXPECTED_DIR}/<study>/<cpu type>.json, or --expected)")
    parser.add_argument("--force", action="store_true",
                        help="with --write: write to a path that is not the study's own")
    return parser


def main(argv: list[str] | None = None) -> int:
    outcome = {"reproduced": True}

    def action(args: argparse.Namespace) -> None:
        study = load_study(study_file(args.study, args.select))
        if args.write:
            print(write(study, args.expected, args.force))
            return
        if args.force:
            raise ExpectedError("--force goes with --write")
        if args.expected is None:
            paths = default_paths(study)
        elif args.expected.is_dir():
            paths = sorted(args.expected.glob("*.json"))
        else:
            paths = [args.expected]
        if not paths:
            where = args.expected or f"{EXPECTED_DIR / study.name}/*.json nor {EXPECTED_DIR / study.name}.json"
            raise ExpectedError(f"no expected results for the study {study.name!r} ({where}); its authors "
                                "write them with 'convbench compare --write'")
        documents = [load_expected(path, study) for path in paths]
        lines, reproduced = compare(study, documents, exact=args.exact)
        print("\n".join(lines))
        outcome["reproduced"] = reproduced

    code = run_cli(build_parser(), argv, action, expected=(ExpectedError, StudyError, OSError))
    return code if code or outcome["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())
