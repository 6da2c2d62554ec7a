"""Evaluation of a trained checkpoint: its validation fold and, once, the official test set.

The test set is scored here and nowhere else, with the weights of the best epoch by validation
accuracy; nothing downstream chooses anything by test accuracy.
"""

from __future__ import annotations

import argparse
import csv
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convbench._io import check_writable, one_writer, positive_int, run_cli, sha256_file, write_json_atomic
from convbench.batches import BatchTransform, FoldError, fold_data, make_transform
from convbench.checkpoint import META_KEYS, CheckpointError, load_checkpoint, refuse_replacing, run_settings
from convbench.device import (
    DeviceChoice,
    DeviceError,
    add_device_option,
    claim_device,
    describe_device,
    device_of,
    pick_device,
    set_tf32,
    synchronize,
)
from convbench.inference import predict
from convbench.models import build
from convbench.provenance import code_version
from convbench.recipe import Recipe, evaluation_limit, resolve_recipe
from convbench.study import add_smoke_option
from convbench.user_networks import load_network_files

MISCLASSIFIED_KEPT = 64


CURVE_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


class EvaluationError(ValueError):
    """A checkpoint, history or command line that evaluation cannot score as asked.

    ``convbench evaluate`` turns it into one line and exit code 1; anything else is a bug (or a
    CUDA failure) and keeps its traceback.
    """


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    predictions = logits.argmax(1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    index = labels.cpu() * num_classes + predictions.cpu()
    confusion.view(-1).index_add_(0, index, torch.ones_like(index))
    per_class_total = confusion.sum(1)
    per_class = torch.where(
        per_class_total > 0, confusion.diag().double() / per_class_total.clamp_min(1), torch.nan
    )
    return {
        "n": int(len(labels)),
        "loss": float(F.cross_entropy(logits, labels).item()),
        "accuracy": float((predictions == labels).double().mean().item()),
        "per_class_accuracy": [None if np.isnan(v) else float(v) for v in per_class.tolist()],
        "confusion_matrix": confusion.tolist(),
    }


def peak_gpu_memory_mb(device: torch.device) -> float | None:
    """The CUDA caching allocator's peak of memory held by tensors since the last reset (the
    test-set pass), in MiB; None on the CPU, where there is no such allocator. It measures what
    the network needs on the GPU, not what the process holds."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak_rss() -> None:
    """Start a new peak of the process's resident memory (Linux: VmHWM, reset through
    /proc/self/clear_refs), so that training earlier in the same process (``convbench run``)
    does not count; where that is not possible the peak stays the process's since it started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_process_rss_mb() -> float:
    """The whole process's peak resident memory (Python, torch, the data set, the network), in MiB,
    since :func:`reset_peak_rss`: on the CPU the only memory figure there is, and not comparable
    with the GPU's."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def scored_predict(
    model: nn.Module, images: torch.Tensor, transform: BatchTransform, recipe: Recipe
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits the recipe scores, and the plain logits of the images alone.

    With ``tta: flip`` the scored logits are the log of the mean of the softmax of each image and of
    its mirror image (the transform resizes and normalizes each image symmetrically, so mirroring
    the uint8 image mirrors what the network sees): their argmax is the averaged prediction and
    their cross-entropy the loss of the averaged probabilities. Without it both are the same."""
    plain = predict(model, images, transform, batch_size=recipe.eval_batch_size,
                    precision=recipe.precision)
    if recipe.tta == "none":
        return plain, plain
    mirrored = predict(model, images.flip(-1), transform, batch_size=recipe.eval_batch_size,
                       precision=recipe.precision)
    both = torch.stack([F.log_softmax(plain, 1), F.log_softmax(mirrored, 1)])
    return torch.logsumexp(both, 0) - math.log(2), plain


def timed_predict(
    model: nn.Module, images: torch.Tensor, transform: BatchTransform, recipe: Recipe
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`scored_predict` plus inference throughput in images/s, test-time augmentation
    included (one warm-up batch first)."""
    device = images.device
    batch_size = recipe.eval_batch_size
    predict(model, images[:batch_size], transform, batch_size=batch_size, precision=recipe.precision)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    started = time.perf_counter()
    scored, plain = scored_predict(model, images, transform, recipe)
    synchronize(device)
    seconds = time.perf_counter() - started
    return scored, plain, (len(images) / seconds if seconds > 0 else float("inf"))


def evaluate_checkpoint(
    checkpoint: dict[str, Any],
    dataset: Any,
    split: Any,
    *,
    device: torch.device,
    weights: str = "best",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of one trained job on its validation fold and on the test set, and the inference
    measurements (throughput, peak memory), which vary from run to run and are kept apart."""
    meta = checkpoint["meta"]
    if meta["data_sha256"] != dataset.sha256 or meta["split_id"] != split.split_id:
        raise EvaluationError(
            f"the checkpoint was trained on data {meta['data_sha256'][:12]} with split "
            f"{meta['split_id'][:12]}, but the data given is {dataset.sha256[:12]} and the split "
            f"{split.split_id[:12]}"
        )
    recipe = resolve_recipe(meta["recipe"], meta["arch"])
    if meta.get("network_file"):  # a network of the project's own (convbench.user_networks)
        load_network_files([meta["network_file"]])
    model = build(
        meta["arch"], in_channels=meta["in_channels"], num_classes=meta["num_classes"],
        input_size=meta["input_size"], **meta["knobs"],
    )
    state = checkpoint["best_model"] if weights == "best" else checkpoint["model"]
    model.load_state_dict(state)
    model.to(device)
    if device.type == "cuda":
        set_tf32(recipe.tf32)  # as trained
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    data = fold_data(dataset, split, meta["fold"], device)
    # The transform is rebuilt from the training fold, exactly as during training.
    transform = make_transform(data, recipe, meta["input_size"])
    limit = evaluation_limit(recipe)  # a smoke run's few batches; None: every image
    val_labels = data.val_labels[:limit]
    val_logits, val_plain = scored_predict(model, data.val_images[:limit], transform, recipe)
    test_images = torch.from_numpy(np.ascontiguousarray(dataset.test_images[:limit])).to(device)
    test_labels = torch.from_numpy(dataset.test_labels[:limit].astype(np.int64)).to(device)
    test_logits, test_plain, images_per_s = timed_predict(model, test_images, transform, recipe)
    labels = test_labels.cpu()  # once: indexing a GPU tensor per image would sync per image
    test = classification_metrics(test_logits.cpu(), labels, dataset.num_classes)
    predicted = test_logits.argmax(1).cpu()
    wrong = (predicted != labels).nonzero().flatten()[:MISCLASSIFIED_KEPT]
    test["misclassified"] = [
        {"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i])} for i in wrong
    ]
    val = classification_metrics(val_logits.cpu(), val_labels.cpu(), dataset.num_classes)
    if recipe.tta != "none":
        # what the network scores without test-time augmentation, beside what the recipe scores
        val["accuracy_without_tta"] = float((val_plain.argmax(1) == val_labels).double().mean())
        test["accuracy_without_tta"] = float((test_plain.argmax(1).cpu() == labels).double().mean())
    inference = {
        "images_per_s": images_per_s,
        "peak_gpu_memory_mb": peak_gpu_memory_mb(device),
        "peak_process_rss_mb": peak_process_rss_mb(),
        "device": describe_device(device),
    }
    history = checkpoint["history"]
    metrics = {
        "experiment": meta["experiment"],
        "arch": meta["arch"],
        "knobs": meta["knobs"],
        "input_size": meta["input_size"],
        "repeat": meta["repeat"],
        "fold": meta["fold"],
        "seed": meta["seed"],
        "train_seed": meta["train_seed"],
        "dataset": meta["dataset"],
        "data_sha256": meta["data_sha256"],
        "split_id": meta["split_id"],
        "classes": meta["classes"],
        "weights": weights,
        "best_epoch": checkpoint["best_epoch"],
        "epochs": checkpoint["epoch"],
        "params": meta["params"],  # counted once, by training
        "macs": meta["macs"],
        "val": val,
        "test": test,
        # the learning curve the trainer recorded in the checkpoint: what the curves the report draws
        # (history.csv less its timings) are checked against
        "curve": [{key: row[key] for key in CURVE_KEYS} for row in history],
        "final_train_loss": history[-1]["train_loss"],
        "final_train_acc": history[-1]["train_acc"],
        "recipe": meta["recipe"],
        "threads": meta.get("threads"),  # CPU results depend on it: a setting, as the recipe is
        "code_version": meta["code_version"],
        "packages": meta["packages"],
        "cpu": meta.get("cpu"),  # the training's CPU; None in checkpoints from before it was recorded
        # the training's device (asked, used, auto's fallback, TF32); None in older checkpoints
        "device": meta.get("device"),
    }
    return metrics, inference


def training_perf(history_csv: Path) -> dict[str, Any]:
    """Training time and speed from history.csv (the compute part of each epoch, as d2l counts)."""
    try:
        with open(history_csv, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        if not rows:
            raise ValueError("no epochs recorded")
        seconds = [float(row["seconds"]) for row in rows]
        examples = sum(float(row["examples_per_s"]) * s for row, s in zip(rows, seconds))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as err:
        problem = f"no column {err}" if isinstance(err, KeyError) else str(err)
        raise EvaluationError(f"{history_csv}: not a history written by convbench train ({problem}); "
                              "expected one row per epoch with seconds and examples_per_s; train the "
                              "run again") from None
    total = sum(seconds)
    return {
        "seconds": total,
        "examples_per_s": examples / total if total > 0 else None,
        "epochs": len(rows),
        "devices": sorted({row.get("device", "") for row in rows}),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench evaluate",
        description="Score a trained model.pt on its validation fold and on the test set (once). "
        "With --study and --experiment, score that experiment's runs (all, or those --repeat, "
        "--fold and --seed pick) where the study's layout puts them.",
    )
    parser.add_argument("--study", type=Path, default=None, help="a study file (params.yaml)")
    add_smoke_option(parser)
    parser.add_argument("--experiment", default=None, help="with --study: the experiment to score")
    parser.add_argument("--repeat", type=int, default=None, help="with --study: only this repeat")
    parser.add_argument("--fold", type=int, default=None, help="with --study: only this fold")
    parser.add_argument("--seed", type=int, default=None, help="with --study: only this seed")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model.pt written by 'convbench train'")
    parser.add_argument("--data", type=Path, default=None, help="prepared dataset (.npz)")
    parser.add_argument("--split", type=Path, default=None, help="split file (.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="metrics JSON to write (accuracy, loss, confusion: bit-identical on a rerun)")
    parser.add_argument("--history", type=Path, default=None,
                        help="history.csv of the training run (default: next to the checkpoint)")
    parser.add_argument("--perf-out", type=Path, default=None,
                        help="measured speed and memory JSON to write (default: perf.json next to --out)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="best epoch by validation accuracy (default) or the last epoch")
    add_device_option(parser)
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch (default 1, as for training)")
    parser.add_argument("--replace", action="store_true",
                        help="replace the metrics of a finished run in --out even when they are of another "
                             "checkpoint's settings or other --weights (without it, refused before any scoring)")
    return parser


@dataclass(frozen=True)
class EvaluationJob:
    checkpoint: Path
    history: Path
    data: Path
    split: Path
    out: Path
    perf_out: Path
    run: dict[str, int] | None = None  # the (repeat, fold, seed) the study expects in the checkpoint
    # a study's store of timings by model (convbench.study.Study.timings_dir), which DVC never touches
    timings_dir: Path | None = None


def jobs_from_args(args: argparse.Namespace) -> list[EvaluationJob]:
    if args.study is None:
        missing = [flag for flag in ("checkpoint", "data", "split", "out") if getattr(args, flag) is None]
        if missing:
            raise EvaluationError(f"give --{missing[0]} (or --study with --experiment)")
        history = args.history or args.checkpoint.with_name("history.csv")
        return [EvaluationJob(args.checkpoint, history, args.data, args.split, args.out,
                              args.perf_out or args.out.with_name("perf.json"))]
    from convbench.study import load_study

    if not args.experiment:
        raise EvaluationError("--study needs --experiment")
    if any(getattr(args, flag) is not None for flag in ("checkpoint", "split", "out", "history", "perf_out")):
        raise EvaluationError("--study takes the paths from the study: drop --checkpoint, --split, "
                              "--out, --history and --perf-out")
    return study_jobs(load_study(args.study, smoke=args.smoke), args.experiment, args.repeat, args.fold, args.seed,
                      data=args.data)


def study_jobs(
    study: Any, experiment: str, repeat: int | None = None, fold: int | None = None,
    seed: int | None = None, *, data: Path | None = None,
) -> list[EvaluationJob]:
    """The evaluation jobs of an experiment's runs in ``study`` (all, or those ``repeat``,
    ``fold`` and ``seed`` pick), where the study's layout puts their files."""
    study.experiment(experiment)
    jobs = []
    for run in study.select_runs(experiment, repeat, fold, seed):
        run_dir = Path(study.run_dir(experiment, run))
        jobs.append(EvaluationJob(
            run_dir / "model.pt", run_dir / "history.csv", data or Path(study.prepared_path),
            Path(study.split_path(run.repeat)), run_dir / "metrics.json", run_dir / "perf.json",
            {"repeat": run.repeat, "fold": run.fold, "seed": run.seed}, Path(study.timings_dir),
        ))
    return jobs


def evaluate_job(job: EvaluationJob, device_name: str | DeviceChoice, weights: str, *,
                 replace: bool = False) -> dict[str, Any]:
    """Score one checkpoint and write its metrics.json and perf.json; returns the metrics. The
    directory of metrics.json is held against other writers while it runs. Without ``replace`` the
    metrics of a finished run of other settings (another checkpoint's, other --weights) are not
    replaced (convbench.checkpoint.refuse_replacing)."""
    with one_writer(job.out.parent):
        return _evaluate_job(job, device_name, weights, replace)


def _evaluate_job(job: EvaluationJob, device_name: str | DeviceChoice, weights: str,
                  replace: bool = False) -> dict[str, Any]:
    from convbench.prepare import load_prepared
    from convbench.split import check_matches, load_split

    for path in (job.out, job.perf_out):  # fail before the work, not after it
        check_writable(path)
    checkpoint = load_checkpoint(job.checkpoint)
    if not checkpoint.get("completed"):
        raise EvaluationError(f"{job.checkpoint}: training did not complete")
    missing = [key for key in META_KEYS if key not in checkpoint["meta"]]
    if missing:
        raise EvaluationError(f"{job.checkpoint}: a checkpoint without meta.{', meta.'.join(missing)} "
                              "(what evaluation reads); expected one written by convbench train; train "
                              "it again")
    if job.run is not None:
        found = {key: checkpoint["meta"][key] for key in job.run}
        if found != job.run:
            raise EvaluationError(f"{job.checkpoint}: holds the run {found}, but the study expects {job.run} there")
    if not replace:
        refuse_replacing(job.out.parent, run_settings(checkpoint["meta"], weights=weights), "convbench evaluate",
                         metrics=job.out, scored_model=job.checkpoint)
    dataset = load_prepared(job.data)
    split = load_split(job.split)
    check_matches(split, dataset)
    perf = {"training": training_perf(job.history)}
    try:
        metrics, perf["inference"] = evaluate_checkpoint(
            checkpoint, dataset, split, device=pick_device(device_name), weights=weights
        )
    except EvaluationError as err:
        raise EvaluationError(f"{job.checkpoint} against {job.data} and {job.split}: {err}") from None
    # the model these numbers come from, byte for byte: aggregation and the report check it
    metrics["model_sha256"] = perf["model_sha256"] = sha256_file(job.checkpoint)
    # its weights, whatever else the file records: what `convbench compare` judges a run by
    metrics["weights_sha256"] = checkpoint["weights_sha256"]
    # the whole package's version, beside the timings: the results record only the training's
    perf["package_code_version"] = code_version()
    write_json_atomic(job.out, metrics)
    write_json_atomic(job.perf_out, perf)
    if job.timings_dir is not None:  # kept by model: a DVC checkout of the run's directory drops perf.json
        write_json_atomic(job.timings_dir / f"{perf['model_sha256']}.json", perf)
    return metrics


def scored_line(metrics: dict[str, Any], out: Path) -> str:
    """What ``convbench evaluate`` prints for a scored run."""
    return (f"{metrics['experiment']} repeat {metrics['repeat']} fold {metrics['fold']} seed "
            f"{metrics['seed']}: val_acc {metrics['val']['accuracy']:.4f} "
            f"test_acc {metrics['test']['accuracy']:.4f} -> {out}")


def main(argv: list[str] | None = None) -> int:
    from convbench.datasets import DataError
    from convbench.study import StudyError

    def action(args: argparse.Namespace) -> None:
        torch.set_num_threads(args.threads)
        device = device_of(args)
        for job in jobs_from_args(args):
            with claim_device(device) as device_name:
                metrics = evaluate_job(job, device_name, args.weights, replace=args.replace)
            print(scored_line(metrics, job.out))

    # What a user can cause and fix; a RuntimeError (CUDA's included) or a KeyError is a bug.
    from convbench.networks import NetworkError

    expected = (EvaluationError, FoldError, CheckpointError, DataError, StudyError, DeviceError, OSError,
                NetworkError)
    return run_cli(build_parser(), argv, action, expected=expected)
