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

from convbench.device import claim_device, default_lock_dir, gpu_slot

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


def test_explicit_devices_pass_through_without_a_lock(tmp_path: Path) -> None:
    for name in ("cpu", "cuda:1"):
        with claim_device(name, lock_dir=tmp_path / "locks") as device:
            assert device == name
    assert not (tmp_path / "locks").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_is_the_cpu_without_gpus(tmp_path: Path) -> None:
    with claim_device("auto", lock_dir=tmp_path / "locks") as device:
        assert device == "cpu"
    with claim_device(lock_dir=tmp_path / "locks") as device:  # auto is the default
        assert device == "cpu"


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
