"""Which device a job runs on: a GPU of its own, checked before any work, or the CPU.

One GPU per job, on file locks: ``snakemake --resources gpu=N`` only caps how many GPU jobs run at
once; it never tells a job *which* GPU to use (snakemake issue #281), so N concurrent jobs would all
land on cuda:0. Each training or evaluation job therefore takes an exclusive ``flock`` on one lock
file per visible GPU and uses that device; the kernel drops the lock when the process ends, however
it ends, so a killed job never leaves a GPU reserved.

No silent fallback: ``cuda`` (or ``cuda:N``) is a promise, so a job asked for it stops before any
work, saying why, when CUDA is not usable (no GPU, a CPU-only torch, or a driver too old for the
wheel, which torch itself only warns about). Only ``auto`` falls back to the CPU, and then it says
so on stderr and in the run's provenance (:class:`DeviceChoice`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch


class DeviceError(ValueError):
    """A ``--device`` this machine does not have, or that the trainer does not run on."""


_CUDA_STATE: list[str | None] = []  # cuda_unusable_reason's answer, once per process
_FALLBACK_SAID: list[bool] = []  # choose_device said auto's fallback on stderr


def cuda_unusable_reason() -> str | None:
    """Why CUDA cannot be used in this process, in words a person can act on; None when it can.

    torch.cuda.is_available() answers False with only a warning when the driver is too old for the
    wheel's CUDA, and warns once per process: the first answer, with what torch said, is kept.
    """
    if not _CUDA_STATE:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            available = torch.cuda.is_available()
        said = " ".join(" ".join(str(w.message).split()) for w in caught)
        if available:
            reason = None
        elif torch.version.cuda is None:
            reason = (f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build "
                      "of torch (constraints.txt pins the version)")
        else:
            reason = (f"torch.cuda.is_available() is False (torch {torch.__version__}, built for "
                      f"CUDA {torch.version.cuda}); "
                      + (f"torch warned: {said}" if said else
                         "no GPU is visible (see nvidia-smi and CUDA_VISIBLE_DEVICES), or the NVIDIA "
                         f"driver is too old for CUDA {torch.version.cuda} (nvidia-smi's 'CUDA "
                         "Version' is the newest the driver supports)"))
        _CUDA_STATE.append(reason)
    return _CUDA_STATE[0]


@dataclass(frozen=True)
class DeviceChoice:
    """The device a job asked for and the one it runs on; ``fallback`` says why ``auto`` ran on
    the CPU (None when it did not fall back)."""

    asked: str
    name: str  # what torch.device takes: cpu, cuda:N
    fallback: str | None = None

    def record(self, device: torch.device, tf32: bool) -> dict[str, object]:
        """What a run's provenance says about its device: asked, used, any fallback, and whether
        fp32 convolutions and matrix products ran in TF32 (only ever on a GPU)."""
        return {"asked": self.asked, "used": describe_device(device), "fallback": self.fallback,
                "tf32": bool(tf32 and device.type == "cuda")}


def choose_device(name: str | DeviceChoice = "auto") -> DeviceChoice:
    """``auto`` is the CPU when CUDA is not usable (the fallback, with its reason, said on stderr);
    anything else is checked by :func:`pick_device`."""
    if isinstance(name, DeviceChoice):
        return name
    if name != "auto":
        return DeviceChoice(name, str(pick_device(name)))
    reason = cuda_unusable_reason()
    if reason is None:
        return DeviceChoice(name, "cuda")
    if not _FALLBACK_SAID:  # once per process, not once per run
        _FALLBACK_SAID.append(True)
        print(f"convbench: device auto: running on the CPU, as {reason}", file=sys.stderr, flush=True)
    return DeviceChoice(name, "cpu", fallback=reason)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``, shared by the commands that train or score; see :func:`device_of`."""
    parser.add_argument("--device", default=None,
                        help="auto (a free GPU, held with a lock, else the CPU, which the log and the "
                             "results then say), cuda (a free GPU, held with a lock; stops when CUDA is "
                             "not usable), cuda:N or cpu; default: the study's device (auto without one)")


def device_of(args: argparse.Namespace) -> str:
    """The device a command's jobs ask for: --device, else the study's ``device``, else auto."""
    if args.device is not None:
        return args.device
    if getattr(args, "study", None) is not None:
        from convbench.study import load_study

        return load_study(args.study, smoke=args.smoke).device
    return "auto"


def pick_device(name: str | DeviceChoice = "auto") -> torch.device:
    """``auto`` takes the GPU the job was given (CUDA_VISIBLE_DEVICES) and falls back to the CPU.

    An explicit name is checked here, so a device the machine lacks is a one-line error before any
    work instead of a CUDA error in the middle of it, or a silent run on the CPU.
    """
    if isinstance(name, DeviceChoice):
        return torch.device(name.name)
    if name == "auto":
        return torch.device(choose_device(name).name)
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's own message lists two dozen device types we do not run on
        raise DeviceError(f"unknown device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r}: convbench runs on cpu or cuda[:N] only")
    if device.type == "cuda" and (reason := cuda_unusable_reason()) is not None:
        raise DeviceError(f"device {name!r} was asked for, but CUDA is not usable: {reason}. "
                          "Use --device auto (or device: auto) to allow running on the CPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} was asked for, but only {torch.cuda.device_count()} "
                          "CUDA device(s) are visible")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a wall-clock timing measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_tf32(enabled: bool) -> None:
    """fp32 convolutions and matrix products in TF32 (10-bit mantissa) or in full fp32, on CUDA.

    cuDNN runs fp32 convolutions in TF32 on Ampere and newer unless told otherwise, which changes
    results against fp32: the recipe's ``tf32`` decides (off by default), and runs record it.
    torch's newer per-backend settings only (mixing them with ``allow_tf32`` is an error).
    """
    precision = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cudnn.rnn.fp32_precision = precision


def set_determinism(deterministic: bool) -> None:
    """PyTorch's deterministic mode for GPU runs (CPU runs are deterministic already).

    Only touched when asked for: ``use_deterministic_algorithms`` imports torch._dynamo, which
    costs every job seconds of start-up.
    """
    if not deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def gpu_lock_names(count: int) -> list[str]:
    """One lock name per visible GPU, from the GPU's UUID, not its index: under SLURM (or any
    CUDA_VISIBLE_DEVICES) each job sees its own GPU as cuda:0, and a lock per index would make jobs
    on different GPUs of one node wait for each other."""
    return [f"gpu-{torch.cuda.get_device_properties(i).uuid}" for i in range(count)]


def default_lock_dir() -> Path:
    """Per user and per machine: GPUs are a machine's, and so is /tmp (on SLURM nodes too)."""
    return Path(tempfile.gettempdir()) / f"convbench-gpu-locks-{os.getuid()}"


@contextlib.contextmanager
def gpu_slot(
    n_slots: int,
    *,
    lock_dir: Path | None = None,
    timeout: float | None = None,
    poll_seconds: float = 0.2,
    names: Sequence[str] | None = None,
) -> Iterator[int | None]:
    """Hold one of ``n_slots`` GPU slots for the duration of the ``with`` block.

    Yields the slot index (the GPU to use), or None when ``n_slots`` is 0 (use the CPU). Waits for
    a free slot, up to ``timeout`` seconds (None: forever), then raises TimeoutError. Slot i's
    lock file is ``names[i]``.lock (gpu_lock_names: the GPU's UUID), or gpu<i>.lock without names.
    """
    if names is not None and len(names) != n_slots:
        raise ValueError(f"{len(names)} lock names for {n_slots} GPU slots")
    if n_slots <= 0:
        yield None
        return
    lock_dir = lock_dir or default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for slot in range(n_slots):
            handle = open(lock_dir / f"{names[slot] if names else f'gpu{slot}'}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                yield slot
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no free GPU slot among {n_slots} in {lock_dir} after {timeout} s")
        time.sleep(poll_seconds)


def visible_gpu_count() -> int:
    return torch.cuda.device_count() if cuda_unusable_reason() is None else 0


@contextlib.contextmanager
def claim_device(name: str = "auto", *, lock_dir: Path | None = None) -> Iterator[DeviceChoice]:
    """Resolve ``auto`` or ``cuda`` to a free ``cuda:N`` (held until the block ends); ``auto``
    falls back to ``cpu`` (saying why), ``cuda`` stops with the reason (DeviceError).

    ``cpu`` and ``cuda:N`` are used as given, without a lock (``cuda:N`` checked first).
    """
    if name not in ("auto", "cuda"):
        yield DeviceChoice(name, str(pick_device(name)))
        return
    choice = choose_device(name)  # cuda without a usable GPU stops here
    if choice.fallback is not None:
        yield choice
        return
    count = visible_gpu_count()
    names = gpu_lock_names(count)
    with gpu_slot(count, lock_dir=lock_dir, names=names) as slot:
        torch.cuda.set_device(slot)
        # which GPU each job had, in its log (the lock is named by the GPU's UUID)
        print(f"convbench: device {name}: cuda:{slot}, held with the lock {names[slot]}.lock",
              file=sys.stderr, flush=True)
        yield DeviceChoice(name, f"cuda:{slot}")


def describe_device(device: torch.device) -> str:
    """The device in words, as results record it: the GPU's name, or the CPU's architecture and
    torch's thread count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}:{torch.get_num_threads()} threads"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


@functools.lru_cache(maxsize=None)
def onednn_isa() -> str:
    """The instruction set oneDNN's kernels use here (``Intel AVX2``, ``Intel AVX-512 ...``), as
    oneDNN itself reports it: its verbose mode prints it before its first primitive. It is not
    torch's capability: ``ONEDNN_MAX_CPU_ISA`` caps it alone, and it tells AVX-512 generations
    (with or without bf16, AMX) apart. ``not used`` where torch has no oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return "not used"
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 1)  # oneDNN writes to the C stdout, not to sys.stdout
            try:
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    torch.nn.functional.conv2d(torch.ones(8, 16, 32, 32), torch.ones(16, 16, 3, 3))
            finally:
                os.dup2(saved, 1)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
    finally:
        os.close(saved)
    found = re.search(r"info,cpu,isa:([^\n]+)", text)
    return found.group(1).strip() if found else "unknown"


def describe_cpu() -> dict[str, str]:
    """The CPU a result was computed on: vendor, family, model and the instruction sets that
    torch's own kernels (its capability) and oneDNN's use.

    CPU results are bit-identical only on one CPU type with one thread count: oneDNN and MKL pick
    kernels by instruction set, so an AVX-512 machine and an AVX2 one round differently, and the
    model name alone ("AMD EPYC") covers several generations.
    """
    info = _cpuinfo()
    model = info.get("model name") or info.get("Model") or platform.processor() or "unknown"
    return {
        "model": model,
        "vendor": info.get("vendor_id") or info.get("CPU implementer") or "unknown",
        "family": info.get("cpu family") or info.get("CPU architecture") or "unknown",
        "model_number": info.get("model") or info.get("CPU part") or "unknown",
        "architecture": platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": onednn_isa(),
    }
