"""First contact with a GPU, in one command: what must be proven before a week of GPU time.

    pip install -c constraints.txt -e ".[pipeline,test]"       # the README's Setup, on the GPU machine
    python benchmarks/gpu_check.py --out gpu_check/             # sized for <= 8 minutes on one H100-class GPU
    python benchmarks/gpu_check.py --quick --out /tmp/gpu_check  # at most ~2 minutes on a CPU (the suite runs it)

It writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``, one section per question:

- **environment**: torch, CUDA, cuDNN and the driver; each GPU's name, UUID and memory; that the
  device asked for (``--device``, ``cuda`` by default: never the CPU in silence) is the one used.
- **determinism**: the seeds' study (conf/study/fashion_mnist_d2l.yaml) in smoke mode with
  ``deterministic: true``, run twice in two fresh processes through ``convbench run``; every run's
  model.pt and metrics.json compared byte for byte, and each run's recorded device checked.
- **speed**: per network of the seeds' study at d2l's resolution and batch size, the trainer's real
  step (convbench.estimate.measure) in fp32 with TF32 off, TF32, bf16 autocast, fp16 autocast with
  its scaler, channels_last and ``compile``: examples/s and peak memory, beside d2l's V100 figures.
  ``compile`` comes last and only while the time budget lasts (its first call compiles for tens of
  seconds per network).
- **estimate**: the whole seeds' study's wall time on this device (convbench.estimate, from the
  fp32 steps measured above).
- **two_gpus**: with two or more GPUs, two ``convbench run --device cuda`` jobs at once: each must
  take its own GPU through the locks (their logs name the GPU's UUID).

Every section catches its own failure and records it, so one run reports everything; the exit code
is 1 when any check failed. ``--quick`` runs the same code at toy scale on the CPU, so that it runs
in the test suite and cannot rot: three of the study's 28 px experiments on the bundled digits for
determinism, three small networks for speed (the CUDA-only modes recorded as skipped, ``compile``
for the MLP only: inductor's C++ build of LeNet alone takes a minute on 2 cores). Not part of the
package: it only calls convbench's public functions and commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from convbench import device as devices
from convbench import estimate
from convbench._io import check_writable, positive_int, write_json_atomic, write_text_atomic
from convbench.reference import d2l
from convbench.study import load_study, read_study_file

ROOT = Path(__file__).resolve().parent.parent
SEEDS_STUDY = ROOT / "conf/study/fashion_mnist_d2l.yaml"
MODES: dict[str, dict[str, Any]] = {  # recipe settings of each speed mode
    "fp32": {"precision": "fp32", "tf32": False},
    "tf32": {"precision": "fp32", "tf32": True},
    "bf16": {"precision": "bf16", "tf32": False},
    "fp16": {"precision": "fp16", "tf32": False},
    "channels_last": {"precision": "fp32", "tf32": False, "channels_last": True},
    "compile": {"precision": "fp32", "tf32": False, "compile": True},
}
CUDA_ONLY = {"tf32", "fp16"}  # no meaning (TF32) or no scaler worth timing (fp16) on a CPU
QUICK_DETERMINISM = ("lenet", "lenet_bn", "mlp_dropout")  # --quick: pooling, batch norm, dropout
QUICK_SPEED = ("lenet", "mlp_dropout", "mini_resnet")  # --quick: small networks, at their d2l sizes
QUICK_COMPILE = ("mlp_dropout",)  # --quick: one compile, to exercise the path (LeNet's takes a minute)
PASS_TIMEOUT_S = 300  # one determinism pass (a GPU lock another job never frees must not hang it)
BUDGET_S = 420.0  # the full check starts compiling a network only until this many seconds have passed
# The loop each determinism pass runs in a fresh process: `convbench run` per experiment.
PASS_DRIVER = (
    "import sys; from convbench import run; "
    "codes = [run.main(['--study', sys.argv[1], '--experiment', e, '--threads', sys.argv[2], "
    "'--device', sys.argv[3], '--no-progress']) for e in sys.argv[4].split(',')]; sys.exit(max(codes))"
)


def section(name: str, results: dict[str, Any], work: Callable[[], dict[str, Any]]) -> None:
    """Run one section; its failure is recorded (with the traceback's last lines), not raised."""
    started = time.perf_counter()
    try:
        result = work()
    except Exception as err:  # noqa: BLE001 - the point is to report everything in one go
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc().splitlines()[-8:]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    results["sections"][name] = result
    print(f"gpu_check: {name}: {result['status']} ({result['seconds']} s)", file=sys.stderr, flush=True)


def nvidia_smi() -> list[dict[str, str]]:
    """nvidia-smi's view of the GPUs (the driver's version is only there); [] without it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,uuid,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    keys = ("index", "name", "uuid", "memory_total", "driver_version")
    return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in out.stdout.splitlines()
            if line.count(",") == 4]


def environment(asked: str) -> dict[str, Any]:
    reason = devices.cuda_unusable_reason()
    count = devices.visible_gpu_count()
    gpus = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "uuid": str(props.uuid),
                     "memory_mib": props.total_memory // 2**20, "capability": f"{props.major}.{props.minor}"})
    smi = nvidia_smi()
    result: dict[str, Any] = {
        "torch": torch.__version__, "cuda_built": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": smi[0]["driver_version"] if smi else None, "python": platform.python_version(),
        "cpu": devices.describe_cpu(), "cuda_usable": reason is None, "cuda_unusable_reason": reason,
        "gpus": gpus, "nvidia_smi": smi, "asked": asked,
        # torch's own TF32 settings before convbench sets any (cuDNN's convolutions: tf32)
        "fp32_precision_defaults": {"cuda_matmul": torch.backends.cuda.matmul.fp32_precision,
                                    "cudnn_conv": torch.backends.cudnn.conv.fp32_precision},
    }
    if reason is not None:  # what a job told to use CUDA does here: stop, saying why
        try:
            devices.pick_device("cuda")
            result["cuda_refusal"] = "NOT REFUSED"
        except devices.DeviceError as err:
            result["cuda_refusal"] = str(err)
    with devices.claim_device(asked) as choice:
        device = torch.device(choice.name)
        x = torch.ones(64, 64, device=device)
        y = (x @ x).sum().item()
        result.update(used=devices.describe_device(device), used_device=str(x.device), fallback=choice.fallback)
        if device.type == "cuda":
            result["used_uuid"] = str(torch.cuda.get_device_properties(x.device).uuid)
        wanted_type = "cpu" if asked == "cpu" else "cuda"
        ok = (x.device.type == wanted_type and y == 64 * 64 * 64 and choice.fallback is None
              and result.get("cuda_refusal", "") != "NOT REFUSED")
    result["status"] = "passed" if ok else "failed"
    return result


def prepare_work(work: Path, study_path: Path, device: str, quick: bool) -> tuple[dict[str, Any], list[str]]:
    """The seeds' study for the determinism passes: smoke 1, deterministic, on ``device``; --quick:
    three of its 28 px experiments on the bundled digits. Its data and split made here by the stages."""
    config = read_study_file(study_path)
    config["recipe"] = {**(config.get("recipe") or {}), "deterministic": True}
    config.update(smoke=1, device=device)
    config.pop("smoke_suffix", None)
    if quick:
        keep = list(QUICK_DETERMINISM)
        config.update(dataset="digits", experiments={n: config["experiments"][n] for n in keep},
                      ablations={n: a for n, a in (config.get("ablations") or {}).items()
                                 if a["baseline"] in keep and a["treatment"] in keep})
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomic(work / "study.yaml", yaml.safe_dump(config, sort_keys=False))
    for stage in ("download", "prepare", "split"):
        argv = [sys.executable, "-m", "convbench.cli", stage, "--study", "study.yaml"]
        done = subprocess.run(argv + (["--no-progress"] if stage == "download" else []), cwd=work,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"convbench {stage} failed: {done.stderr.strip()[-2000:]}")
    return config, list(config["experiments"])


def run_pass(work: Path, config: dict[str, Any], name: str, experiments: list[str], device: str,
             threads: int) -> subprocess.CompletedProcess[str]:
    """One determinism pass: the study into results/<name>, in a fresh process."""
    study = work / f"{name}.yaml"
    write_text_atomic(study, yaml.safe_dump({**config, "results_dir": f"results/{name}",
                                             "reports_dir": f"reports/{name}"}, sort_keys=False))
    return subprocess.run([sys.executable, "-c", PASS_DRIVER, study.name, str(threads), device,
                           ",".join(experiments)], cwd=work, capture_output=True, text=True,
                          timeout=PASS_TIMEOUT_S)


def determinism(out: Path, device: str, quick: bool, threads: int) -> dict[str, Any]:
    work = out / "work"
    config, experiments = prepare_work(work, SEEDS_STUDY, device, quick)
    shutil.rmtree(work / "results", ignore_errors=True)  # an earlier check's runs compare nothing
    passes = {}
    for name in ("pass1", "pass2"):
        started = time.perf_counter()
        done = run_pass(work, config, name, experiments, device, threads)
        passes[name] = {"returncode": done.returncode, "seconds": round(time.perf_counter() - started, 1),
                        "stderr_tail": done.stderr.strip().splitlines()[-6:]}
        if done.returncode != 0:
            said = passes[name]["stderr_tail"][-1:] or ["no output"]
            return {"status": "failed", "error": f"{name} failed: {said[0]}", "passes": passes,
                    "experiments": experiments}
    smoke_dir = "-smoke"  # the smoke run's results_dir suffix
    compared = compare_passes(work / f"results/pass1{smoke_dir}", work / f"results/pass2{smoke_dir}")
    wanted = "cpu" if device == "cpu" else "cuda"
    device_ok = bool(compared["device_records"]) and all(
        r["asked"] == device and r["fallback"] is None and r["used"].startswith(wanted)
        for r in compared["device_records"])
    ok = not compared["files_differing"] and compared["runs"] == len(experiments) * 2 and device_ok
    return {"status": "passed" if ok else "failed", "study": "fashion_mnist_d2l (smoke 1, deterministic: true)"
            + (f", {', '.join(experiments)} on the bundled digits (--quick)" if quick else ""),
            "experiments": experiments, **compared, "device_as_asked": device_ok, "passes": passes}


def compare_passes(first: Path, second: Path) -> dict[str, Any]:
    """Every run's model.pt and metrics.json of ``first`` against ``second``'s, byte for byte (a
    file missing from either side differs), and the device records of ``first``'s runs."""
    names = ("model.pt", "metrics.json")
    files = sorted({p.relative_to(root) for root in (first, second) for p in root.rglob("*") if p.name in names})
    differ = [str(f) for f in files if not ((first / f).exists() and (second / f).exists()
                                            and (first / f).read_bytes() == (second / f).read_bytes())]
    records = {json.dumps(json.loads((first / f).read_text()).get("device"), sort_keys=True)
               for f in files if f.name == "metrics.json" and (first / f).exists()}
    return {"runs": sum(f.name == "model.pt" for f in files), "files_compared": len(files),
            "files_differing": differ, "device_records": [json.loads(r) for r in sorted(records)]}


def d2l_examples_per_s(arch: str, knobs: dict[str, Any]) -> float | None:
    """d2l's V100 examples/s for this network as d2l trains it (reference/d2l.yaml), if it has one."""
    for entry in d2l().results.values():
        if (entry.arch, entry.knobs) == (arch, knobs):
            return entry.examples_per_s
    return None


def measure_mode(study: Any, name: str, mode: str, device: torch.device, steps: int) -> dict[str, Any]:
    experiment = study.experiment(name)
    recipe = dataclasses.replace(experiment.recipe, **MODES[mode])
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if recipe.compile:
        torch._dynamo.reset()
    started = time.perf_counter()
    try:
        measured = estimate.measure(dataclasses.replace(experiment, recipe=recipe), study, device, steps)
    except Exception as err:  # noqa: BLE001 - one mode's failure is a finding, not the end
        return {"status": "failed", "error": f"{type(err).__name__}: {err}"[:500]}
    finally:
        if device.type == "cuda":
            devices.set_tf32(False)  # measure set the mode's; the next section starts from off
    return {"status": "passed", "examples_per_s": recipe.batch_size / measured["step_s"],
            "step_s": measured["step_s"], "eval_image_s": measured["eval_image_s"], "peak_memory_mib": measured["peak_memory_mb"],
            "memory_kind": measured["memory_kind"], "seconds": round(time.perf_counter() - started, 1)}


def speed(device_name: str, quick: bool, steps: int, deadline: float, modes: tuple[str, ...],
          order: list[str] | None = None) -> dict[str, Any]:
    """``modes`` of each network (``order``: which, first to last; default the study's, or
    QUICK_SPEED); the CUDA-only ones skipped on a CPU, compile skipped once past ``deadline``."""
    study = load_study(SEEDS_STUDY)
    names = order or [n for n in study.experiments if not quick or n in QUICK_SPEED]
    with devices.claim_device(device_name) as choice:
        device = torch.device(choice.name)
        table: dict[str, Any] = {}
        for name in names:
            e = study.experiment(name)
            row = table.setdefault(name, {"arch": e.arch, "input_size": e.input_size,
                                          "batch_size": e.recipe.batch_size,
                                          "d2l_v100_examples_per_s": d2l_examples_per_s(e.arch, e.knobs),
                                          "modes": {}})
            for mode in modes:
                if device.type != "cuda" and mode in CUDA_ONLY:
                    row["modes"][mode] = {"status": "skipped", "reason": "needs CUDA"}
                elif mode == "compile" and quick and name not in QUICK_COMPILE:
                    row["modes"][mode] = {"status": "skipped", "reason": f"--quick compiles {', '.join(QUICK_COMPILE)} only"}
                elif mode == "compile" and not quick and time.monotonic() > deadline:
                    row["modes"][mode] = {"status": "skipped", "reason": "time budget spent"}
                else:
                    row["modes"][mode] = measure_mode(study, name, mode, device, steps)
        used = devices.describe_device(device)
    failed = [f"{n}/{m}" for n, r in table.items() for m, v in r["modes"].items() if v["status"] == "failed"]
    return {"status": "failed" if failed else "passed", "device": used, "failed": failed, "networks": table,
            "steps": steps}


def study_estimate(speed_result: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The seeds' study's wall time on this device from the fp32 steps measured (convbench.estimate)."""
    study = load_study(SEEDS_STUDY)
    start_up = estimate.measure_start_up(1 if quick else estimate.START_UP_SAMPLES)
    costs, missing = {}, []
    for name, row in speed_result["networks"].items():
        fp32 = row["modes"].get("fp32", {})
        if fp32.get("status") != "passed":
            missing.append(name)
            continue
        measured = {"step_s": fp32["step_s"], "eval_image_s": fp32["eval_image_s"],
                    "peak_memory_mb": fp32["peak_memory_mib"], "memory_kind": fp32["memory_kind"]}
        costs[name] = dataclasses.asdict(estimate.experiment_cost(name, study, measured, start_up))
    missing += [n for n in study.experiments if n not in speed_result["networks"]]
    total = sum(c["seconds"] for c in costs.values())
    return {"status": "passed" if costs and not (set(missing) & set(speed_result["networks"])) else "failed",
            "device": speed_result["device"], "total_seconds": total, "total": estimate.duration(total),
            "experiments_estimated": len(costs), "experiments_in_study": len(study.experiments),
            "not_estimated": missing, "start_up_s": start_up,
            "assumes": "one job at a time; the fp32 training steps and evaluation batches measured "
                       "in speed, times the study's steps and images, plus the start-up measured",
            "experiments": {n: {"seconds": c["seconds"], "runs": c["runs"], "steps_per_epoch": c["steps_per_epoch"]}
                            for n, c in costs.items()}}


def two_gpus(out: Path, threads: int) -> dict[str, Any]:
    count = devices.visible_gpu_count()
    if count < 2:
        return {"status": "skipped", "reason": f"needs 2 GPUs, {count} visible"}
    work = out / "work"
    config = yaml.safe_load((work / "study.yaml").read_text())
    pair = sorted(config["experiments"], key=lambda n: -load_study(work / "study.yaml").experiment(n).input_size)[:2]
    study = work / "two_gpus.yaml"
    write_text_atomic(study, yaml.safe_dump({**config, "results_dir": "results/two_gpus",
                                     "reports_dir": "reports/two_gpus"}, sort_keys=False))
    jobs = [subprocess.Popen([sys.executable, "-c", PASS_DRIVER, study.name, str(threads), "cuda", name],
                             cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            for name in pair]
    errs = []
    for job in jobs:
        try:
            errs.append(job.communicate(timeout=PASS_TIMEOUT_S)[1])
        except subprocess.TimeoutExpired:
            job.kill()
            errs.append(job.communicate()[1] + "\n(killed: timed out)")
    held = [sorted(set(re.findall(r"held with the lock gpu-(\S+)\.lock", err))) for err in errs]
    distinct = all(len(h) == 1 for h in held) and held[0] != held[1]
    ok = distinct and all(job.returncode == 0 for job in jobs)
    return {"status": "passed" if ok else "failed", "experiments": pair, "gpus_held": held,
            "returncodes": [job.returncode for job in jobs],
            "stderr_tails": [err.strip().splitlines()[-4:] for err in errs]}


def markdown(results: dict[str, Any]) -> str:
    s, env = results["sections"], results["sections"].get("environment", {})
    lines = [f"## gpu_check{' --quick' if results['quick'] else ''}: {results['date']}", "",
             f"Device asked: `{results['device']}`; overall: **{results['status']}** in "
             f"{results['seconds']:.0f} s. Command: `{results['command']}`", ""]
    for name, result in s.items():
        lines.append(f"- **{name}**: {result['status']}" + (f" ({result['reason']})" if "reason" in result else "")
                     + (f": {result['error']}" if "error" in result else ""))
    if env.get("status") != "failed" and env:
        gpus = "; ".join(f"{g['name']} {g['uuid']} {g['memory_mib']:,} MiB" for g in env.get("gpus", [])) or "none"
        lines += ["", f"Environment: torch {env['torch']}, CUDA {env['cuda_built']}, cuDNN {env['cudnn']}, "
                  f"driver {env['driver']}, CPU {env['cpu']['model']} ({env['cpu']['capability']}); GPUs: {gpus}; "
                  f"used: `{env.get('used')}`" + (f"; CUDA not usable: {env['cuda_unusable_reason']}"
                                                   if env.get("cuda_unusable_reason") else "")]
    det = s.get("determinism", {})
    if "runs" in det:
        lines += ["", f"Determinism: {det['study']}: {det['runs']} runs, {det['files_compared']} files "
                  f"compared byte for byte, {len(det['files_differing'])} differing; passes took "
                  + ", ".join(f"{p['seconds']} s" for p in det["passes"].values()) + "."]
    sp = s.get("speed", {})
    if "networks" in sp:
        modes = list(MODES)
        lines += ["", f"Speed on `{sp['device']}`: examples/s of the trainer's step (convbench.estimate.measure, "
                  f"{sp.get('steps', '?')}+ steps after a warm-up) and, in brackets, peak memory in MiB (the "
                  "process's RSS on a CPU, the CUDA allocator's peak on a GPU); d2l's V100 figure beside it:", "",
                  "| network | px | batch | d2l V100 ex/s | " + " | ".join(modes) + " |",
                  "|---|---|---|---|" + "---|" * len(modes)]
        for name, row in sp["networks"].items():
            cells = []
            for mode in modes:
                m = row["modes"].get(mode, {"status": "skipped", "reason": "not asked"})
                cells.append(f"{m['examples_per_s']:,.0f} ({m['peak_memory_mib']:,.0f})" if m["status"] == "passed"
                             else f"{m['status']}: {m.get('reason') or m.get('error', '')[:60]}")
            ref = row["d2l_v100_examples_per_s"]
            lines.append(f"| {name} | {row['input_size']} | {row['batch_size']} | "
                         f"{f'{ref:,.0f}' if ref else '-'} | " + " | ".join(cells) + " |")
    est = s.get("estimate", {})
    if "total" in est:
        lines += ["", f"The seeds' study on `{est['device']}`: {est['total']} ({est['total_seconds']:,.0f} s) "
                  f"for {est['experiments_estimated']} of {est['experiments_in_study']} experiments "
                  f"({est['assumes']})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json and gpu_check.md")
    parser.add_argument("--quick", action="store_true", help="toy scale on the CPU, in about 2 minutes")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --quick)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: 2 with --quick, else 4)")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps timed per mode (default 2 / 3)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds after which no further network is compiled (default {BUDGET_S:.0f}; "
                             "each compile takes tens of seconds)")
    args = parser.parse_args(argv)
    try:  # before any measurement: minutes of GPU time must not end in a file that cannot be written
        check_out(args.out)
    except OSError as err:
        print(f"gpu_check.py: error: {err}", file=sys.stderr)
        return 2
    started, clock = time.perf_counter(), time.monotonic()
    device = args.device or ("cpu" if args.quick else "cuda")
    threads = args.threads or (2 if args.quick else 4)
    steps = args.steps or (2 if args.quick else 3)
    torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "device": device, "threads": threads, "sections": {}}
    deadline = clock + args.budget
    modes = tuple(m for m in MODES if m != "compile")
    section("environment", results, lambda: environment(device))
    section("determinism", results, lambda: determinism(args.out, device, args.quick, threads))
    section("speed", results, lambda: speed(device, args.quick, steps, deadline, modes))
    if "networks" in results["sections"]["speed"]:
        section("estimate", results, lambda: study_estimate(results["sections"]["speed"], args.quick))
    else:
        results["sections"]["estimate"] = {"status": "skipped", "reason": "no speed measured", "seconds": 0.0}
    section("two_gpus", results, lambda: two_gpus(args.out, threads))
    # the networks that cost the study most first: compile matters most there
    cost = {n: c["seconds"] for n, c in results["sections"].get("estimate", {}).get("experiments", {}).items()}
    order = sorted(cost, key=lambda n: -cost[n]) or None
    section("compile", results, lambda: speed(device, args.quick, steps, deadline, ("compile",), order))
    compiled = results["sections"]["compile"]  # its column joins the speed table
    for name, row in compiled.get("networks", {}).items():
        results["sections"].get("speed", {}).get("networks", {}).get(name, {}).get("modes", {})["compile"] = \
            row["modes"]["compile"]
    failed = [n for n, r in results["sections"].items() if r["status"] == "failed"]
    results.update(status="failed" if failed else "passed", failed=failed,
                   seconds=round(time.perf_counter() - started, 1))
    print(markdown(results))
    if not save(args.out, results):
        return 1
    return 1 if failed else 0


OUT_FILES = ("gpu_check.json", "gpu_check.md")


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot take the results (a file, a directory that cannot be made or
    written), naming it: an OSError."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file; expected a directory for {' and '.join(OUT_FILES)} "
                                 "(it is made if missing)")
    for name in OUT_FILES:
        try:
            check_writable(out / name)
        except OSError as err:
            raise PermissionError(f"--out {out}: {err}") from None


def save(out: Path, results: dict[str, Any]) -> bool:
    """Write gpu_check.json and gpu_check.md, each all or nothing; when that fails, print the JSON
    to stdout so that no measurement is lost, and say why on stderr. True when saved."""
    text = json.dumps(results, indent=2, default=str)
    try:
        write_text_atomic(out / "gpu_check.json", text)
        write_text_atomic(out / "gpu_check.md", markdown(results))
    except OSError as err:
        print(text)
        print(f"gpu_check.py: error: could not save the results to {out} ({err}); they are printed above "
              "as JSON: save them from this output", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
