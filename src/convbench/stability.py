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
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from convbench.study import Study, load_study, parse_study, read_study_file, study_file

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


def verdict_rows(documents: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ablation and seed set: difference, interval, Holm-adjusted p and verdict."""
    rows = []
    for number, document in documents.items():
        for name, entry in document["ablations"].items():
            numbers = entry[METRIC]
            rows.append({"ablation": name, "seed_set": number, "repeats": entry.get("repeats", document["repeats"]),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convbench stability",
        description="Run the study's ablations again under other training-seed sets (seed set s: "
        "each list of n seeds becomes s*n ... s*n+n-1; seed set 0 is the study's own when its seeds "
        "start at 0), each into its own directory, and print each ablation's validation verdict "
        "per seed set (difference in points, Holm-adjusted p, verdict).")
    parser.add_argument("--study", type=Path, default=Path("params.yaml"), help="a study file (params.yaml)")
    parser.add_argument("--select", default=None, metavar="NAME", help="a bundled study (conf/study/NAME.yaml)")
    parser.add_argument("--seed-sets", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                        help="the seed sets to run (default: 0 1 2)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where the seed sets' studies and results go (default: <results_dir>/_stability)")
    parser.add_argument("--jobs", type=int, default=1, help="experiments trained at once (default 1)")
    args = parser.parse_args(argv)
    try:
        path = study_file(args.study, args.select)
        study = load_study(path)
        if not study.ablations:
            parser.error(f"{path}: the study names no ablations")
        out_dir = args.out_dir or Path(study.results_dir) / "_stability"
        config = read_study_file(path)
        documents = {}
        for seed in args.seed_sets:
            derived = seed_set_config(config, seed, out_dir)
            derived_study = parse_study(derived)
            derived_path = out_dir / f"seeds{seed}.yaml"
            derived_path.parent.mkdir(parents=True, exist_ok=True)
            derived_path.write_text(yaml.safe_dump(derived, sort_keys=False))
            print(f"seed set {seed}: {len(derived_study.all_runs())} runs -> {derived_study.results_dir}/",
                  file=sys.stderr, flush=True)
            ablations = run_seed_set(derived_path, derived_study, study.threads, args.jobs)
            documents[seed] = json.loads(ablations.read_text())
    except (StabilityError, ValueError, OSError) as err:
        print(f"convbench stability: error: {err}", file=sys.stderr)
        return 1
    rows = verdict_rows(documents)
    (out_dir / "verdicts.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"Validation verdicts per training-seed set ({study.folds}-fold; difference in points, "
          f"Holm-adjusted p, verdict):\n")
    print(format_table(rows))
    return 0
