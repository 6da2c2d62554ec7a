"""Is a finished study the one its authors ran? Its results against the expected ones, run by run.

A bundled study may come with its expected results (``conf/expected/<study>.json``): the sha256 of
every run's ``model.pt`` and ``metrics.json``, each ablation's verdicts, and what they were made
with (the CPU type, torch's kernels' instruction set, the code version). ``convbench compare``
hashes a user's finished study the same way and says "identical", or names each run that differs
and whether the CPU type, thread count or code version that made them differs from the expected ones:

    convbench compare --select fashion_mnist_chapter             # after its snakemake run
    convbench compare --select fashion_mnist_chapter --write     # record them (the study's authors)

CPU results are bit-identical only on one CPU type with one thread count (convbench.device), and a
``model.pt`` records the code version that trained it (convbench.provenance), so a run made on
another CPU type, or by other code, differs in its bytes even when every number is close. The
expected file lives outside the package: writing it must not change the code version it records.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from convbench._io import sha256_file
from convbench.study import Study, StudyError, load_study, study_file

RUN_FILES = ("model.pt", "metrics.json")
VERDICT_METRICS = ("val_acc", "test_acc")


class ExpectedError(ValueError):
    """The expected results or the study's results cannot be compared; the message says why."""


def default_expected_path(study: Study) -> Path:
    """``conf/expected/<study>.json`` in the project (the directory the study's results_dir is
    relative to, where the pipeline runs)."""
    return Path("conf/expected") / f"{study.name}.json"


def cpu_type(cpu: dict[str, Any] | None) -> str:
    """A CPU as the results record it: model, architecture and torch's instruction set."""
    if not cpu:
        return "not recorded"
    return f"{cpu.get('model', '?')} ({cpu.get('architecture', '?')}, torch capability {cpu.get('capability', '?')})"


def code_text(version: dict[str, Any] | None) -> str:
    if not version:
        return "not recorded"
    dirty = " with uncommitted changes" if version.get("dirty") else ""
    return (f"commit {str(version.get('source_commit') or 'none')[:12]}{dirty}, sources sha256 "
            f"{str(version.get('source_sha256', '?'))[:12]}")


def collect(study: Study) -> dict[str, Any]:
    """A finished study's run hashes, verdicts and what made them (the expected file's shape).
    Raises ExpectedError naming the first missing file."""
    runs: dict[str, dict[str, str]] = {}
    made_with: dict[str, dict[str, Any]] = {}
    for experiment, run in study.all_runs():
        run_dir = Path(study.run_dir(experiment, run))
        entry = {}
        for name in RUN_FILES:
            path = run_dir / name
            if not path.is_file():
                raise ExpectedError(f"{path}: missing; is the study {study.name!r} finished?")
            entry[name] = sha256_file(path)
        runs[f"{experiment}/{run.name}"] = entry
        metrics = json.loads((run_dir / "metrics.json").read_text())
        made = {"cpu": metrics.get("cpu"), "threads": metrics.get("threads"),
                "code_version": metrics.get("code_version")}
        made_with.setdefault(json.dumps(made, sort_keys=True), made)
    ablations_path = Path(study.ablations_path)
    if study.ablations and not ablations_path.is_file():
        raise ExpectedError(f"{ablations_path}: missing; is the study {study.name!r} finished?")
    ablations = json.loads(ablations_path.read_text())["ablations"] if study.ablations else {}
    verdicts = {name: {metric: entry[metric]["verdict"] for metric in VERDICT_METRICS if metric in entry}
                for name, entry in ablations.items()}
    return {"study": study.name, "made_with": list(made_with.values()), "runs": runs,
            "verdicts": verdicts}


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Each run and verdict that differs between two collections, one line each; none: identical."""
    lines = []
    for key in sorted(expected["runs"].keys() | actual["runs"].keys()):
        want, have = expected["runs"].get(key), actual["runs"].get(key)
        if want is None:
            lines.append(f"{key}: a run the expected results do not have")
        elif have is None:
            lines.append(f"{key}: missing from your results")
        else:
            differing = [name for name in RUN_FILES if want.get(name) != have.get(name)]
            if differing:
                lines.append(f"{key}: {' and '.join(differing)} differ")
    for name in sorted(expected["verdicts"].keys() | actual["verdicts"].keys()):
        want, have = expected["verdicts"].get(name), actual["verdicts"].get(name)
        if want != have:
            lines.append(f"ablation {name}: verdicts {have}, expected {want}")
    return lines


def provenance_lines(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Whether the CPU type, thread count and code version that made each side differ."""
    def kinds(collection: dict[str, Any], key: str, describe) -> list[str]:
        return sorted({describe(made.get(key)) for made in collection["made_with"]})

    lines = []
    for key, what, describe in (("cpu", "CPU type", cpu_type), ("threads", "torch threads", str),
                                ("code_version", "code version", code_text)):
        want, have = kinds(expected, key, describe), kinds(actual, key, describe)
        verdict = "the same" if want == have else "DIFFERS"
        lines.append(f"{what}: {verdict}: yours {'; '.join(have)}; expected {'; '.join(want)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convbench compare",
        description="Compare a finished study with its expected results (the sha256 of every run's "
        "model.pt and metrics.json, and the ablations' verdicts): prints 'identical', or each run "
        "and verdict that differs and whether the CPU type and code version differ. Exit 0 if "
        "identical, 1 if not.")
    parser.add_argument("--study", type=Path, default=Path("params.yaml"), help="a study file (params.yaml)")
    parser.add_argument("--select", default=None, metavar="NAME", help="a bundled study (conf/study/NAME.yaml)")
    parser.add_argument("--expected", type=Path, default=None,
                        help="the expected results (default: conf/expected/<study>.json)")
    parser.add_argument("--write", action="store_true",
                        help="record the finished study as the expected results instead")
    args = parser.parse_args(argv)
    try:
        path = study_file(args.study, args.select)
        study = load_study(path)
        expected_path = args.expected or default_expected_path(study)
        actual = collect(study)
        if args.write:
            expected_path.parent.mkdir(parents=True, exist_ok=True)
            expected_path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
            print(f"wrote {expected_path}: {len(actual['runs'])} runs, {len(actual['verdicts'])} verdicts")
            return 0
        if not expected_path.is_file():
            raise ExpectedError(f"{expected_path}: no expected results for the study {study.name!r}")
        expected = json.loads(expected_path.read_text())
        if expected.get("study") != study.name:
            raise ExpectedError(f"{expected_path}: expected results of the study {expected.get('study')!r}, "
                                f"not {study.name!r}")
    except (ExpectedError, StudyError, OSError, ValueError) as err:
        print(f"convbench compare: error: {err}", file=sys.stderr)
        return 1
    lines = differences(expected, actual)
    runs = len(expected["runs"])
    if not lines:
        print(f"identical: all {runs} runs' model.pt and metrics.json and all "
              f"{len(expected['verdicts'])} ablations' verdicts match {expected_path}")
        for line in provenance_lines(expected, actual):
            print(f"  {line}")
        return 0
    differing = sum(1 for line in lines if not line.startswith("ablation "))
    print(f"different: {differing} of {runs} runs and {len(lines) - differing} ablations' verdicts "
          f"differ from {expected_path}:")
    for line in lines:
        print(f"  {line}")
    for line in provenance_lines(expected, actual):
        print(f"  {line}")
    print("  (CPU results are bit-identical only on one CPU type with one thread count, and a model.pt "
          "records the code version that trained it)")
    return 1
