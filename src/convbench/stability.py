"""``convbench stability``: do the study's verdicts hold under other training seeds?

A verdict that flips when only the training seeds change (or the CPU, whose instruction set changes
float rounding and so every training trajectory) is the noise of one set of seeds, not the effect.
For each seed set ``s`` this runs the study's ablations again with other training seeds: every list
of n seeds (the study's, and an experiment's own) becomes ``s*n, ..., s*n + n - 1``, so seed set 0 is
the study's own when its seeds are 0, ..., n - 1, and no two seed sets share a seed. It uses the
pipeline's own commands (``convbench split``, ``run``, ``aggregate``), into its own
directory (``<results_dir>/_stability/seeds<s>/``, never the study's results; "_" never starts an
experiment's name), and prints one table: per ablation and seed set the difference in validation
accuracy, the Holm-adjusted p and the verdict. Only the experiments the ablations compare run.
The study's split files are shared (the same data, folds and split seed); a missing one is written.

Bit-identity holds for the same CPU type and thread count; across machines what should carry is
the verdicts, and this is the check. To try another float-rounding regime on one machine, cap the
instruction set in the environment (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_CBWR=AVX2``) and give another ``--out-dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import yaml

from convbench._io import (
    LockHeldError,
    lock_file,
    note_jobs_over_cores,
    positive_int,
    write_holder,
    write_json_atomic,
    write_text_atomic,
)
from convbench.study import Study, StudyError, load_study, parse_study, read_study_file, study_file

METRIC = "val_acc"  # the verdicts the report states as findings: validation (cross-validated)


def seed_set(seeds: list[int], number: int) -> list[int]:
    """Seed set ``number`` of a list of n training seeds: ``number*n, ..., number*n + n - 1``."""
    return list(range(number * len(seeds), (number + 1) * len(seeds)))


def seed_set_config(config: dict[str, Any], number: int, out_dir: Path) -> dict[str, Any]:
    """The study ``config`` as the stability check runs it for seed set ``number``: only the
    experiments its ablations compare, each list of training seeds replaced by its
    :func:`seed_set`, into ``out_dir``."""
    used = {config["ablations"][a][side] for a in config.get("ablations") or {}
            for side in ("baseline", "treatment")}
    experiments = {name: ({**raw, "seeds": seed_set(raw["seeds"], number)} if raw.get("seeds") else raw)
                   for name, raw in config["experiments"].items() if name in used}
    directory = str(out_dir / f"seeds{number}")
    config = {key: value for key, value in config.items() if key not in ("smoke", "smoke_suffix", "_smoke_suffixes")}
    study_seeds = config.get("seeds") or [config.get("seed", 0)]
    return {**config, "study": f"{config['study']}-seeds{number}", "seeds": seed_set(study_seeds, number),
            "experiments": experiments, "results_dir": directory, "reports_dir": directory}


def _convbench(*argv: str, log: Path) -> None:
    """One pipeline command, its output to ``log``; a failure names the command and the log."""
    with open(log, "w") as file:
        # this interpreter's convbench, as the pipeline would run it (each command its own process)
        done = subprocess.run([sys.executable, "-m", "convbench.cli", *argv], stdout=file,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise StabilityError(f"'convbench {' '.join(argv)}' failed (exit {done.returncode}); see {log}")


def _seed_set_number(text: str) -> int:
    """An argparse ``type``: a seed set is a number >= 0 (its seeds are s*n ... s*n + n - 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r} (its seeds would be negative)")
    return value


class StabilityError(RuntimeError):
    """A pipeline command of the stability check failed; the message names it and its log."""


def run_seed_set(study_path: Path, study: Study, threads: int, jobs: int) -> Path:
    """Every run, experiment aggregate and the ablations of one seed set's study; its
    ablations.json."""
    logs = Path(study.results_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for repeat in range(study.repeats):  # shared with the study: only a missing one is written
        if not Path(study.split_path(repeat)).exists():
            _convbench("split", "--study", str(study_path), "--repeat", str(repeat),
                       log=logs / f"split{repeat}.log")

    def experiment(name: str) -> None:
        _convbench("run", "--study", str(study_path), "--experiment", name, "--threads",
                   str(threads), "--no-progress", log=logs / f"run-{name}.log")
        _convbench("aggregate", "--study", str(study_path), "--experiment", name,
                   "--out", study.experiment_results_path(name), "--curves-out",
                   study.curves_dir(name), log=logs / f"aggregate-{name}.log")

    # the costliest first, so the parallel jobs end together
    order = sorted(study.experiments, key=lambda name: -study.experiment(name).recipe.epochs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(experiment, order))
    _convbench("aggregate", "--study", str(study_path), "--out", study.study_results_path,
               "--scores-out", study.scores_path, "--ablations-out", study.ablations_path,
               log=logs / "aggregate.log")
    return Path(study.ablations_path)


def read_ablations(path: Path) -> dict[str, Any]:
    """A seed set's ablations.json (``convbench aggregate``'s), refused naming the file when it
    cannot be read or does not have the shape aggregate writes."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise StabilityError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); "
                             "expected the seed set's ablations (convbench aggregate --ablations-out)") from None
    except ValueError as err:
        raise StabilityError(f"{path}: not valid JSON ({err}); expected the seed set's ablations "
                             "(convbench aggregate --ablations-out): delete its directory and run again") from None
    ablations = document.get("ablations") if isinstance(document, dict) else None
    if not isinstance(ablations, dict):
        raise StabilityError(f"{path}: expected a JSON object with an 'ablations' mapping (convbench "
                             "aggregate --ablations-out), got something else: delete its directory and run again")
    for name, entry in ablations.items():
        numbers = entry.get(METRIC) if isinstance(entry, dict) else None
        if not isinstance(numbers, dict) or not {"difference", "ci_low", "ci_high", "p_holm", "verdict"} <= set(numbers):
            raise StabilityError(f"{path}: ablations.{name}.{METRIC}: expected its difference, ci_low, ci_high, "
                                 "p_holm and verdict (convbench aggregate --ablations-out): delete its "
                                 "directory and run again")
    return document


def verdict_rows(documents: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ablation and seed set: difference, interval, Holm-adjusted p and verdict."""
    rows = []
    for number, document in documents.items():
        for name, entry in document["ablations"].items():
            numbers = entry[METRIC]
            rows.append({"ablation": name, "seed_set": number, "repeats": entry.get("repeats", document.get("repeats")),
                         "difference": numbers["difference"], "ci_low": numbers["ci_low"],
                         "ci_high": numbers["ci_high"], "p_holm": numbers["p_holm"],
                         "verdict": numbers["verdict"]})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table: an ablation per line, a seed set per column, and whether its
    verdict is the same under every seed set."""
    seed_sets = sorted({row["seed_set"] for row in rows})
    ablations = list(dict.fromkeys(row["ablation"] for row in rows))
    cell = {(row["ablation"], row["seed_set"]): row for row in rows}

    def text(row: dict[str, Any]) -> str:
        p = "n/a" if row["p_holm"] is None else ("< 0.001" if row["p_holm"] < 0.001 else f"{row['p_holm']:.3f}")
        return f"{row['difference']:+.2f}, Holm p {p}, {row['verdict']}"

    header = ["ablation", *(f"seed set {s}" for s in seed_sets), "same verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in ablations:
        verdicts = {cell[name, s]["verdict"] for s in seed_sets}
        lines.append("| " + " | ".join([name, *(text(cell[name, s]) for s in seed_sets),
                                        "yes" if len(verdicts) == 1 else "**no**"]) + " |")
    return "\n".join(lines)


# Where the pipeline keeps what it makes: a stability check writing there would be taken for the
# study's results (or deleted with them). Under a study's results_dir only directories that
# .dvcignore's "_stability*" hides from DVC are the stability check's.
PIPELINE_DIRS = ("data", "reports", "results")
STABILITY_PREFIX = "_stability"


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _dvc_outs(root: Path) -> list[Path]:
    """The outputs dvc.yaml's stages list, ``${key}`` filled in from params.yaml (``smoke_suffix``
    both ways); none without a readable dvc.yaml."""
    try:
        stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}
        params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    outs: set[Path] = set()
    for stage in stages.values():
        stage = (stage.get("do") or stage) if isinstance(stage, dict) else {}
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                for suffix in ("", "-smoke"):
                    values = {**params, "smoke_suffix": suffix}
                    text = re.sub(r"\$\{(\w+)\}", lambda m: str(values.get(m.group(1), "\0")), str(path))
                    if "\0" not in text and "${" not in text:  # ${key} of a foreach: not one path
                        outs.add(Path(text))
    return sorted(outs)


def check_out_dir(out_dir: Path, study: Study, root: Path = Path(".")) -> None:
    """Refuse an ``--out-dir`` that is, or is inside, what Snakemake or DVC treat as results: the
    pipeline's data/, results/ and reports/ (a study's results_dir and reports_dir included) and
    every output dvc.yaml lists, except the ``_stability*`` directories .dvcignore sets aside."""
    here = Path(os.path.abspath(root))
    target = Path(os.path.abspath(out_dir))
    protected = [Path(study.results_dir), Path(study.reports_dir), *map(Path, PIPELINE_DIRS), *_dvc_outs(root)]
    for directory in protected:
        absolute = Path(os.path.abspath(here / directory))
        if not _inside(target, absolute):
            continue
        below = target.relative_to(absolute).parts
        if any(part.startswith(STABILITY_PREFIX) for part in below):
            continue  # the default, results/_stability, and --out-dir results/_stability-avx2
        raise StabilityError(
            f"--out-dir {out_dir}: is {'' if target == absolute else 'inside '}{directory}, where the "
            "pipeline (Snakemake, DVC) keeps its results: the seed sets would be taken for the study's "
            f"results, or deleted with them; give a directory whose name starts with {STABILITY_PREFIX} "
            f"(the default is {Path(study.results_dir) / STABILITY_PREFIX}, which .dvcignore sets aside) "
            "or one outside data/, results/ and reports/")


@contextlib.contextmanager
def one_stability(lock_paths: list[Path]) -> Iterator[None]:
    """One ``convbench stability`` at a time per study and per output directory: a second is refused
    at once naming the first (its pid and command), instead of writing the same seed sets and
    logs. flock: freed by the kernel when its holder dies."""
    held = []
    try:
        for path in dict.fromkeys(Path(os.path.abspath(p)) for p in lock_paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = lock_file(path)
            except LockHeldError as err:
                raise StabilityError(
                    f"{path}: {err.holder} is already running convbench stability for this "
                    "study or output directory; wait for it to finish (or stop it) and run again") from None
            held.append(fd)
            write_holder(fd)
        yield
    finally:
        for fd in held:
            os.close(fd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench stability",
        description="Run the study's ablations again under other training-seed sets (seed set s: "
        "each list of n seeds becomes s*n ... s*n+n-1; seed set 0 is the study's own when its seeds "
        "start at 0), each into its own directory, and print each ablation's validation verdict "
        "per seed set (difference in points, Holm-adjusted p, verdict).")
    parser.add_argument("--study", type=Path, default=Path("params.yaml"), help="a study file (params.yaml)")
    parser.add_argument("--select", default=None, metavar="NAME", help="a bundled study (conf/study/NAME.yaml)")
    parser.add_argument("--seed-sets", type=_seed_set_number, nargs="+", default=[0, 1, 2], metavar="S",
                        help="the seed sets to run (default: 0 1 2)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where the seed sets' studies and results go (default: <results_dir>/_stability)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="experiments trained at once (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse has already printed
        return exc.code if isinstance(exc.code, int) else 2
    note_jobs_over_cores(args.jobs, "convbench stability")
    try:
        path = study_file(args.study, args.select)
        study = load_study(path)
        if not study.ablations:
            parser.error(f"{path}: the study names no ablations")
        out_dir = args.out_dir or Path(study.results_dir) / STABILITY_PREFIX
        check_out_dir(out_dir, study)
        config = read_study_file(path)
        documents = {}
        with one_stability([Path(study.results_dir) / f"{STABILITY_PREFIX}.lock", out_dir / ".stability.lock"]):
            for seed in args.seed_sets:
                derived = seed_set_config(config, seed, out_dir)
                derived_path = out_dir / f"seeds{seed}.yaml"
                try:
                    derived_study = parse_study(derived)
                except StudyError as err:
                    raise StudyError(f"{path}, seed set {seed} ({derived_path}): {err}") from None
                write_text_atomic(derived_path, yaml.safe_dump(derived, sort_keys=False))
                print(f"seed set {seed}: {len(derived_study.all_runs())} runs -> {derived_study.results_dir}/",
                      file=sys.stderr, flush=True)
                ablations = run_seed_set(derived_path, derived_study, study.threads, args.jobs)
                documents[seed] = read_ablations(ablations)
            rows = verdict_rows(documents)
            write_json_atomic(out_dir / "verdicts.json", rows)
    except (StabilityError, ValueError, OSError) as err:
        print(f"convbench stability: error: {err}", file=sys.stderr)
        return 1
    print(f"Validation verdicts per training-seed set ({study.folds}-fold; difference in points, "
          f"Holm-adjusted p, verdict):\n")
    print(format_table(rows))
    return 0
