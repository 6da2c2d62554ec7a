"""A study's expected results: what every run holds, what made it, and how to read both back.

A bundled study may come with expected results for one or more machines,
``conf/expected/<study>/<cpu type>.json`` (and, from before, ``conf/expected/<study>.json``). Each
holds, per run, **what the run holds** (the sha256 of its weights and of its metric numbers, and the
accuracies themselves) and, beside it, **what made it** (the CPU type, torch's thread count, the
training code's version, the packages): the first decides whether two runs are the same result, the
second says why they may not be. ``convbench compare`` (:mod:`convbench.compare`) holds a user's
runs against each file.

A run's weights are the ``model`` and ``best_model`` state dicts, hashed by
``convbench.checkpoint.weights_sha256``; its metric numbers are its ``metrics.json`` less the fields
of :data:`RECORD_KEYS`, which record the machine, the code and the file, not the result. So a
refactor or a report edit that leaves training's arithmetic alone leaves a rerun "identical", and
the record names what changed beside it.

The expected files live outside the package: writing one must not change the code version results
record.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from convbench._io import atomic_write, sha256_file
from convbench.study import Study

FORMAT = 2  # 1: the sha256 of each run's model.pt and metrics.json, nothing else
RUN_FILES = ("model.pt", "metrics.json")
# What a metrics.json records about how it was made, not what it holds.
RECORD_KEYS = ("code_version", "packages", "cpu", "device", "threads", "model_sha256", "weights_sha256")
METRICS = ("val_acc", "test_acc")
EXPECTED_DIR = Path("conf/expected")


class ExpectedError(ValueError):
    """Expected results or a study's results that cannot be read or compared; says which file."""


# ------------------------------------------------------------------------------- one run


def canonical_sha256(value: Any) -> str:
    """sha256 of a JSON value written canonically (sorted keys, no spaces): equal values, equal hashes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_json(path: Path, what: str) -> Any:
    """``path``'s JSON; an error names the file and what it should have been."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExpectedError(f"{path}: missing; expected {what}") from None
    except IsADirectoryError:
        raise ExpectedError(f"{path}: a directory; expected {what}") from None
    except OSError as err:
        raise ExpectedError(f"{path}: cannot be read ({err.strerror or err}); expected {what}") from None
    except UnicodeDecodeError as err:
        raise ExpectedError(f"{path}: not a text file ({err.reason}); expected {what}") from None
    except json.JSONDecodeError as err:
        raise ExpectedError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); expected {what}") from None


def _accuracy(metrics: dict[str, Any], part: str, path: Path) -> tuple[float, int]:
    scored = metrics.get(part)
    if not (isinstance(scored, dict) and isinstance(scored.get("accuracy"), (int, float))):
        raise ExpectedError(f"{path}: no {part}.accuracy; expected a metrics.json written by convbench "
                            "evaluate; score the run again")
    return float(scored["accuracy"]), int(scored.get("n") or 0)


def _weights(metrics: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The sha256 of the run's weights: as its metrics.json records them, or, for results from
    before they were recorded there, from its model.pt (which loading verifies)."""
    recorded = metrics.get("weights_sha256")
    if isinstance(recorded, dict):
        return recorded
    from convbench.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(run_dir / "model.pt")["weights_sha256"]
    except CheckpointError as err:
        raise ExpectedError(str(err)) from None


def read_run(run_dir: Path) -> dict[str, Any]:
    """What a finished run holds (its content hashes and accuracies), the files' sha256, whether its
    model.pt is the one its metrics.json scored, and what made it."""
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path, "a run's metrics written by convbench evaluate")
    if not isinstance(metrics, dict):
        raise ExpectedError(f"{metrics_path}: a JSON {type(metrics).__name__}; expected an object "
                            "written by convbench evaluate; score the run again")
    val, val_n = _accuracy(metrics, "val", metrics_path)
    test, test_n = _accuracy(metrics, "test", metrics_path)
    model_sha256 = sha256_file(run_dir / "model.pt")
    held = {key: value for key, value in metrics.items() if key not in RECORD_KEYS}
    return {
        "weights": canonical_sha256(_weights(metrics, run_dir)),
        "metrics": canonical_sha256(held),
        "val_acc": val,
        "test_acc": test,
        "val_images": val_n,
        "test_images": test_n,
        "files": {"model.pt": model_sha256, "metrics.json": sha256_file(metrics_path)},
        # None: a metrics.json from before it named its model
        "scored_model": None if metrics.get("model_sha256") is None else metrics["model_sha256"] == model_sha256,
        "made_with": {key: metrics.get(key) for key in ("cpu", "threads", "code_version", "packages")},
    }


def collect(study: Study) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The study's runs that exist (``experiment/run`` -> :func:`read_run`) and those missing."""
    runs: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for experiment, run in study.all_runs():
        run_dir = Path(study.run_dir(experiment, run))
        key = f"{experiment}/{run.name}"
        if all((run_dir / name).is_file() for name in RUN_FILES):
            runs[key] = read_run(run_dir)
        else:
            missing.append(key)
    return runs, missing


# ---------------------------------------------------------------------------- the files


def cpu_slug(cpu: dict[str, Any] | None, threads: Any) -> str:
    """A file name for one CPU type and thread count: ``authenticamd-family25-model1-avx2-1thread``."""
    if not isinstance(cpu, dict):
        return "unknown-cpu"
    if cpu.get("vendor"):
        name = f"{cpu['vendor']}-family{cpu.get('family')}-model{cpu.get('model_number')}"
    else:  # recorded before vendor, family and model were
        name = str(cpu.get("model", "unknown"))
    text = f"{name}-{cpu.get('capability', '')}-{threads}thread"
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_type(cpu: dict[str, Any] | None) -> str:
    """A CPU type in words: model, vendor, family and model number, the instruction sets of torch's
    and oneDNN's kernels."""
    if not isinstance(cpu, dict):
        return "not recorded"
    generation = (f"{cpu['vendor']} family {cpu.get('family')} model {cpu.get('model_number')}, "
                  if cpu.get("vendor") else "")
    onednn = f", oneDNN {cpu['onednn_isa']}" if cpu.get("onednn_isa") else ""
    return (f"{cpu.get('model', '?')} ({generation}{cpu.get('architecture', '?')}, torch capability "
            f"{cpu.get('capability', '?')}{onednn})")


def default_paths(study: Study, root: Path = Path(".")) -> list[Path]:
    """Every expected file of a study: ``conf/expected/<study>/*.json``, then the older single file."""
    directory = root / EXPECTED_DIR / study.name
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    legacy = root / EXPECTED_DIR / f"{study.name}.json"
    return paths + ([legacy] if legacy.is_file() else [])


def _shape_error(path: Path, problem: str) -> ExpectedError:
    return ExpectedError(f"{path}: {problem}; expected the expected results written by "
                         "'convbench compare --write'")


def load_expected(path: Path, study: Study) -> dict[str, Any]:
    """An expected file, checked for its shape and its study; errors name the file."""
    document = read_json(path, "the expected results written by 'convbench compare --write'")
    if not isinstance(document, dict):
        raise _shape_error(path, f"a JSON {type(document).__name__}, not an object")
    for key, kind in (("study", str), ("runs", dict), ("verdicts", dict), ("made_with", list)):
        if not isinstance(document.get(key), kind):
            raise _shape_error(path, f"no {key!r} ({kind.__name__})")
    if document["study"] != study.name:
        raise ExpectedError(f"{path}: expected results of the study {document['study']!r}, not "
                            f"{study.name!r}; give the study's own with --expected")
    version = document.get("format", 1)
    if version not in (1, FORMAT):
        raise _shape_error(path, f"format {version!r}, which this version does not read (it reads 1 and {FORMAT})")
    wanted = ("weights", "metrics", *METRICS) if version >= 2 else RUN_FILES
    for key, entry in document["runs"].items():
        if not isinstance(entry, dict) or any(name not in entry for name in wanted):
            raise _shape_error(path, f"run {key!r} lacks {', '.join(wanted)}")
        numbers = [entry[m] for m in METRICS] if version >= 2 else []
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1 for v in numbers):
            raise _shape_error(path, f"run {key!r} has an accuracy that is not a number from 0 to 1")
    if any(not isinstance(made, dict) for made in document["made_with"]):
        raise _shape_error(path, "an entry of 'made_with' that is not an object")
    if any(not isinstance(verdict, dict) for verdict in document["verdicts"].values()):
        raise _shape_error(path, "a verdict that is not an object (metric -> verdict)")
    document["format"] = version
    document["path"] = path
    return document


def expected_document(study: Study, runs: dict[str, dict[str, Any]], verdicts: dict[str, Any]) -> dict[str, Any]:
    """The expected file's content for a complete study (format 2)."""
    made_with: dict[str, dict[str, Any]] = {}
    for run in runs.values():
        made_with.setdefault(canonical_sha256(run["made_with"]), run["made_with"])
    return {
        "format": FORMAT,
        "study": study.name,
        "made_with": list(made_with.values()),
        "runs": {key: {name: run[name] for name in ("weights", "metrics", *METRICS, "val_images",
                                                     "test_images", "files")}
                 for key, run in sorted(runs.items())},
        "verdicts": verdicts,
    }


def write_expected(path: Path, document: dict[str, Any]) -> None:
    """Atomically: a failed write leaves the previous file as it was."""
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))
