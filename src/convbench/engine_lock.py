"""One engine at a time in a project, for as long as any of its jobs runs.

Snakemake and DVC both delete a job's outputs before they run it, so two engines (or an engine and
a person's ``convbench run``) working in one project would delete and overwrite each other's
files. DVC's own repository lock (``.dvc/tmp/lock``) does not keep them apart: DVC releases it
while a stage's command runs. So the project keeps one record of who runs in it,
``.dvc/tmp/convbench-engine.json``, that every writing ``convbench`` command and Snakemake's
``onstart`` consult:

- Snakemake claims the project for its whole run (``claim_for_snakemake``) and hands its jobs a
  token (``CONVBENCH_ENGINE_TOKEN``, inherited by local jobs and by ``sbatch``'s), so they pass.
- Under DVC the first stage's command claims the project for the ``dvc`` process that runs it (an
  ancestor of the command), so the claim lasts from stage to stage until ``dvc`` exits.
- A command run by hand claims nothing (runs of one project by hand may go side by side; each run's
  directory has its own lock, ``convbench._io.one_writer``), but is refused while an engine holds
  the project.

A claim whose process is gone (its pid ended, or was reused by another process) is stale and is
taken over; anything else is refused, naming the holder. Only directories with a ``.dvc``
directory (a project) are guarded, as with DVC's own lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TOKEN_VARIABLE = "CONVBENCH_ENGINE_TOKEN"
RECORD_NAME = "convbench-engine.json"


class EngineBusyError(RuntimeError):
    """Another engine, or another command, runs in this project."""


def _tmp_dir(root: str | os.PathLike[str]) -> Path | None:
    dvc_dir = Path(root) / ".dvc"
    if not dvc_dir.is_dir():
        return None
    (dvc_dir / "tmp").mkdir(exist_ok=True)
    return dvc_dir / "tmp"


def _start_ticks(pid: int) -> str | None:
    """The process's start time since boot (/proc/<pid>/stat field 22): with the pid, it names one
    process, not whichever later reuses the pid. None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a killed process not yet reaped is gone


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    parent = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parent or None


def _is_dvc(argv: list[str]) -> bool:
    """``dvc ...``, or a Python interpreter running DVC's script or module."""
    words = argv[:3]
    return any(os.path.basename(word) == "dvc" for word in words) or words[1:3] == ["-m", "dvc"]


def dvc_ancestor(pid: int | None = None) -> int | None:
    """The ``dvc`` process this process runs under (a stage's command: dvc, then its shell), if any."""
    current = _parent(pid or os.getpid())
    while current and current > 1:
        if _is_dvc(_command_line(current)):
            return current
        current = _parent(current)
    return None


def dvc_restore_hint(stage: str) -> str:
    """Under DVC, what to add to an error that stops a stage's command: DVC removed the stage's
    outputs before it ran the command, and ``dvc checkout`` brings them back from its cache."""
    if dvc_ancestor() is None:
        return ""
    return (f"; DVC removed the outputs of the stage {stage} before running this command: once the "
            f"study is fixed, 'dvc checkout {stage}' brings them back from DVC's cache without retraining")


def _ancestors(pid: int | None = None) -> set[int]:
    """This process and the processes it runs under."""
    found, current = set(), pid or os.getpid()
    while current and current > 1 and current not in found:
        found.add(current)
        current = _parent(current)
    return found


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # a process elsewhere (a cluster node) cannot be looked at: assume it runs
    pid = record.get("pid")
    return isinstance(pid, int) and _start_ticks(pid) == record.get("start")


def describe(record: dict[str, Any]) -> str:
    """"DVC (pid 123: dvc repro, since 2026-12-01 23:50:02)"."""
    return (f"{record.get('engine', 'another process')} (pid {record.get('pid')}: "
            f"{record.get('command') or '?'}, since {record.get('since', '?')}"
            f"{'' if record.get('host') == socket.gethostname() else ' on ' + str(record.get('host'))})")


@contextlib.contextmanager
def _record_file(tmp: Path) -> Iterator[Path]:
    """The record, with a lock on it so two starters do not both find it free."""
    with open(tmp / "convbench-engine.lock", "a") as mutex:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        try:
            yield tmp / RECORD_NAME
        finally:
            fcntl.flock(mutex, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none, or half-written by a killed process: no claim
    return record if isinstance(record, dict) else None


def current_holder(root: str | os.PathLike[str] = ".") -> dict[str, Any] | None:
    """The live claim on the project, if any."""
    tmp = _tmp_dir(root)
    if tmp is None:
        return None
    record = _read(tmp / RECORD_NAME)
    return record if record is not None and _alive(record) else None


def _claim(path: Path, engine: str, pid: int) -> dict[str, Any]:
    record = {"engine": engine, "pid": pid, "start": _start_ticks(pid), "host": socket.gethostname(),
              "command": " ".join(_command_line(pid))[:300], "token": secrets.token_hex(8),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    from convbench._io import write_json_atomic

    write_json_atomic(path, record)  # a reader never sees half a record
    return record


def _refusal(holder: dict[str, Any], who: str, path: Path) -> EngineBusyError:
    elsewhere = ("" if holder.get("host") == socket.gethostname()
                 else f"; if it no longer runs there, delete {path}")
    return EngineBusyError(
        f"{describe(holder)} is running in this project ({path}): {who} would delete or overwrite "
        f"files under it; wait for it to finish (or stop it) and run again{elsewhere}"
    )


def claim_for_snakemake(root: str | os.PathLike[str] = ".") -> bool:
    """Snakemake's ``onstart``: claim the project for this Snakemake process, and give its jobs the
    token. False where there is no project to guard; EngineBusyError while another engine runs."""
    tmp = _tmp_dir(root)
    if tmp is None:
        return False
    with _record_file(tmp) as path:
        holder = _read(path)
        if holder is not None and _alive(holder) and holder.get("pid") != os.getpid():
            raise _refusal(holder, "this Snakemake run", path)
        record = _claim(path, "Snakemake", os.getpid())
    os.environ[TOKEN_VARIABLE] = record["token"]
    return True


def release(root: str | os.PathLike[str] = ".") -> None:
    """Give up this process's claim (Snakemake's ``onsuccess``/``onerror``; a hand command's end)."""
    tmp = _tmp_dir(root)
    if tmp is None:
        return
    with _record_file(tmp) as path:
        record = _read(path)
        if record is not None and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def engine_guard(command: str, root: str | os.PathLike[str] = ".") -> Iterator[None]:
    """Around a writing ``convbench`` command: pass as a job of the engine that holds the project,
    else refuse naming the holder while another engine holds it; under DVC claim the project for
    the ``dvc`` process this runs under; by hand, claim nothing."""
    tmp = _tmp_dir(root)
    if tmp is None:
        yield
        return
    with _record_file(tmp) as path:
        holder = _read(path)
        token = os.environ.get(TOKEN_VARIABLE)
        if holder is not None and token and holder.get("token") == token:
            pass  # a job of the engine that holds the project
        elif holder is not None and _alive(holder) and not (
                holder.get("host") == socket.gethostname() and holder.get("pid") in _ancestors()):
            raise _refusal(holder, f"convbench {command}", path)  # not a job of the holder's
        elif (dvc := dvc_ancestor()) is not None:
            if holder is None or holder.get("pid") != dvc:
                _claim(path, "DVC", dvc)
    yield


def record_in_dvc(study_file: str | os.PathLike[str], smoke: int, targets: set[str],
                  root: str | os.PathLike[str] = ".") -> bool:
    """Snakemake's ``onsuccess``: record a finished run of params.yaml's study in dvc.lock
    (``dvc commit --force``), as if DVC had run it.

    ``dvc exp run`` begins by resetting every output to what dvc.lock records (a forced checkout):
    results DVC was never told of are deleted there, before any stage (even the study's check)
    runs. Only a run of the study dvc.yaml describes (params.yaml, its own smoke setting) and of
    the whole pipeline (the default target, ``all``) is recorded: anything else would record
    outputs DVC's stages do not describe, or stale ones as current. True when recorded.
    """
    import subprocess

    import yaml

    from convbench._io import release_dvc_lock

    root = Path(root)
    if not (root / ".dvc").is_dir() or Path(study_file) != Path("params.yaml"):
        return False
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    if int(params.get("smoke") or 0) != int(smoke or 0) or targets != {"all"}:
        return False
    release_dvc_lock()  # dvc commit takes it; this run's claim on the project still stands
    proc = subprocess.run(["dvc", "commit", "--force", "--quiet"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"convbench: warning: could not record the results in dvc.lock ({proc.stderr.strip()[-500:]}); "
              "run 'dvc commit --force' before 'dvc exp run', which would delete results it does not know of",
              flush=True)
        return False
    print("convbench: recorded the finished study in dvc.lock (dvc commit): DVC sees it as up to date", flush=True)
    return True
