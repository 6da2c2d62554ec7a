"""Which code made a result, and which code each pipeline stage runs.

``code_version()`` names the code behind a result: the git commit and whether the package's sources
differ from it (where the package lives in a git work tree), and always a SHA-256 of the package's
source files, so a result made from uncommitted or pip-installed code is still named exactly.

``stage_sources(stage, arch)`` lists the files a stage's ``convbench <stage>`` command executes:
the modules its entry module imports, transitively, within the package (found by reading the
``import`` statements), the data files of those packages, and, for ``run`` (training and
evaluation), only the one network file that defines ``arch``: every other network file is left
out, so editing ``models/lenet.py`` reruns the LeNet experiments and nothing else. Snakemake takes these files as inputs; dvc.yaml lists the same files (a test
checks that the two agree), with one git-tracked link per network under ``workflow/networks/``
because DVC cannot look an experiment's network up by name.

A file counts by its bytes (DVC) or its modification time (Snakemake): a comment-only edit reruns
what depends on the file, as any other edit does.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import platform
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name
MODELS = f"{PACKAGE}.models"
SOURCE_SUFFIXES = (".py", ".yaml", ".json")
# The pipeline's stages: commands of convbench.cli, whose table names the module each one runs.
STAGES = ("download", "prepare", "split", "run", "aggregate", "report")
NETWORK_LINKS = "workflow/networks"  # <arch> -> ../../src/convbench/models/<file>.py, for dvc.yaml


def source_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every source file of the package, sorted: what ``source_sha256`` hashes."""
    return sorted(
        path for path in package_dir.rglob("*")
        if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts and path.is_file()
    )


def source_sha256(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the package's source files: their paths (relative) and bytes."""
    digest = hashlib.sha256()
    for path in source_files(package_dir):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, object]:
    """``{"commit": sha or None, "dirty": bool or None, "source_sha256": ...}``.

    ``dirty`` says whether the package's own files (``src/convbench``) differ from the commit,
    untracked ones included; edits elsewhere (params.yaml, dvc.lock) do not make the code dirty.
    """
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", ".") if commit else None
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "source_sha256": source_sha256(),
    }


def describe(version: object) -> str:
    """One line for people: ``git 1a2b3c4d5e6f (uncommitted changes), source 9f8e7d6c5b4a``."""
    if not isinstance(version, dict):  # results written before code versions named the code
        return str(version)
    parts = []
    if version.get("commit"):
        dirty = " with uncommitted changes" if version.get("dirty") else ""
        parts.append(f"git {str(version['commit'])[:12]}{dirty}")
    parts.append(f"source sha256 {str(version.get('source_sha256'))[:12]}")
    return ", ".join(parts)


def package_versions() -> dict[str, str]:
    """Versions of what decides the numbers (read from metadata: importing torchvision is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    from convbench import __version__

    versions = {"convbench": __version__, "python": platform.python_version()}
    for package in ("torch", "torchvision", "numpy", "scikit-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


# ------------------------------------------------------------------------- what each stage runs


def _module_file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE_DIR / "__init__.py"
    relative = Path(*parts)
    for candidate in (PACKAGE_DIR / relative / "__init__.py", PACKAGE_DIR / relative.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == PACKAGE and _module_file(name))
    return found


def network_files() -> dict[str, str]:
    """Network name -> the models module that defines its builder (from the catalogue)."""
    from convbench.networks import catalog

    return {name: network.module for name, network in catalog().items()}


@functools.lru_cache(maxsize=None)
def _closure(module: str) -> frozenset[Path]:
    networks = set(network_files().values())
    seen: set[str] = set()
    todo = [f"{PACKAGE}.cli", module]
    while todo:
        name = todo.pop()
        if name in seen or name in networks:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        path = _module_file(name)
        if path is not None:
            todo += sorted(_imports(path))
    files = {p for p in map(_module_file, seen) if p is not None}
    for package_init in [p for p in files if p.name == "__init__.py"]:
        files.update(p for p in package_init.parent.iterdir()
                     if p.suffix in (".yaml", ".json") and p.is_file())  # a package's data files
    return frozenset(files)


def stage_sources(stage: str, arch: str | None = None) -> list[Path]:
    """The package files ``convbench <stage>`` runs, sorted; ``arch`` adds its network's file."""
    from convbench.cli import COMMANDS

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    files = set(_closure(COMMANDS[stage].module))
    if arch is not None:
        try:
            files.add(_module_file(network_files()[arch]))  # type: ignore[arg-type]
        except KeyError:
            raise ValueError(f"no network {arch!r}; networks: {', '.join(sorted(network_files()))}") from None
    return sorted(files)
