"""The GPU slot allocator, on the CPU: slots are simulated by their count, the locks are real.

``flock`` locks belong to an open file description, not to a process: two ``open()``s of the same
lock file conflict even within one process (Linux), which the first tests rely on. The others hold
slots from separate processes, as concurrent Snakemake jobs do, and kill one with SIGKILL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import pytest
import torch

from convbench import device
from convbench.device import DeviceError, claim_device, default_lock_dir, gpu_slot

HOLDER = """
import sys
from pathlib import Path
from convbench.device import gpu_slot

with gpu_slot(int(sys.argv[2]), lock_dir=Path(sys.argv[1]), timeout=30, poll_seconds=0.02) as slot:
    print(slot, flush=True)
    sys.stdin.read()  # hold the slot until stdin closes (or the process is killed)
"""


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by ``hold``; any still alive after the test are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def hold(
    holders: list[subprocess.Popen[str]], lock_dir: Path, n_slots: int
) -> tuple[subprocess.Popen[str], int]:
    """Start a process that takes one of ``n_slots`` and keeps it; returns it and its slot."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), str(n_slots)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    holders.append(process)
    line = process.stdout.readline() if process.stdout else ""
    assert line.strip().isdigit(), f"holder printed {line!r}"
    return process, int(line)


def test_no_gpus_means_the_cpu(tmp_path: Path) -> None:
    with gpu_slot(0, lock_dir=tmp_path / "locks") as slot:
        assert slot is None
    assert not (tmp_path / "locks").exists()  # nothing to lock


def test_holders_in_one_process_get_distinct_slots_and_a_third_times_out(tmp_path: Path) -> None:
    with ExitStack() as stack:
        first = stack.enter_context(gpu_slot(2, lock_dir=tmp_path))
        second = stack.enter_context(gpu_slot(2, lock_dir=tmp_path))
        assert {first, second} == {0, 1}
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"no free GPU slot among 2 in {tmp_path}"):
            with gpu_slot(2, lock_dir=tmp_path, timeout=0.3, poll_seconds=0.05):
                pass
        assert time.monotonic() - started >= 0.3  # it waited before giving up
    # released at the end of the with block: both are free again
    with gpu_slot(2, lock_dir=tmp_path, timeout=0) as again:
        assert again == 0


def test_a_slot_is_released_when_its_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with gpu_slot(1, lock_dir=tmp_path):
            raise RuntimeError("job failed")
    with gpu_slot(1, lock_dir=tmp_path, timeout=0) as slot:
        assert slot == 0


def test_holder_processes_get_distinct_slots(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    first, slot_a = hold(holders, tmp_path, 2)
    second, slot_b = hold(holders, tmp_path, 2)
    assert {slot_a, slot_b} == {0, 1}
    assert (tmp_path / f"gpu{slot_a}.lock").read_text() == f"{first.pid}\n"
    assert (tmp_path / f"gpu{slot_b}.lock").read_text() == f"{second.pid}\n"
    with pytest.raises(TimeoutError):
        with gpu_slot(2, lock_dir=tmp_path, timeout=0.2, poll_seconds=0.05):
            pass
    # a holder that finishes normally frees its slot
    assert second.stdin is not None
    second.stdin.close()
    assert second.wait(timeout=30) == 0
    with gpu_slot(2, lock_dir=tmp_path, timeout=5, poll_seconds=0.02) as slot:
        assert slot == slot_b


def test_a_killed_holders_slot_goes_to_a_waiting_job(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    victim, victim_slot = hold(holders, tmp_path, 2)
    _, other_slot = hold(holders, tmp_path, 2)
    kill = threading.Timer(0.3, victim.kill)  # SIGKILL: no chance to unlock anything itself
    started = time.monotonic()
    kill.start()
    try:
        with gpu_slot(2, lock_dir=tmp_path, timeout=30, poll_seconds=0.02) as slot:
            waited = time.monotonic() - started
            assert slot == victim_slot != other_slot
    finally:
        kill.cancel()
    assert waited >= 0.3  # it waited for the kill
    assert victim.wait(timeout=30) == -9


def fake_cuda(monkeypatch: pytest.MonkeyPatch, gpus: int, warning: str | None = None) -> list[int]:
    """CUDA as this process would see it with ``gpus`` GPUs (0: is_available() False, warning as
    torch does when the driver is too old); device.py's once-per-process answer is reset. Returns
    the GPU indices set_device was called with."""
    import warnings

    def is_available() -> bool:
        if warning:
            warnings.warn(warning, UserWarning)
        return gpus > 0

    set_to: list[int] = []
    monkeypatch.setattr(device, "_CUDA_STATE", [])
    monkeypatch.setattr(device, "_FALLBACK_SAID", [])
    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", set_to.append)
    monkeypatch.setattr(device, "gpu_lock_names", lambda count: [f"gpu-GPU-fake-{i}" for i in range(count)])
    return set_to


def test_explicit_devices_pass_through_without_a_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, gpus=2)
    for name in ("cpu", "cuda:1"):
        with claim_device(name, lock_dir=tmp_path / "locks") as choice:
            assert (choice.asked, choice.name, choice.fallback) == (name, name, None)
    assert not (tmp_path / "locks").exists()


def test_cuda_takes_a_free_gpu_through_the_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_to = fake_cuda(monkeypatch, gpus=2)
    with claim_device("cuda", lock_dir=tmp_path / "locks") as first, \
            claim_device("cuda", lock_dir=tmp_path / "locks") as second:
        assert (first.name, second.name) == ("cuda:0", "cuda:1")
        assert first.fallback is second.fallback is None
        assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["gpu-GPU-fake-0.lock", "gpu-GPU-fake-1.lock"]
    assert set_to == [0, 1]
    assert capsys.readouterr().err.splitlines() == [
        f"convbench: device cuda: cuda:{i}, held with the lock gpu-GPU-fake-{i}.lock" for i in (0, 1)]


TOO_OLD = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 12020). "
           "Please update your GPU driver")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_usable_gpu_stops_naming_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A driver too old for the wheel makes torch.cuda.is_available() False with only a warning:
    a job asked for CUDA stops, quoting it, instead of training on the CPU."""
    fake_cuda(monkeypatch, gpus=0, warning=TOO_OLD)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    for attempt in (lambda: claim_device(name, lock_dir=tmp_path / "locks").__enter__(),
                    lambda: device.pick_device(name)):
        with pytest.raises(DeviceError) as refused:
            attempt()
        message = str(refused.value)
        assert f"device {name!r} was asked for, but CUDA is not usable" in message
        assert "built for CUDA 13.0" in message and TOO_OLD in message  # warned once, kept
        assert "--device auto" in message
    assert not (tmp_path / "locks").exists()


def test_cuda_without_a_gpu_or_a_warning_says_where_to_look(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, gpus=0)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(DeviceError, match=r"no GPU is visible \(see nvidia-smi and CUDA_VISIBLE_DEVICES\), "
                                          r"or the NVIDIA driver is too old for CUDA 13\.0"):
        device.pick_device("cuda")
    monkeypatch.setattr(device, "_CUDA_STATE", [])
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(DeviceError, match="is a CPU-only build: install a CUDA build of torch"):
        device.pick_device("cuda")


def test_auto_falls_back_to_the_cpu_saying_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_cuda(monkeypatch, gpus=0, warning=TOO_OLD)
    for _ in range(2):
        with claim_device("auto", lock_dir=tmp_path / "locks") as choice:
            assert (choice.asked, choice.name) == ("auto", "cpu")
            assert choice.fallback is not None and TOO_OLD in choice.fallback
    assert not (tmp_path / "locks").exists()
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith("convbench: device auto: running on the CPU, as ")
    assert TOO_OLD in said[0]
    record = choice.record(torch.device("cpu"), tf32=True)
    assert record == {"asked": "auto", "used": device.describe_device(torch.device("cpu")),
                      "fallback": choice.fallback, "tf32": False}  # TF32 never applies on a CPU


def test_auto_with_a_gpu_does_not_fall_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    fake_cuda(monkeypatch, gpus=1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H100 80GB HBM3")
    with claim_device("auto", lock_dir=tmp_path / "locks") as choice:
        assert (choice.name, choice.fallback) == ("cuda:0", None)
        assert choice.record(torch.device(choice.name), tf32=True) == {
            "asked": "auto", "used": "cuda:NVIDIA H100 80GB HBM3", "fallback": None, "tf32": True}
    assert capsys.readouterr().err == "convbench: device auto: cuda:0, held with the lock gpu-GPU-fake-0.lock\n"


def test_set_tf32_sets_cudnn_and_matmul_alike() -> None:
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
              torch.backends.cudnn.rnn.fp32_precision)
    try:
        for enabled, value in ((True, "tf32"), (False, "ieee")):
            device.set_tf32(enabled)
            assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
                    torch.backends.cudnn.rnn.fp32_precision) == (value,) * 3
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision, \
            torch.backends.cudnn.rnn.fp32_precision = before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_is_the_cpu_without_gpus(tmp_path: Path) -> None:
    with claim_device("auto", lock_dir=tmp_path / "locks") as choice:
        assert choice.name == "cpu" and choice.fallback
    with claim_device(lock_dir=tmp_path / "locks") as choice:  # auto is the default
        assert choice.name == "cpu"


def test_the_default_lock_dir_is_per_user_in_the_machines_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs that give no lock_dir lock files in one directory per user under the temp dir: the
    same user's jobs exclude each other; another user's jobs use their own directory (an open
    lock directory of one user would not be writable by the others)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = default_lock_dir()
    assert mine.parent == tmp_path and default_lock_dir() == mine
    with gpu_slot(1, timeout=0) as slot:  # no lock_dir: the default
        assert slot == 0
        assert (mine / "gpu0.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(TimeoutError, match=f"in {re.escape(str(mine))} after"):
            with gpu_slot(1, timeout=0):
                pass
        uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: uid + 1)
        theirs = default_lock_dir()
        assert theirs.parent == tmp_path and theirs != mine
        with gpu_slot(1, timeout=0) as other_users_slot:
            assert other_users_slot == 0


def test_locks_are_per_gpu_not_per_index(tmp_path: Path) -> None:
    """Two jobs that each see their own GPU as cuda:0 (SLURM's CUDA_VISIBLE_DEVICES) hold their
    own locks at once; two jobs that see the same GPU still wait for each other."""
    with gpu_slot(1, lock_dir=tmp_path, names=["gpu-GPU-aaaa"]) as first:
        with gpu_slot(1, lock_dir=tmp_path, timeout=0, names=["gpu-GPU-bbbb"]) as second:
            assert first == second == 0
        with pytest.raises(TimeoutError):
            with gpu_slot(1, lock_dir=tmp_path, timeout=0.2, poll_seconds=0.05, names=["gpu-GPU-aaaa"]):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-GPU-aaaa.lock", "gpu-GPU-bbbb.lock"]
    with pytest.raises(ValueError, match="1 lock names for 2 GPU slots"):
        with gpu_slot(2, lock_dir=tmp_path, names=["gpu-GPU-aaaa"]):
            pass


def test_gpu_lock_names_come_from_the_gpus_uuids(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from convbench.device import gpu_lock_names

    uuids = ["5a1d2f3e-0000-4000-8000-000000000001", "5a1d2f3e-0000-4000-8000-000000000002"]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuids[i]))
    assert gpu_lock_names(2) == [f"gpu-{u}" for u in uuids]
    assert gpu_lock_names(0) == []


@pytest.mark.parametrize("tf32", [False, True])
def test_training_and_the_estimate_set_the_recipes_tf32_before_any_gpu_work(
    monkeypatch: pytest.MonkeyPatch, tf32: bool
) -> None:
    """At the seam where a GPU run starts (no GPU here): the trainer and the estimate's timed steps
    set the recipe's TF32 choice before anything runs on the device."""
    import dataclasses
    from types import SimpleNamespace

    from convbench import estimate, train
    from convbench.models import build
    from convbench.recipe import resolve_recipe
    from convbench.study import load_study

    class Started(Exception):
        pass

    calls: list[bool] = []

    def set_tf32(enabled: bool) -> None:
        calls.append(enabled)
        raise Started

    monkeypatch.setattr(train, "set_tf32", set_tf32)
    monkeypatch.setattr(estimate, "set_tf32", set_tf32)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H100 80GB HBM3")
    recipe = resolve_recipe({"tf32": tf32}, "lenet")
    on_a_gpu = SimpleNamespace(train_images=SimpleNamespace(device=torch.device("cuda")))
    with pytest.raises(Started):
        train.train(build("lenet", input_size=28), on_a_gpu, recipe, input_size=28, seed=0)
    study = load_study(Path(__file__).resolve().parents[1] / "conf/study/fashion_mnist_d2l.yaml")
    lenet = dataclasses.replace(study.experiment("lenet"), recipe=recipe)
    with pytest.raises(Started):
        estimate.measure(lenet, study, torch.device("cuda"), 1)
    assert calls == [tf32, tf32]
