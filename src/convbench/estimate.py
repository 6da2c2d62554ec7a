"""What a study will cost on this machine, before it runs: wall time and peak memory per experiment.

For each experiment, a handful of real training steps of its network at its resolution, batch
size, precision and memory format are timed (after one warm-up step) on the device a job would
use, and one evaluation batch; the study's step and image counts multiply them:

    time = runs x (epochs x (steps x step_s + val_images x eval_s)      # training + per-epoch val
                   + (val_images + test_images) x eval_s)                # convbench evaluate
           + start-up                           # a fresh process importing torch (median of 3)

and the study's other jobs, each timed as a fresh process doing its fixed work: the study's check,
download and prepare (when the prepared data is not there yet), one split per repeat, one
aggregation per experiment and the study's, and the report (a kernel started by papermill that
imports the report's code and draws a figure, then the page written), so that the total is the
whole study's wall time.

Peak memory is what the steps held: the CUDA allocator's peak on a GPU; on the CPU the process's
peak resident memory during them (torch itself included, the data set not). It leaves out what the estimate cannot see:
other jobs sharing the machine, the data loading, a slower first epoch on a cold GPU (cuDNN
autotuning, ``compile``'s first call), and evaluation batches larger than the one measured.
``benchmarks/estimate_check.py`` compares an estimate with a finished study's Snakemake timings.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from convbench.batches import PRECOMPUTE_BYTES, BatchTransform, Inputs
from convbench.device import describe_cpu, describe_device, pick_device, set_tf32, synchronize
from convbench.evaluate import peak_process_rss_mb, reset_peak_rss
from convbench.inference import predict
from convbench.recipe import evaluation_limit, steps_in_epoch
from convbench.models import build
from convbench.study import TRAIN_SIZES, Experiment, Study
from convbench.train import make_optimizer, train_step

# The datasets' images: channels and side in pixels (convbench.prepare's output), and test-set size.
IMAGE_SHAPES = {"digits": (1, 8), "mnist": (1, 28), "fashion_mnist": (1, 28), "kmnist": (1, 28)}
TEST_SIZES = {"digits": 450, "mnist": 10000, "fashion_mnist": 10000, "kmnist": 10000}
NUM_CLASSES = 10
# A `convbench run` job's fixed cost when it cannot be measured: torch's start-up (docs/index.md: about 7 s
# on an idle 2-core machine).
JOB_START_S = 7.0
START_UP_SAMPLES = 3  # child processes timed for the start-up (their median)
MIN_MEASURE_S = 0.5  # each timing repeats its call for at least this long
EVAL_PROBE_IMAGES = 64  # evaluation's per-image time is measured on a batch of at most this many


@dataclass(frozen=True)
class ExperimentCost:
    experiment: str
    arch: str
    input_size: int
    batch_size: int
    precision: str
    runs: int
    epochs: int
    steps_per_epoch: int
    step_s: float  # one training step, measured
    eval_image_s: float  # one image's evaluation, measured
    seconds: float  # the experiment's whole job, estimated
    peak_memory_mb: float  # measured during the steps
    memory_kind: str  # "gpu" (CUDA allocator peak) or "process rss" (the process's resident memory)


def measure_start_up(times: int = START_UP_SAMPLES) -> float:
    """Seconds a fresh `convbench run` process takes to import what it runs (torch, torch._dynamo,
    which the optimizers import, and convbench): the median of ``times`` child processes.

    The median, because the first child after a while idle reads torch from disk (a cold cache,
    measured at 17.5 s against 4 to 5 s warm on a 2-core VM) while a study's jobs, one after
    another, almost all start warm; JOB_START_S if the import fails."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", "import torch._dynamo, convbench.run"],
                               capture_output=True)
        if child.returncode != 0:
            return JOB_START_S
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _median_seconds(argv: list[str], times: int, fallback: float) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        if subprocess.run(argv, capture_output=True).returncode != 0:
            return fallback
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


# What a job without training imports (convbench check, split, aggregate; none imports torch).
LIGHT_JOB_CODE = "import convbench.cli, convbench.plan, convbench.split, convbench.aggregate"
LIGHT_JOB_S = 1.5  # when it cannot be measured
REPORT_S = 30.0  # when it cannot be measured (the default study's report)


def measure_light_job(times: int = START_UP_SAMPLES) -> float:
    """Seconds a job that trains nothing takes to start (the median of ``times`` fresh processes)."""
    return _median_seconds([sys.executable, "-c", LIGHT_JOB_CODE], times, LIGHT_JOB_S)


def measure_report() -> float:
    """Seconds ``convbench report``'s fixed work takes: papermill starting the report's kernel, which
    imports the report's code and draws and saves one figure, and the executed notebook written as
    HTML (convbench.report.render)."""
    return _median_seconds([sys.executable, "-m", "convbench.estimate", "--report-probe"], 1, REPORT_S)


def _report_probe() -> None:
    import tempfile
    from pathlib import Path

    import nbformat
    import papermill

    from convbench.report.render import default_kernel, notebook_to_html

    with tempfile.TemporaryDirectory() as tmp:
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\nimport convbench.report\n"
            f"fig, ax = plt.subplots()\nax.plot([0, 1], [0, 1])\nfig.savefig({tmp + '/probe.png'!r})")])
        source, executed = Path(tmp, "probe.ipynb"), Path(tmp, "executed.ipynb")
        nbformat.write(notebook, source)
        papermill.execute_notebook(str(source), str(executed), kernel_name=default_kernel(), progress_bar=False,
                                   log_output=False, extra_arguments=["--IPKernelApp.log_level=ERROR"])
        notebook_to_html(executed, "probe")


def other_jobs(study: Study, light_s: float, report_s: float) -> dict[str, float]:
    """Seconds of the study's jobs that train nothing, by stage."""
    from pathlib import Path

    data_jobs = 0 if Path(study.prepared_path).exists() else 2  # download, prepare
    return {"check": light_s, "download and prepare": data_jobs * light_s,
            "split": study.repeats * light_s, "aggregate": (len(study.experiments) + 1) * light_s,
            "report": report_s}


def fold_sizes(study: Study) -> tuple[int, int]:
    """(training images, validation images) of a fold: K-1 of K parts, and one part."""
    if study.images:  # a folder of the project's own images
        from convbench.imagefolder import sizes

        n_train = sizes(study.dataset, study.images)[0]
    else:
        n_train, _ = TRAIN_SIZES[study.dataset]
    val = -(-n_train // study.folds)
    return n_train - val, val


def seconds_per_call(call: Callable[[], object], device: torch.device, at_least: int) -> float:
    """Seconds one ``call`` takes: after a warm-up call, the mean of at least ``at_least`` calls and
    as many more as fit in MIN_MEASURE_S (a small network's step is milliseconds, and two of them
    vary by half)."""
    call()  # warm-up: allocations, oneDNN's or cuDNN's first choice of kernels
    synchronize(device)
    calls, started = 0, time.perf_counter()
    while calls < at_least or time.perf_counter() - started < MIN_MEASURE_S:
        call()
        calls += 1
        synchronize(device)
    return (time.perf_counter() - started) / calls


def measure(experiment: Experiment, study: Study, device: torch.device, steps: int) -> dict[str, float]:
    """Time at least ``steps`` real training steps (after one warm-up step) and an evaluation batch
    of ``experiment``'s network on ``device`` (seconds_per_call); peak memory over them."""
    if study.images:  # a folder of the project's own images, at the size and channels it is prepared at
        from convbench.imagefolder import sizes

        channels, size = study.images["channels"], study.images["size"]
        num_classes = sizes(study.dataset, study.images)[2]
    else:
        (channels, size), num_classes = IMAGE_SHAPES[study.dataset], NUM_CLASSES
    recipe = experiment.recipe
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if device.type == "cuda":
        set_tf32(recipe.tf32)  # as the job will run (cuDNN's own default is TF32 on)
    model = build(experiment.arch, in_channels=channels, num_classes=num_classes,
                  input_size=experiment.input_size, init=recipe.init, **experiment.knobs).to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16")
    forward = torch.compile(model) if recipe.compile else model
    transform = BatchTransform(experiment.input_size, None, None, channels_last=recipe.channels_last,
                               erasing=recipe.erasing)
    images = torch.randint(0, 256, (recipe.batch_size, channels, size, size), dtype=torch.uint8,
                           generator=generator).to(device)
    labels = torch.randint(0, num_classes, (recipe.batch_size,), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    model.train()
    # A batch as the job takes it (batches.Inputs): without augmentation the fold is transformed once
    # when its floats fit, and a step only gathers; otherwise every step transforms its batch.
    train_images, _ = fold_sizes(study)
    fits = train_images * channels * experiment.input_size**2 * 4 <= PRECOMPUTE_BYTES
    inputs = Inputs(images, transform, augment=recipe.augmentation != "none",
                    budget_bytes=PRECOMPUTE_BYTES if fits else 0)
    index = torch.arange(len(images), device=device)
    step_s = seconds_per_call(
        lambda: train_step(forward, model, optimizer, scaler, inputs.take(index, generator), labels, recipe),
        device, steps)
    probe = images[: min(EVAL_PROBE_IMAGES, recipe.eval_batch_size, len(images))]
    eval_image_s = seconds_per_call(
        lambda: predict(model, probe, transform, batch_size=len(probe), precision=recipe.precision),
        device, 1) / len(probe)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "gpu"
    else:
        peak, kind = peak_process_rss_mb(), "process rss"
    return {"step_s": step_s, "eval_image_s": eval_image_s, "peak_memory_mb": peak, "memory_kind": kind}


def experiment_cost(name: str, study: Study, measured: dict[str, Any],
                    start_up_s: float = JOB_START_S) -> ExperimentCost:
    """The measured step and evaluation times multiplied by what ``study`` will run."""
    e = study.experiment(name)
    train_images, val_images = fold_sizes(study)
    steps = steps_in_epoch(e.recipe, train_images)
    if study.images:  # a folder of the project's own images
        from convbench.imagefolder import sizes

        test_images = sizes(study.dataset, study.images)[1]
    else:
        test_images = TEST_SIZES[study.dataset]
    limit = evaluation_limit(e.recipe)  # a smoke run's few evaluation batches
    if limit is not None:
        val_images, test_images = min(val_images, limit), min(test_images, limit)
    runs = len(study.runs(name))
    per_run = (e.recipe.epochs * (steps * measured["step_s"] + val_images * measured["eval_image_s"])
               + (val_images + test_images) * measured["eval_image_s"])  # convbench evaluate
    return ExperimentCost(
        experiment=name, arch=e.arch, input_size=e.input_size, batch_size=e.recipe.batch_size,
        precision=e.recipe.precision, runs=runs, epochs=e.recipe.epochs, steps_per_epoch=steps,
        step_s=measured["step_s"], eval_image_s=measured["eval_image_s"],
        seconds=runs * per_run + start_up_s, peak_memory_mb=measured["peak_memory_mb"],
        memory_kind=measured["memory_kind"],
    )


def wall_seconds(costs: list[ExperimentCost], stages: dict[str, float], light_s: float, jobs: int) -> float:
    """The study's wall time with ``jobs`` jobs at once (``snakemake --cores N`` with one thread
    a job): the data jobs one after another, then every experiment's run job, each followed by its
    aggregation, on the first free slot, the longest first (as a good scheduler packs them), then
    the study's aggregation and the report. A job is assumed to take as long beside another job as
    alone (benchmarks/RESULTS.md measures what sharing the machine costs)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    before = stages.get("check", 0.0) + stages.get("download and prepare", 0.0) + stages.get("split", 0.0)
    slots = [0.0] * jobs
    for cost in sorted(costs, key=lambda c: -c.seconds):
        slot = slots.index(min(slots))
        slots[slot] += cost.seconds + light_s  # the run, then its experiment's aggregation
    return before + max(slots) + light_s + stages.get("report", 0.0)  # the study's aggregation, report


def estimate(study: Study, *, device_name: str = "auto", threads: int | None = None,
             steps: int = 2, jobs: int = 1) -> dict[str, Any]:
    """Every experiment's and the whole study's estimated wall time (``jobs`` jobs at once) and
    peak memory on this machine, with the device it assumed."""
    device = pick_device(device_name)
    threads = threads or study.threads
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    start_up_s = measure_start_up()
    try:
        costs = [experiment_cost(name, study, measure(e, study, device, steps), start_up_s)
                 for name, e in study.experiments.items()]
    finally:
        torch.set_num_threads(previous)
    light_s = measure_light_job()
    stages = other_jobs(study, light_s, measure_report())
    total = sum(c.seconds for c in costs) + sum(stages.values())
    return {
        "device": describe_device(device) if device.type == "cuda" else
        f"cpu:{describe_cpu()['model']}:{threads} threads",
        "steps_measured": steps,
        "experiments": {c.experiment: asdict(c) for c in costs},
        "training_seconds": sum(c.seconds for c in costs),
        "other_jobs_seconds": stages,
        "total_seconds": total,
        "jobs": jobs,
        "wall_seconds": total if jobs == 1 else wall_seconds(costs, stages, light_s, jobs),
        "peak_memory_mb": max(c.peak_memory_mb for c in costs),
        "start_up_s": start_up_s,
        "assumes": ("one job at a time" if jobs == 1 else f"{jobs} jobs at once, each as fast as alone")
                   + " on this device; measured steps x the study's steps, plus "
                   f"evaluation and {start_up_s:.1f} s start-up per job (measured), and every other "
                   "job of the study, each timed as a fresh process",
    }


def duration(seconds: float) -> str:
    """Seconds in words a person plans with: 42 s, 12 min, 3.4 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_estimate(result: dict[str, Any]) -> list[str]:
    """The estimate as lines for ``convbench study``."""
    lines = [f"estimated cost on {result['device']} ({result['assumes']}):"]
    for name, c in result["experiments"].items():
        lines.append(
            f"  {name:<28} {c['runs']} runs x {c['epochs']} epochs x {c['steps_per_epoch']} steps of "
            f"{c['step_s']:.3g} s  ->  {duration(c['seconds']):>9}, peak {c['peak_memory_mb']:,.0f} MiB "
            f"({c['memory_kind']})")
    others = result.get("other_jobs_seconds", {})
    if others:
        lines.append("  the other jobs: " + ", ".join(f"{stage} {duration(seconds)}"
                                                       for stage, seconds in others.items() if seconds))
    lines.append(f"  total {duration(result['total_seconds'])} ({result['total_seconds']:,.0f} s), "
                 f"peak memory {result['peak_memory_mb']:,.0f} MiB")
    if result.get("jobs", 1) > 1:
        lines.append(f"  wall time with {result['jobs']} jobs at once (snakemake --cores {result['jobs']}): "
                     f"{duration(result['wall_seconds'])} ({result['wall_seconds']:,.0f} s)")
    return lines


if __name__ == "__main__":  # the report's probe, run as a fresh process by measure_report
    if sys.argv[1:] == ["--report-probe"]:
        _report_probe()
