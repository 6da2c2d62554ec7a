"""The files a training run leaves: its checkpoint format, verified on every load, and history.csv.

A checkpoint describes itself (weights, optimizer, epoch, the resolved recipe, the data and split
ids, the code version) and carries the sha256 of its weights, so a corrupted file is refused
instead of scored. Training writes it; evaluation reads it without importing the training loop.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convbench._io import atomic_write

# 2: checkpoints carry the sha256 of their weights (``weights_sha256``), verified on every load.
CHECKPOINT_FORMAT = 2
WEIGHT_KEYS = ("model", "best_model")
# What loading reads from a checkpoint (checked on every load), and what evaluation reads from its
# "meta" (checked by evaluation: `train` used as a library may leave meta empty).
CHECKPOINT_KEYS = ("epoch", "completed", "model", "optimizer", "best_model", "best_epoch", "history", "meta")
META_KEYS = ("experiment", "arch", "knobs", "input_size", "recipe", "seed", "repeat", "fold",
             "train_seed", "data_sha256", "split_id", "in_channels", "num_classes", "classes",
             "dataset", "params", "macs", "code_version", "packages")
HISTORY_COLUMNS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "examples_per_s",
    "device",
)
# Wall-clock measurements differ from run to run; they live in history.csv (and perf.json), never
# in model.pt or metrics.json, which must be bit-identical when a job is rerun.
TIMING_COLUMNS = ("seconds", "examples_per_s", "device")


class CheckpointError(ValueError):
    """A checkpoint file is not one, is of another format, or its weights are corrupted."""


def _interned(value: Any) -> Any:
    """``value`` with every string interned. pickle memoizes by object identity, so without this
    the bytes depend on where equal strings came from: a resumed run's history and optimizer keys
    come from the unpickled checkpoint, and its model.pt would differ from an uninterrupted run's."""
    if type(value) is str:
        return sys.intern(value)
    if isinstance(value, dict):
        return type(value)((_interned(k), _interned(v)) for k, v in value.items())
    if type(value) is list:
        return [_interned(v) for v in value]
    return value


def weights_sha256(state: dict[str, torch.Tensor] | None) -> str | None:
    """sha256 over a state dict's names, dtypes, shapes and bytes (None for no state)."""
    if state is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically (a kill mid-write leaves the previous checkpoint intact), with the sha256
    of the weights, so that a corrupted file is refused on load instead of scored."""
    state = dict(state)
    state["weights_sha256"] = {key: weights_sha256(state.get(key)) for key in WEIGHT_KEYS}
    state = _interned(state)
    atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and verify its weights."""
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: not a convbench checkpoint of format {CHECKPOINT_FORMAT} (found format "
            f"{found!r}); train it again"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: a checkpoint without {', '.join(missing)}; expected one "
                              "written by convbench train; train it again")
    recorded = state.get("weights_sha256") or {}
    for key in WEIGHT_KEYS:
        got = weights_sha256(state.get(key))
        if got != recorded.get(key):
            raise CheckpointError(
                f"{path}: the {key!r} weights do not match the checksum written with them "
                f"(sha256 {str(got)[:12]}, recorded {str(recorded.get(key))[:12]}): the file is "
                "corrupted; train it again"
            )
    return state


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict on the CPU (what checkpoints store)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def optimizer_state_cpu(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    state = optimizer.state_dict()
    return {
        "state": {k: {n: (t.detach().cpu().clone() if torch.is_tensor(t) else t) for n, t in s.items()}
                  for k, s in state["state"].items()},
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, lambda file: file.write(buffer.getvalue().encode()))



# A run's settings that decide its numbers and that its study checks (convbench.consistency's
# RUN_SETTINGS), plus the weights evaluation scored.
RUN_SETTINGS = ("experiment", "arch", "knobs", "input_size", "recipe", "repeat", "fold", "seed",
                "train_seed", "threads", "weights")
_NOT_RECORDED = "<not recorded>"
REPLACE_HINT = "--replace"


class FinishedRunError(CheckpointError):
    """A hand-run command would replace a finished run with one of other settings."""


def run_settings(meta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The RUN_SETTINGS of a checkpoint's meta (or a metrics.json), with ``extra`` added."""
    merged = {**meta, **extra}
    return {key: merged[key] for key in RUN_SETTINGS if key in merged}


def finished_run(out_dir: Path, metrics: Path | None = None,
                 model: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The file that makes ``out_dir`` a finished run (its metrics.json, else its model.pt) and the
    settings it records; None when neither is there. One that cannot be read is refused naming it."""
    import json

    metrics = metrics or out_dir / "metrics.json"
    model = model or out_dir / "model.pt"
    if metrics.is_file():
        try:
            recorded = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FinishedRunError(f"{metrics}: cannot be read as a run's metrics ({err}); to replace the run "
                                   f"it belongs to, run again with {REPLACE_HINT}") from None
        if not isinstance(recorded, dict):
            raise FinishedRunError(f"{metrics}: expected a run's metrics (a JSON object); to replace it, run "
                                   f"again with {REPLACE_HINT}")
        return metrics, recorded
    if model.is_file():
        return model, run_settings(load_checkpoint(model).get("meta") or {})
    return None


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    out = []
    for key, want in wanted.items():
        have = found.get(key, _NOT_RECORDED)
        if key == "recipe" and isinstance(have, dict) and isinstance(want, dict):
            out += [f"recipe.{k} {have.get(k, _NOT_RECORDED)!r} -> {want.get(k, _NOT_RECORDED)!r}"
                    for k in sorted(set(have) | set(want)) if have.get(k, _NOT_RECORDED) != want.get(k, _NOT_RECORDED)]
        elif have != want:
            out.append(f"{key} {have!r} -> {want!r}")
    return out


def refuse_replacing(out_dir: Path, settings: dict[str, Any], command: str, *,
                     study_settings: dict[str, Any] | None = None, metrics: Path | None = None,
                     scored_model: Path | None = None) -> None:
    """Refuse, before any work, to replace the finished run in ``out_dir`` with one of other
    ``settings`` (a run by hand with another --threads, recipe, seed...): the study's aggregation
    would refuse it, and the finished run would be lost. A rerun of the same settings passes, and
    so does a run of exactly the study's settings (``study_settings``: the run its study expects in
    ``out_dir``), which is what Snakemake and DVC run. Evaluation names its ``metrics`` file and the
    ``scored_model``: metrics of another model than the one beside them are stale, not finished."""
    from convbench._io import sha256_file

    found = finished_run(out_dir, metrics, Path(os.devnull) if metrics is not None else None)
    if found is None:
        return
    source, recorded = found
    if (scored_model is not None and scored_model.parent == source.parent
            and recorded.get("model_sha256") not in (None, sha256_file(scored_model))):
        return
    recorded = run_settings(recorded)
    if study_settings is not None and not _differences(study_settings, settings):
        return
    changed = _differences(recorded, settings)
    if not changed:
        return
    why = ("" if study_settings is None else
           f"; its study's own run there has {', '.join(_differences(settings, study_settings))}")
    raise FinishedRunError(
        f"{out_dir}: holds a finished run ({source}) of other settings than this {command}'s "
        f"({'; '.join(changed)}){why}: it would be replaced by one its study's aggregation refuses; run "
        f"with the run's own settings, give another --out-dir, or add {REPLACE_HINT} to replace it on purpose")
