"""``convbench run``: train an experiment's runs and score each one, in one process.

The pipeline's unit of work: Snakemake's rule ``run`` and DVC's stage ``run@<experiment>`` both run
it once per experiment. It writes exactly what ``convbench train`` and then ``convbench evaluate``
write for the same runs (a test holds the files byte-identical), but pays torch's start-up once per
experiment instead of twice per run: on a 2-core machine that is about 7 s (torch itself, then
torch._dynamo, which the optimizers import), more than the training of a small network on digits.

Each run is trained and then scored before the next starts, on one claimed device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from convbench import engine_lock, evaluate, train_job
from convbench._io import one_writer, run_cli
from convbench.batches import FoldError
from convbench.checkpoint import CheckpointError
from convbench.device import DeviceError, claim_device
from convbench.study import add_smoke_option
from convbench.train import TrainingError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench run",
        description="Train an experiment's runs of a study (all of them, or those --repeat, --fold "
        "and --seed pick) and score each one on its validation fold and the test set: "
        "'convbench train' then 'convbench evaluate', in one process.",
    )
    parser.add_argument("--study", type=Path, required=True, help="a study file (params.yaml)")
    parser.add_argument("--experiment", required=True, help="the study's experiment to run")
    parser.add_argument("--repeat", type=int, default=None, help="only this repeat of the K-fold split")
    parser.add_argument("--fold", type=int, default=None, help="only this fold")
    parser.add_argument("--seed", type=int, default=None, help="only this training seed")
    add_smoke_option(parser)
    train_job.add_training_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from convbench.datasets import DataError
    from convbench.study import StudyError, load_study

    def action(args: argparse.Namespace) -> None:
        torch.set_num_threads(args.threads)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        try:
            study = load_study(args.study, smoke=args.smoke)
        except StudyError as err:  # under `dvc repro`, the stage's finished runs are gone by now
            raise StudyError(f"{err}{engine_lock.dvc_restore_hint(f'run@{args.experiment}')}") from None
        selection = (args.experiment, args.repeat, args.fold, args.seed)
        trainings = train_job.study_jobs(study, *selection)
        scorings = evaluate.study_jobs(study, *selection)
        if not args.replace:  # before any training: not after the first runs were replaced
            for job, paths in trainings:
                train_job.refuse_replacing_finished(job, paths.out_dir, args.threads, study, "convbench run")
        for (job, paths), scoring in zip(trainings, scorings, strict=True):
            # one writer per run: held from training through scoring
            with claim_device(args.device or study.device) as device_name, one_writer(paths.out_dir):
                try:
                    result = train_job.run_job(job, paths.data, paths.split, paths.out_dir,
                                               device_name=device_name, resume=args.resume, progress=progress)
                    print(train_job.trained_line(job, result, paths.out_dir), flush=True)
                    # its run was just trained here (and checked above): its old metrics are stale
                    metrics = evaluate.evaluate_job(scoring, device_name, "best", replace=True)
                    print(evaluate.scored_line(metrics, scoring.out), flush=True)
                except Exception as err:  # say which run failed, above the message or traceback
                    print(f"convbench run: experiment {job.experiment}, repeat {job.repeat} fold "
                          f"{job.fold} seed {job.seed} ({paths.out_dir}) failed: {type(err).__name__}",
                          file=sys.stderr, flush=True)
                    raise

    # What a user can cause and fix; a RuntimeError (CUDA's included) or a KeyError is a bug.
    expected = (TrainingError, FoldError, CheckpointError, evaluate.EvaluationError, DataError,
                StudyError, DeviceError, OSError)
    return run_cli(build_parser(), argv, action, expected=expected)
