"""``convbench study``: validate a study, list what it will run and estimate what that will cost.

The command lives apart from ``convbench.study`` (the study's loading and validation, which every
stage imports) so that no stage depends on the estimate's training code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from convbench._io import note_jobs_over_cores, positive_int, run_cli
from convbench.recipe import warn
from convbench.study import Study, StudyError, add_smoke_option, load_study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench study",
        description="Validate a study (params.yaml) and print what it would run.",
    )
    parser.add_argument("params", type=Path, nargs="?", default=None,
                        help="the study file (default params.yaml; the same as --study FILE)")
    parser.add_argument("--study", default=None,
                        help="the study: a file, as for every other command, or a bundled study's name "
                             "(conf/study/NAME.yaml)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_smoke_option(parser)
    parser.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=True,
                        help="estimate each experiment's wall time and peak memory on this machine by "
                             "timing a few real training steps of its network (default; "
                             "--no-estimate: only validate and list)")
    parser.add_argument("--steps", type=positive_int, default=2, help="training steps timed per network (default 2)")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="jobs the study will run at once (snakemake --cores N with the study's "
                             "one thread a job): the wall time is estimated for them (default 1)")
    parser.add_argument("--device", default=None,
                        help="the device to estimate for (default: the study's device, auto without one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_cli(parser, argv, _print_plan, expected=(StudyError, OSError))


def _print_plan(args: argparse.Namespace) -> None:
    if args.params is not None and args.study is not None:
        raise StudyError("give the study once: as a file (params) or with --study, not both")
    note_jobs_over_cores(args.jobs, "convbench study")
    path = args.study or args.params or Path("params.yaml")
    study = load_study(path, smoke=args.smoke)
    warn(study, path, "study")
    cost = None
    if args.estimate:  # imported here: validating and listing a study needs no torch
        from convbench.device import DeviceError
        from convbench.estimate import estimate

        try:
            cost = estimate(study, device_name=args.device or study.device, steps=args.steps,
                            jobs=args.jobs)
        except DeviceError as err:  # `device: cuda` (or --device cuda) where CUDA is not usable
            raise StudyError(str(err)) from None
    if args.json:
        print(json.dumps({**plan(study), **({"estimate": cost} if cost else {})}, indent=2))
        return
    repeats = f"{study.repeats} x " if study.repeats > 1 else ""
    seeds = f", seeds {', '.join(map(str, study.seeds))}" if len(study.seeds) > 1 else ""
    print(f"study {study.name}: {study.dataset}, {repeats}{study.folds} folds, seed {study.seed}{seeds}, "
          f"{len(study.experiments)} experiments, {len(study.all_runs())} training runs -> {study.results_dir}/")
    if study.networks:
        from convbench.networks import project_file

        mine = sorted({e.arch for e in study.experiments.values() if project_file(e.arch)})
        print(f"  networks of the project: {', '.join(f'{a} ({project_file(a)})' for a in mine) or 'none used'}; "
              "imported to check them, with torch")
    for name, e in study.experiments.items():
        knobs = ", ".join(f"{k}={v}" for k, v in e.knobs.items()) or "defaults"
        own = f"  seeds {', '.join(map(str, e.seeds))}" if e.seeds != study.seeds else ""
        print(f"  {name:<28} {e.arch:<14} {e.input_size:>4} px  {knobs}{own}")
    if cost:
        from convbench.estimate import format_estimate

        print("\n".join(format_estimate(cost)))


def plan(study: Study) -> dict[str, Any]:
    """What the study will run, as plain data (for people, tests and the engines' cross-check)."""
    return {
        "name": study.name,
        "dataset": study.dataset,
        "folds": study.folds,
        "repeats": study.repeats,
        "seed": study.seed,
        "seeds": list(study.seeds),
        "results_dir": study.results_dir,
        "experiments": {
            name: {"arch": e.arch, "knobs": e.knobs, "input_size": e.input_size,
                   "recipe": e.recipe.to_dict(), "seeds": list(e.seeds)}
            for name, e in study.experiments.items()
        },
        "models": [f"{study.run_dir(name, run)}/model.pt" for name, run in study.all_runs()],
    }
