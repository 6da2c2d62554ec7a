"""Which code made a result, and which code each pipeline stage runs.

``code_version(files)`` names the code behind a result: the last git commit that changed those
files and whether they differ from it (where the package lives in a git work tree), and always a
SHA-256 of each file and of them all, so a result made from uncommitted or pip-installed code is
still named exactly. A training result records ``training_code_version(arch)``: the files
``convbench run`` executes for that network, the set both engines track, so an edit of the report,
the docs or a module training never imports leaves every rerun's ``model.pt`` and ``metrics.json``
byte-identical. The whole package's version (``code_version()`` without files) is recorded beside
the run's timings, in ``perf.json``. It never names the repository's HEAD: committing dvc.lock, the
README or a study file changes no byte of a rerun's results.

``stage_sources(stage, arch)`` lists the files a stage's ``convbench <stage>`` command executes:
the modules its entry module imports, transitively, within the package (found by reading the
``import`` statements), the data files of those packages, and, for ``run`` (training and
evaluation), only the one network file that defines ``arch``: every other network file is left
out, so editing ``models/lenet.py`` reruns the LeNet experiments and nothing else. Snakemake takes these files as inputs; dvc.yaml lists the same files (a test
checks that the two agree), with one git-tracked link per network under ``workflow/networks/``
because DVC cannot look an experiment's network up by name.

A file counts by its bytes (DVC) or its modification time (Snakemake): a comment-only edit reruns
what depends on the file, as any other edit does.

Both engines' lists name the checkout's ``src/``, so they are right only if the code that runs is
the checkout's: ``check_own_checkout()`` (called by every ``convbench`` command and by the Snakefile)
stops a command run from a checkout whose importable ``convbench`` is another one (an editable
install of a second clone, a wheel), unless ``CONVBENCH_ALLOW_FOREIGN_INSTALL=1`` says it is meant.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name
MODELS = f"{PACKAGE}.models"
SOURCE_SUFFIXES = (".py", ".yaml", ".json")
# The pipeline's stages: commands of convbench.cli, whose table names the module each one runs.
STAGES = ("check", "download", "prepare", "split", "run", "aggregate", "report")
NETWORK_LINKS = "workflow/networks"  # <arch> -> ../../src/convbench/models/<file>.py, for dvc.yaml
FOREIGN_INSTALL_ENV = "CONVBENCH_ALLOW_FOREIGN_INSTALL"
PROJECT_PREFIX = "project:"  # a code version's name for a file of the user's project


class ForeignInstallError(RuntimeError):
    """A command run from a checkout imports another checkout's or an installed ``convbench``."""


def check_own_checkout(checkout: Path | None = None) -> None:
    """Refuse to run from a checkout (a directory with ``src/convbench``) unless the importable
    ``convbench`` is that checkout's own code.

    Otherwise Snakemake would track the installed files, DVC the checkout's, and an edit of the
    checkout would rerun nothing that runs it. ``CONVBENCH_ALLOW_FOREIGN_INSTALL=1`` allows it, for
    a package installed on purpose (a wheel). Cheap: a few ``stat`` calls, no torch.
    """
    checkout = Path.cwd() if checkout is None else Path(checkout)
    own = checkout / "src" / PACKAGE
    if not (own / "__init__.py").is_file() or os.environ.get(FOREIGN_INSTALL_ENV) == "1":
        return
    if own.resolve() == PACKAGE_DIR:
        return
    raise ForeignInstallError(
        f"this checkout's code is {own.resolve()}, but the convbench that Python imports is "
        f"{PACKAGE_DIR}: the pipeline would run and record that code, not this checkout's. Run "
        f"'pip install -e .' in {checkout.resolve()} (or put its src/ first on PYTHONPATH), or set "
        f"{FOREIGN_INSTALL_ENV}=1 to run the installed package on purpose"
    )


def source_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every source file of the package, sorted: what ``source_sha256`` hashes."""
    return sorted(
        path for path in package_dir.rglob("*")
        if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts and path.is_file()
    )


def source_sha256(package_dir: Path = PACKAGE_DIR, files: list[Path] | None = None) -> str:
    """SHA-256 over source files (default: all the package's): their paths (relative to the
    package) and bytes."""
    digest = hashlib.sha256()
    for path in sorted(source_files(package_dir) if files is None else files):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _git(package_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(package_dir: Path = PACKAGE_DIR, files: list[Path] | None = None,
                 scope: str | None = None) -> dict[str, object]:
    """``{"source_commit": sha or None, "dirty": bool or None, "source_sha256": ...}`` for the
    package, or for ``files`` (then also ``scope``, what they are, and ``files``, each one's
    sha256, so that two versions can name the files they differ in).

    ``source_commit`` is the last commit that changed those files (or the package's, ``src/convbench``),
    not HEAD; ``dirty`` says whether they differ from it, untracked ones included. Edits and
    commits elsewhere (params.yaml, dvc.lock, the README, other modules) change neither.
    """
    own = None if files is None else sorted(p for p in files if p.is_relative_to(package_dir))
    project = [] if files is None else sorted(p for p in files if not p.is_relative_to(package_dir))
    paths = ["."] if own is None else [path.relative_to(package_dir).as_posix() for path in own]
    commit = _git(package_dir, "log", "-1", "--format=%H", "--", *paths) or None
    status = _git(package_dir, "status", "--porcelain", "--", *paths) if commit else None
    version: dict[str, object] = {
        "source_commit": commit,
        "dirty": None if status is None else bool(status),
        "source_sha256": source_sha256(package_dir, own),
    }
    if files is not None:
        version["scope"] = scope
        version["files"] = {path: hashlib.sha256((package_dir / path).read_bytes()).hexdigest()
                            for path in paths}
        for path in project:  # a network of the user's project: named as the study names it
            name = f"{PROJECT_PREFIX}{os.path.relpath(path).replace(os.sep, '/')}"
            version["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return version


def training_code_version(arch: str) -> dict[str, object]:
    """The code version a training result records: the files ``convbench run`` executes for
    ``arch`` (:func:`stage_sources`), the ones Snakemake and DVC rerun its experiments for."""
    return code_version(files=stage_sources("run", arch), scope=f"convbench run, network {arch}")


def changed_files(a: object, b: object) -> list[str] | None:
    """The files two recorded code versions differ in (added, removed or edited), or None when
    either does not list its files (the whole package's version, or one from older results)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None
    files_a, files_b = a.get("files"), b.get("files")
    if not (isinstance(files_a, dict) and isinstance(files_b, dict)):
        return None
    return sorted(path.removeprefix(PROJECT_PREFIX) if path.startswith(PROJECT_PREFIX) else f"src/{PACKAGE}/{path}"
                  for path in files_a.keys() | files_b.keys() if files_a.get(path) != files_b.get(path))


def commit_text(version: dict[str, object]) -> str:
    """``git 1a2b3c4d5e6f`` (``with uncommitted changes``), or ``no git commit``."""
    commit = version.get("source_commit") or version.get("commit")  # "commit": HEAD, in older results
    if not commit:
        return "no git commit"
    return f"git {str(commit)[:12]}{' with uncommitted changes' if version.get('dirty') else ''}"


def describe(version: object) -> str:
    """One line for people: ``git 1a2b3c4d5e6f with uncommitted changes, source sha256 9f8e7d6c5b4a``."""
    if not isinstance(version, dict):  # results written before code versions named the code
        return str(version)
    parts = [] if commit_text(version) == "no git commit" else [commit_text(version)]
    parts.append(f"source sha256 {str(version.get('source_sha256'))[:12]}")
    if version.get("scope"):
        parts.append(f"of {version['scope']}")
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
    """The zoo's networks: name -> the models module that defines its builder (from the catalogue)."""
    from convbench.networks import zoo

    return {name: network.module for name, network in zoo().items()}


def network_file(arch: str) -> Path:
    """The file that defines network ``arch``: a zoo module, or a file of the project (imported by
    its study, convbench.user_networks)."""
    from convbench.networks import project_file

    file = project_file(arch)
    if file is not None:
        return Path(file).resolve()
    try:
        return _module_file(network_files()[arch])  # type: ignore[return-value]
    except KeyError:
        raise ValueError(f"no network {arch!r}; networks: {', '.join(sorted(network_files()))}") from None


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
    from convbench.commands import COMMANDS

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    files = set(_closure(COMMANDS[stage].module))
    if arch is not None:
        files.add(network_file(arch))
    return sorted(files)
