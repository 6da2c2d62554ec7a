"""``convbench train``: the job around one training run, and the command.

A job (:class:`TrainJob`) is everything that identifies a run; :func:`run_job` does its I/O: loads
the prepared data and split, builds the network, resumes a checkpoint of the same job, hands the
loop (:func:`convbench.train.train`) a hook that writes ``checkpoint.pt`` and ``history.csv`` each
epoch, and writes ``model.pt`` at the end. :func:`study_jobs` turns a study's experiment into jobs
at the study's paths; ``convbench run`` uses it too.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from convbench._io import check_writable, one_writer, positive_int, run_cli
from convbench.batches import FoldError, fold_data
from convbench.checkpoint import (
    TIMING_COLUMNS,
    CheckpointError,
    load_checkpoint,
    refuse_replacing,
    run_settings,
    save_checkpoint,
    write_history,
)
from convbench.device import (
    DeviceChoice,
    DeviceError,
    add_device_option,
    choose_device,
    claim_device,
    describe_cpu,
    device_of,
    pick_device,
)
from convbench.models import build, check_knobs, resolve_input_size
from convbench.networks import NetworkError, project_file
from convbench.provenance import package_versions, training_code_version
from convbench.recipe import Recipe, d2l_input_size, resolve_recipe
from convbench.study import add_smoke_option
from convbench.train import TrainingError, TrainResult, train
from convbench.user_networks import add_networks_option, load_network_files


# A smoke run's every run stops after this epoch (of convbench.study.SMOKE_EPOCHS) and resumes from
# its checkpoint; 0 never stops.
SMOKE_STOP_AFTER = 1


class _SmokeStop(Exception):
    """A smoke run's planned stop after an epoch's checkpoint (caught in :func:`train_one`)."""


@dataclass(frozen=True)
class TrainJob:
    """Everything that identifies one training run: a checkpoint resumes only the same job."""

    experiment: str
    arch: str
    knobs: dict[str, Any]
    input_size: int
    recipe: Recipe
    seed: int  # the run's seed; torch is seeded with train_seed
    fold: int
    repeat: int = 0
    folds: int | None = None  # K of the study the job belongs to; None: whatever the split has
    split_seed: int | None = None  # the shuffling seed the study's split has; None: any

    @property
    def train_seed(self) -> int:
        from convbench.study import Run

        return Run(self.repeat, self.fold, self.seed).train_seed

    def identity(self, dataset_sha256: str, split_id: str) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "arch": self.arch, "knobs": dict(self.knobs),
            "input_size": self.input_size, "recipe": self.recipe.to_dict(), "seed": self.seed,
            "repeat": self.repeat, "fold": self.fold, "train_seed": self.train_seed,
            "data_sha256": dataset_sha256, "split_id": split_id,
        }


def run_job(
    job: TrainJob,
    data_path: Path,
    split_path: Path,
    out_dir: Path,
    *,
    device_name: str | DeviceChoice = "auto",
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """:func:`train_one` with ``out_dir`` held against other writers (convbench._io.one_writer)."""
    with one_writer(out_dir):
        return train_one(job, data_path, split_path, out_dir, device_name=device_name, resume=resume,
                         progress=progress)


def train_one(
    job: TrainJob,
    data_path: Path,
    split_path: Path,
    out_dir: Path,
    *,
    device_name: str | DeviceChoice = "auto",
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train one (experiment, fold) job: the I/O around ``train``.

    Its one per-epoch hook writes ``checkpoint.pt`` and ``history.csv`` and moves the progress
    bar; when training completes the last checkpoint, less its wall-clock timings, becomes
    ``model.pt`` (bit-identical on a rerun). With ``resume`` an existing ``checkpoint.pt`` of the
    same job is continued; one of another job is refused.
    """
    from convbench.prepare import load_prepared
    from convbench.split import check_matches, load_split
    from convbench.summary import summarize

    dataset = load_prepared(data_path)
    split = load_split(split_path)
    check_matches(split, dataset)
    wanted = (job.folds or split.folds, split.seed if job.split_seed is None else job.split_seed)
    if (split.folds, split.seed) != wanted:
        raise TrainingError(
            f"{split_path}: a {split.folds}-fold split with seed {split.seed}, but the study asks "
            f"for {wanted[0]} folds with seed {wanted[1]} (repeat {job.repeat}); make it again with "
            f"'convbench split --folds {wanted[0]} --seed {wanted[1]}'"
        )
    choice = choose_device(device_name)
    device = pick_device(choice)
    torch.manual_seed(job.train_seed)
    model = build(
        job.arch, in_channels=dataset.in_channels, num_classes=dataset.num_classes,
        input_size=job.input_size, init=job.recipe.init, **job.knobs,
    )
    identity = job.identity(dataset.sha256, split.split_id)
    # Counted here, where torch's compiler machinery is loaded anyway (SGD imports it), so that
    # `convbench evaluate` on its own need not pay its start-up.
    size = summarize(model, in_channels=dataset.in_channels, input_size=job.input_size)
    meta = {
        **identity,
        # CPU arithmetic depends on the thread count: a resumed run must use the same one.
        "threads": torch.get_num_threads(),
        "params": size["params"],
        "macs": size["macs"],
        "dataset": dataset.name,
        "in_channels": dataset.in_channels,
        "num_classes": dataset.num_classes,
        "classes": list(dataset.classes),
        # the files `convbench run` executes for this network, as both engines track them: an edit
        # elsewhere (the report, an unused module) leaves the result byte-identical
        "code_version": training_code_version(job.arch),
        # a network of the project's own: the file evaluation imports to build it again
        **({"network_file": project_file(job.arch)} if project_file(job.arch) else {}),
        "packages": package_versions(),
        # where bit-identity ends: another CPU type may round differently (convbench.device)
        "cpu": describe_cpu(),
        # the device asked for and used, why `auto` fell back to the CPU, and TF32 in effect
        "device": choice.record(device, job.recipe.tf32),
    }
    for name in ("model.pt", "history.csv", "checkpoint.pt"):  # fail before the work, not after
        check_writable(out_dir / name)
    checkpoint_path = out_dir / "checkpoint.pt"
    resume_from = None
    if resume and checkpoint_path.exists():
        resume_from = load_checkpoint(checkpoint_path)
        earlier = {k: resume_from["meta"].get(k) for k in identity}
        if earlier != identity:
            changed = sorted(k for k in identity if earlier[k] != identity[k])
            raise TrainingError(
                f"{checkpoint_path} belongs to another run (differs in {', '.join(changed)}); "
                "delete it or run without --resume"
            )
        if resume_from["meta"].get("threads") != meta["threads"]:
            raise TrainingError(
                f"{checkpoint_path} was trained with {resume_from['meta'].get('threads')} thread(s), "
                f"this run has {meta['threads']} (--threads): CPU results depend on the thread "
                "count, so resume with the same --threads, or delete it and start again"
            )
    data = fold_data(dataset, split, job.fold, device)
    done = resume_from["epoch"] if resume_from is not None else 0
    # A smoke run stops after its first epoch's checkpoint, as a killed job would, and resumes from
    # it below: the checkpoint's save, load, identity checks and restore run before a real study.
    stop_after = SMOKE_STOP_AFTER if job.recipe.smoke and resume_from is None else 0
    with tqdm(desc="epochs", initial=done, total=job.recipe.epochs, disable=not progress) as bar:

        def on_epoch(record: dict[str, Any]) -> None:
            save_checkpoint(record, checkpoint_path)
            write_history(record["history"], out_dir / "history.csv")
            last = record["history"][-1]
            bar.set_postfix(loss=f"{last['train_loss']:.3f}", val_acc=f"{last['val_acc']:.3f}", refresh=False)
            bar.update()
            if record["epoch"] == stop_after and not record["completed"]:
                raise _SmokeStop

        result: TrainResult | None
        try:
            result = train(
                model, data, job.recipe, input_size=job.input_size, seed=job.train_seed, meta=meta,
                resume_from=resume_from, on_epoch=on_epoch,
            )
        except _SmokeStop:
            result = None
    if result is None:
        del model, data  # free the first leg's network and fold (GPU memory) before the resumed one
        print(f"{job.experiment} repeat {job.repeat} fold {job.fold} seed {job.seed}: smoke run stopped "
              f"after epoch {stop_after}; resuming from {checkpoint_path}", file=sys.stderr, flush=True)
        return train_one(job, data_path, split_path, out_dir, device_name=choice, resume=True,
                         progress=progress)
    final = dict(result.checkpoint)
    final["history"] = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                        for row in final["history"]]
    save_checkpoint(final, out_dir / "model.pt")
    checkpoint_path.unlink()
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench train",
        description="Train one network on one fold of a prepared dataset. With --study and "
        "--experiment, train that experiment's runs (all of them, or those --repeat, --fold and "
        "--seed pick) with the study's settings, data, splits and output layout.",
    )
    parser.add_argument("--study", type=Path, default=None,
                        help="a study file (params.yaml): take arch, knobs, recipe, input size, "
                             "seeds and paths of --experiment from it")
    add_smoke_option(parser)
    parser.add_argument("--experiment", default=None, help="experiment name (recorded in the results)")
    parser.add_argument("--repeat", type=int, default=None, help="repeat of the K-fold split (with --study)")
    parser.add_argument("--fold", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    parser.add_argument("--data", type=Path, default=None, help="prepared dataset (.npz)")
    parser.add_argument("--split", type=Path, default=None, help="split file (.json)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--arch", help="network name (see 'convbench models')")
    parser.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                        help="a network knob, e.g. --set activation=relu (repeatable)")
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe setting, e.g. --recipe lr=0.1 or --recipe preset=d2l (repeatable)")
    parser.add_argument("--input-size", type=int, default=None)
    add_networks_option(parser)
    add_training_options(parser)
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Where and how a training runs: the options ``convbench train`` and ``convbench run`` share."""
    add_device_option(parser)
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default 1). CPU results are bit-identical only "
                             "for the same thread count; parallel jobs scale better than threads")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run from its checkpoint.pt (in its output directory) if it exists")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar while training (default: when stderr is a terminal)")
    parser.add_argument("--replace", action="store_true",
                        help="replace a finished run (model.pt, metrics.json) in the output directory even "
                             "when this run's settings (threads, recipe, seed, ...) differ from it and from "
                             "its study's; without it such a run is refused before any training")


@dataclass(frozen=True)
class JobPaths:
    data: Path
    split: Path
    out_dir: Path


def study_jobs(
    study: Any, experiment: str, repeat: int | None = None, fold: int | None = None,
    seed: int | None = None, *, data: Path | None = None, split: Path | None = None,
    out_dir: Path | None = None,
) -> list[tuple[TrainJob, JobPaths]]:
    """The training jobs of an experiment's runs in ``study`` (all, or those ``repeat``, ``fold``
    and ``seed`` pick), at the paths of the study's layout unless given."""
    exp = study.experiment(experiment)
    runs = study.select_runs(experiment, repeat, fold, seed)
    if len(runs) > 1 and out_dir is not None:
        raise TrainingError("--out-dir names one run's directory: pick the run with --repeat, --fold and --seed")
    return [
        (TrainJob(experiment, exp.arch, exp.knobs, exp.input_size, exp.recipe, run.seed, run.fold,
                  repeat=run.repeat, folds=study.folds, split_seed=study.split_seed(run.repeat)),
         JobPaths(data or Path(study.prepared_path), split or Path(study.split_path(run.repeat)),
                  out_dir or Path(study.run_dir(experiment, run))))
        for run in runs
    ]


def jobs_from_args(args: argparse.Namespace) -> list[tuple[TrainJob, JobPaths]]:
    """The training jobs the command line asks for, each with its input and output paths."""
    from convbench.summary import parse_overrides

    if args.study is not None:
        from convbench.study import load_study

        if not args.experiment:
            raise TrainingError("--study needs --experiment")
        return study_jobs(load_study(args.study, smoke=args.smoke), args.experiment, args.repeat, args.fold, args.seed,
                          data=args.data, split=args.split, out_dir=args.out_dir)
    missing = [flag for flag in ("arch", "fold", "data", "split", "out_dir") if getattr(args, flag) is None]
    if missing:
        raise TrainingError(f"give --{missing[0].replace('_', '-')} (or --study with --experiment)")
    if args.repeat is not None:
        raise TrainingError("--repeat needs --study")
    # The validators of recipes and networks refuse a bad value with a ValueError naming it; here,
    # before any work, that is the user's error (a study is validated the same way when loaded).
    try:
        recipe_settings = parse_overrides(args.recipe)
        recipe = resolve_recipe(recipe_settings, args.arch)
        knobs = parse_overrides(args.knobs)
        check_knobs(args.arch, knobs)
        size = args.input_size
        if size is None and recipe_settings.get("preset") == "d2l":
            size = d2l_input_size(args.arch)
        input_size = resolve_input_size(args.arch, size, knobs)
    except ValueError as err:
        raise TrainingError(str(err)) from None
    job = TrainJob(args.experiment or args.arch, args.arch, knobs, input_size, recipe, args.seed or 0,
                   args.fold)
    return [(job, JobPaths(args.data, args.split, args.out_dir))]


def refuse_replacing_finished(job: TrainJob, out_dir: Path, threads: int, study: Any | None,
                              command: str) -> None:
    """Refuse, before any training, a run by hand that would replace the finished run in
    ``out_dir`` with one of other settings (convbench.checkpoint.refuse_replacing); a run of the
    study's own settings in the study's own directory passes, as Snakemake's and DVC's do."""
    from convbench.study import Run

    settings = run_settings(job.identity("", ""), threads=threads)
    study_settings = None
    if study is not None:
        own_dir = Path(study.run_dir(job.experiment, Run(job.repeat, job.fold, job.seed)))
        if os.path.abspath(own_dir) == os.path.abspath(out_dir):
            study_settings = {**settings, "threads": study.threads}
    refuse_replacing(out_dir, settings, command, study_settings=study_settings)


def trained_line(job: TrainJob, result: TrainResult, out_dir: Path) -> str:
    """What ``convbench train`` prints for a finished run."""
    last = result.history[-1]
    return (f"{job.experiment} repeat {job.repeat} fold {job.fold} seed {job.seed}: best epoch "
            f"{result.best_epoch} val_acc {result.best_val_acc:.4f}; last epoch val_acc "
            f"{last['val_acc']:.4f}, {last['examples_per_s']:.0f} ex/s -> {out_dir / 'model.pt'}")


def main(argv: list[str] | None = None) -> int:
    from convbench.datasets import DataError
    from convbench.study import StudyError

    def action(args: argparse.Namespace) -> None:
        torch.set_num_threads(args.threads)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        device = device_of(args)
        load_network_files(args.networks)  # --arch of the project's own (a study names its own)
        jobs = jobs_from_args(args)
        if not args.replace:
            from convbench.study import load_study

            study = load_study(args.study, smoke=args.smoke) if args.study is not None else None
            for job, paths in jobs:
                refuse_replacing_finished(job, paths.out_dir, args.threads, study, "convbench train")
        for job, paths in jobs:
            with claim_device(device) as device_name:
                result = run_job(job, paths.data, paths.split, paths.out_dir, device_name=device_name,
                                 resume=args.resume, progress=progress)
            print(trained_line(job, result, paths.out_dir))

    # What a user can cause and fix; a RuntimeError (CUDA's included) or a KeyError is a bug.
    expected = (TrainingError, FoldError, CheckpointError, DataError, StudyError, DeviceError, OSError,
                NetworkError)
    return run_cli(build_parser(), argv, action, expected=expected)
