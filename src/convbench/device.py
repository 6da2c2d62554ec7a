"""Which device a job runs on: a GPU of its own, checked before any work, or the CPU.

One GPU per job, on file locks: ``snakemake --resources gpu=N`` only caps how many GPU jobs run at
once; it never tells a job *which* GPU to use (snakemake issue #281), so N concurrent jobs would all
land on cuda:0. Each training or evaluation job therefore takes an exclusive ``flock`` on one lock
file per visible GPU and uses that device; the kernel drops the lock when the process ends, however
it ends, so a killed job never leaves a GPU reserved. With no GPU the job runs on the CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch


class DeviceError(ValueError):
    """A ``--device`` this machine does not have, or that the trainer does not run on."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes the GPU the job was given (CUDA_VISIBLE_DEVICES) and falls back to the CPU.

    An explicit name is checked here, so a device the machine lacks is a one-line error before any
    work instead of a CUDA error in the middle of it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's own message lists two dozen device types we do not run on
        raise DeviceError(f"unknown device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r}: convbench runs on cpu or cuda[:N] only")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was asked for, but no CUDA device is visible")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} was asked for, but only {torch.cuda.device_count()} "
                          "CUDA device(s) are visible")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a wall-clock timing measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def claim_device(name: str = "auto", *, lock_dir: Path | None = None) -> Iterator[str]:
    """Resolve ``auto`` to a free ``cuda:N`` (held until the block ends) or ``cpu``.

    An explicit device (``cpu``, ``cuda:1``) is used as given, without a lock.
    """
    if name != "auto":
        yield name
        return
    count = visible_gpu_count()
    with gpu_slot(count, lock_dir=lock_dir, names=gpu_lock_names(count)) as slot:
        if slot is None:
            yield "cpu"
        else:
            torch.cuda.set_device(slot)
            yield f"cuda:{slot}"


def describe_device(device: torch.device) -> str:
    """The device in words, as results record it: the GPU's name, or the CPU's architecture and
    torch's thread count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}:{torch.get_num_threads()} threads"


def describe_cpu() -> dict[str, str]:
    """The CPU a result was computed on: its model and the instruction set torch's kernels use.

    CPU results are bit-identical only on one CPU type with one thread count: oneDNN and MKL pick
    kernels by instruction set, so an AVX-512 machine and an AVX2 one round differently.
    """
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            model = next((line.split(":", 1)[1].strip() for line in file
                          if line.split(":", 1)[0].strip() in ("model name", "Model")), "")
    except OSError:
        pass
    return {
        "model": model or platform.processor() or "unknown",
        "architecture": platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
