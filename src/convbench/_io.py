"""Helpers every stage shares: atomic writes, checksums, byte-stable ``.npz`` files, CLI errors.

Pipeline tools (Snakemake, DVC) decide what to rerun from what is on disk, so a stage must never
leave a half-written output under its final name: a crash or Ctrl-C mid-write would otherwise look
like a finished result. Everything here writes to a hidden temporary file next to the target and
renames it into place only when the content is complete.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import secrets
import sys
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

CHUNK_BYTES = 1 << 20

# Zip entries carry a timestamp and the creating OS; fixing both makes the file's bytes depend on
# the arrays alone (np.savez stamps the current time, so its output hashes differently every run).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ZIP_UNIX = 3


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], object]) -> Path:
    """Create ``path`` with the bytes ``writer(file)`` writes, all or nothing.

    ``writer`` gets a binary file opened on a temporary name in the same directory (so the final
    rename stays on one file system and is atomic). If it raises anything, KeyboardInterrupt
    included, the temporary file is removed and an existing ``path`` is left untouched; a writer
    that validates what it wrote (a checksum, say) can therefore refuse by raising. Missing parent
    directories are created (DVC, unlike Snakemake, does not make them for a stage's outputs).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide permissions, as for any ordinary new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    recorder = None
    try:
        with os.fdopen(fd, "wb") as file:
            recorder = _WriteErrors(file)
            writer(recorder)  # type: ignore[arg-type]
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = recorder.error if recorder is not None and recorder.error is not None else exc
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"{path}: disk full ({cause.strerror}) while writing it; nothing was lost (an earlier "
                f"{path.name}, if any, is untouched); free some space on {path.parent} and run again"
            ) from None
        raise
    return path


class DiskFullError(OSError):
    """An output could not be written for lack of space; the message names the file."""


class _WriteErrors:
    """A file that remembers the OSError its ``write`` raised: torch.save reports a failed write
    as a RuntimeError ("unexpected pos ..."), which says neither the file nor "disk full"."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output ``path`` that ``atomic_write`` could not create: its
    directory (made if missing) must be writable. An existing read-only file is fine: it is
    replaced by a rename, not written into (DVC's cache links are read-only)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"{path}: cannot create its directory {path.parent}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: its directory {path.parent} is not writable by this user, "
                              "so the result could not be saved; fix the permissions and run again")
    return path


_HELD_LOCKS: list[Any] = []  # locks this process holds until it exits
RUN_LOCK = ".run.lock"  # in a run's directory while a process writes it
_WRITING: dict[str, int] = {}  # directories this process holds one_writer on, and how deep


class DirectoryBusyError(OSError):
    """Another process is writing the same run directory; the message names it."""


@contextlib.contextmanager
def one_writer(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``directory`` (a run's) for this process alone while it writes there: a second process
    (a hand ``convbench run`` next to the pipeline's) is refused at once, naming the first, instead
    of deleting files under it. A lock on ``directory/.run.lock`` (flock: freed by the kernel when
    its holder dies, however); re-entrant within one process; the file is removed on release."""
    key = os.path.abspath(directory)
    if key in _WRITING:
        _WRITING[key] += 1
        try:
            yield
        finally:
            _WRITING[key] -= 1
        return
    try:
        path = check_writable(Path(key) / RUN_LOCK)  # makes the directory
    except PermissionError:  # nobody writes there: the caller refuses it, naming its own output
        yield
        return
    while True:
        try:
            fd = lock_file(path)
        except LockHeldError as held:
            raise DirectoryBusyError(
                f"{directory}: {held.holder} is writing this run (it holds {path}); "
                "wait for it to finish, or stop it, and run again"
            ) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # its holder removed it as we opened it: lock the new one
    write_holder(fd)
    _WRITING[key] = 1
    try:
        yield
    finally:
        del _WRITING[key]
        path.unlink(missing_ok=True)
        os.close(fd)


class LockHeldError(OSError):
    """Another process holds a lock file; ``holder`` describes it (pid and command)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def lock_file(path: Path) -> int:
    """An exclusive ``flock`` on ``path`` (created if need be), freed by the kernel when this
    process ends however it ends; LockHeldError, naming the holder, when another process has it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise LockHeldError(_describe_process(holder)) from None
    return fd


def write_holder(fd: int) -> None:
    """Write this process's pid into a lock file it holds (what a refused process names)."""
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


def _describe_process(pid: str) -> str:
    """"process 1234 (convbench run --study ...)" where /proc tells the command, else less."""
    if not pid.isdigit():
        return "another process"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"process {pid}" + (f" ({command})" if command else "")


def hold_dvc_lock(root: str | os.PathLike[str] = ".") -> bool:
    """Take DVC's repository lock (``.dvc/tmp/lock``, the one ``dvc repro`` holds while it runs)
    and keep it until this process exits, so Snakemake and DVC never run at once in one project:
    whichever starts second is refused (DVC says "Unable to acquire lock"). False where there is
    no DVC project or DVC is not installed; a RuntimeError naming the file when DVC is running."""
    dvc_dir = Path(root) / ".dvc"
    if not dvc_dir.is_dir():
        return False
    try:
        import zc.lockfile  # DVC's own lock library
    except ImportError:
        return False
    (dvc_dir / "tmp").mkdir(exist_ok=True)
    try:
        _HELD_LOCKS.append(zc.lockfile.LockFile(str(dvc_dir / "tmp" / "lock")))
    except zc.lockfile.LockError:
        raise RuntimeError(
            f"DVC is running in this project (it holds {dvc_dir / 'tmp' / 'lock'}): the two engines "
            "would overwrite each other's files; wait for it to finish (or stop it) and run again"
        ) from None
    return True


def release_dvc_lock() -> None:
    """Let go of the DVC locks :func:`hold_dvc_lock` took (so that a ``dvc`` command this process
    runs can take them)."""
    while _HELD_LOCKS:
        _HELD_LOCKS.pop().close()


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files that writers of ``path`` killed mid-write left behind.

    A temporary file's name carries its writer's pid; one whose writer no longer runs on this
    machine is a leftover (a kill -9 skips the clean-up). Files of live writers are left alone.
    """
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        pid = candidate.name[len(path.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON (newline-terminated) with :func:`atomic_write`."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 with :func:`atomic_write`."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda file: file.write(data))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks so large files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_npz_deterministic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` whose bytes depend only on the arrays.

    Readable with ``np.load`` like any ``.npz``. Same arrays in, identical bytes out: entries are
    sorted by name, stored uncompressed, stamped 1980-01-01 and marked as made on Unix, so the
    file's hash (DVC's, and the data checksum every result records) is stable across runs.
    Object arrays are refused, because loading them would need pickle.
    """

    def writer(file: IO[bytes]) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in sorted(arrays):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                info.create_system = _ZIP_UNIX
                info.external_attr = 0o644 << 16
                # force_zip64 as np.savez does: entries over 2 GiB need it, and it must be chosen
                # before the size is known.
                with archive.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(
                        entry, np.asanyarray(arrays[name]), allow_pickle=False
                    )

    return atomic_write(path, writer)


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts such as ``--threads``: a bad one is a usage error (exit 2)
    naming the option, not an error from deep inside torch."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def note_jobs_over_cores(jobs: int, prog: str) -> bool:
    """Say on stderr when ``--jobs`` asks for more jobs at once than this machine has CPU cores:
    they would share cores, each slower, and timings would mislead. True when it said so."""
    cores = os.cpu_count() or 1
    if jobs <= cores:
        return False
    print(f"{prog}: note: --jobs {jobs} is more than this machine's {cores} CPU core(s): the jobs "
          f"will share them and each run slower; --jobs {cores} finishes as soon", file=sys.stderr, flush=True)
    return True


def run_cli(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    action: Callable[[argparse.Namespace], None],
    expected: tuple[type[BaseException], ...],
) -> int:
    """Parse ``argv`` and run ``action``, turning the errors a user can cause into exit codes.

    A stage's CLI is called by Snakemake, DVC and people alike; all of them want one readable line
    (``<prog>: error: <what>``, argparse's own format) and exit code 1 for a missing file or a bad
    checksum, not a traceback. Usage errors keep argparse's exit code 2. Anything outside
    ``expected`` is a bug and keeps its traceback.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse has already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        action(args)
    except SystemExit as exc:  # parser.error() from a check across options, made in the action
        return exc.code if isinstance(exc.code, int) else 2
    except expected as exc:
        message = str(exc).replace("\n", " ") or type(exc).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    return 0
