"""Predicted against actual: `convbench study`'s estimate beside a finished study's timings.

    convbench study --json > estimate.json                 # before the run (or --study NAME)
    snakemake --cores 2                                    # the study itself
    python benchmarks/estimate_check.py estimate.json      # then this, in the same directory
    python benchmarks/estimate_check.py estimate.json --root run1 --root run2   # several runs

Actual wall time per experiment is the Snakemake benchmark file of its `run` job
(logs/<study>/benchmark/run/<experiment>.tsv, column `s`: the whole `convbench run` process,
start-up included); where there is none, the sum of the training seconds in the runs' perf.json
(training only) is shown instead, marked. With several --root directories (the same study run more
than once) the actual time is their median: one run's small jobs can stall for seconds at start-up on
a shared VM. Prints one line per experiment and the total, and exits 1 when an experiment's estimate
is off by more than --tolerance (default 30 %).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path


def snakemake_seconds(tsv: Path) -> float | None:
    """The `s` column of a Snakemake benchmark file (its first, and usually only, row)."""
    if not tsv.exists():
        return None
    with open(tsv, newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    return float(rows[0]["s"]) if rows else None


def perf_seconds(results_dir: Path, experiment: str) -> float | None:
    files = sorted((results_dir / experiment).glob("*/perf.json"))
    if not files:
        return None
    return sum(json.loads(path.read_text())["training"]["seconds"] for path in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("estimate", type=Path, help="the output of `convbench study --json`")
    parser.add_argument("--root", type=Path, action="append", default=None,
                        help="a directory the study ran in (default .); repeat it for several runs")
    parser.add_argument("--tolerance", type=float, default=0.30, help="allowed relative error (0.30)")
    args = parser.parse_args(argv)
    roots = args.root or [Path(".")]
    plan = json.loads(args.estimate.read_text())
    if "estimate" not in plan:
        parser.error(f"{args.estimate} has no estimate: make it with `convbench study --json`")
    estimate = plan["estimate"]
    name = plan["name"] + ("-smoke" if plan["results_dir"].endswith("-smoke") else "")
    print(f"estimate on {estimate['device']}; actual from logs/{name}/benchmark/run in "
          f"{', '.join(map(str, roots))}" + (" (median)" if len(roots) > 1 else ""))
    runs_header = f" {'runs s':>20}" if len(roots) > 1 else ""
    print(f"{'experiment':<28} {'predicted s':>12} {'actual s':>10} {'error':>8}{runs_header}")
    off, total_pred, total_actual = [], 0.0, 0.0
    for experiment, cost in estimate["experiments"].items():
        samples, source = [], ""
        for root in roots:
            actual = snakemake_seconds(root / "logs" / name / "benchmark" / "run" / f"{experiment}.tsv")
            if actual is None:
                actual, source = perf_seconds(root / plan["results_dir"], experiment), " (perf.json, training only)"
            if actual is not None:
                samples.append(actual)
        if not samples:
            print(f"{experiment:<28} {cost['seconds']:>12.1f} {'-':>10}    no timing found")
            continue
        actual = statistics.median(samples)
        error = cost["seconds"] / actual - 1
        total_pred += cost["seconds"]
        total_actual += actual
        flag = "" if abs(error) <= args.tolerance else "  OFF"
        if flag:
            off.append(experiment)
        each = f" {' / '.join(f'{x:.1f}' for x in samples):>20}" if len(roots) > 1 else ""
        print(f"{experiment:<28} {cost['seconds']:>12.1f} {actual:>10.1f} {error:>+8.0%}{each}{flag}{source}")
    if total_actual:
        print(f"{'total (one job at a time)':<28} {total_pred:>12.1f} {total_actual:>10.1f} "
              f"{total_pred / total_actual - 1:>+8.0%}")
    if off:
        print(f"{len(off)} experiment(s) off by more than {args.tolerance:.0%}: {', '.join(off)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
