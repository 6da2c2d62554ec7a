"""Networks from the user's project: a study's ``networks:`` lists Python files of the project
(``networks/my_block.py``) that register builders as the zoo's do, and its experiments use them by
name like any other network.

A file registers with the zoo's decorator and builder signature (timm's and torchvision's
``register_model`` pattern)::

    from convbench.models import register

    @register("my_block", default_input_size=28, min_input_size=8)
    def my_block(*, in_channels, num_classes, input_size, width=1.0):
        ...

The study check imports the files (the zoo is checked torch-free, from ``models/networks.json``; a
file of the project can only be known by running it, so a study that names one imports torch), adds
their networks to the catalogue, and builds each experiment's network on a dummy batch at the
study's input size, so that a builder that fails does so before any job, naming its file. Both
engines track the file (``convbench.provenance.stage_sources``): an edit reruns the experiments that
use it, and only those.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from convbench.networks import Network, NetworkError, add_project_network, remove_project_networks

MODULE_PREFIX = "convbench_project_networks"
SIGNATURE = "def my_net(*, in_channels, num_classes, input_size, **knobs)"
_LOADED: dict[Path, tuple[str, list[str]]] = {}  # a file -> (sha256 of its bytes, what it registered)
_CHECKED: set[str] = set()  # the dummy batches already run in this process


class NetworkFileError(NetworkError):
    """A network file of the project that cannot be used; the message names the file and the fix."""


def load_network_files(paths: Sequence[str], root: Path = Path(".")) -> dict[str, str]:
    """Import each file (once per content and process), registering its networks; returns network
    name -> the file, as the study names it."""
    found: dict[str, str] = {}
    for text in paths:
        file = root / text
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise NetworkFileError(f"{text}: no such file; networks: lists Python files of your project "
                                   "(relative to it) that register networks with convbench.models.register") from None
        except IsADirectoryError:
            raise NetworkFileError(f"{text}: a directory; networks: lists Python files (.py), one per entry") from None
        except OSError as err:
            raise NetworkFileError(f"{text}: cannot be read ({err.strerror or err})") from None
        digest = hashlib.sha256(data).hexdigest()
        key = file.resolve()
        if key not in _LOADED or _LOADED[key][0] != digest:
            if key in _LOADED:  # edited since this process imported it
                _forget(_LOADED.pop(key)[1])
            _LOADED[key] = (digest, _import(text, file, digest))
        for name in _LOADED[key][1]:
            if name in found:
                raise NetworkFileError(f"{text}: registers {name!r}, which {found[name]} registers too; "
                                       "give one of them another name")
            found[name] = text
    return found


def add_networks_option(parser: Any) -> None:
    """``--networks FILE`` (repeatable): the commands that list or build networks know a project's too."""
    parser.add_argument("--networks", action="append", default=[], metavar="FILE",
                        help="a Python file of your project that registers networks, as a study's "
                             "networks: lists (repeatable)")


def forget_all() -> None:
    """Unregister every project network this process imported (tests, between projects)."""
    for _, names in _LOADED.values():
        _forget(names)
    _LOADED.clear()
    _CHECKED.clear()


def _models() -> Any:
    """``convbench.models`` (and torch), imported on first use. By name: the study check imports
    the model zoo only for a study that names files of its own, so the stages that check studies
    (check, download, prepare, split, aggregate, report) do not list the zoo's code as theirs
    (convbench.provenance follows import statements) and rerun when a network's file changes."""
    return importlib.import_module("convbench.models")


def _forget(names: list[str]) -> None:
    for name in names:
        importlib.import_module("convbench.models._registry").unregister(name)
    remove_project_networks(names)


def _import(text: str, file: Path, digest: str) -> list[str]:
    names, spec = _models().names, _models().spec
    before = set(names())
    module_name = f"{MODULE_PREFIX}.{re.sub(r'[^0-9A-Za-z_]', '_', file.stem)}_{digest[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    if module_spec is None or module_spec.loader is None:
        raise NetworkFileError(f"{text}: not a Python file Python can import; give a .py file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as err:
        _forget(sorted(set(names()) - before))
        raise NetworkFileError(f"{text}:{err.lineno}: not valid Python ({err.msg}); fix the file") from None
    except Exception as err:  # the user's code: whatever it raises, the message names the file
        _forget(sorted(set(names()) - before))
        message = str(err)
        if "is already registered" in message:
            fix = "that name is the zoo's or another file's; register your network under another name"
        elif "lacks keyword" in message:
            fix = f"a builder takes the zoo's keywords: {SIGNATURE}"
        else:
            fix = "importing it failed; fix the file"
        raise NetworkFileError(f"{text}: {type(err).__name__}: {message}; {fix}") from None
    sys.modules[module_name] = module
    new = sorted(set(names()) - before)
    if not new:
        raise NetworkFileError(f"{text}: registers no network; decorate a builder with "
                               "@register(\"my_net\", default_input_size=..., min_input_size=...) from "
                               "convbench.models")
    for name in new:
        entry = spec(name)
        add_project_network(Network(name=name, module=text, default_input_size=entry.default_input_size,
                                    min_input_size=entry.min_input_size, knobs=dict(entry.knobs),
                                    min_input_size_by_stem=dict(entry.min_input_size_by_stem)))
    return new


def check_on_dummy_batch(name: str, file: str, *, in_channels: int, num_classes: int, input_size: int,
                         knobs: dict[str, Any], where: str) -> None:
    """Build network ``name`` as an experiment (``where``) will, and run a batch of two zero images
    through it: a builder that fails, or a network without one logit per class, is refused now."""
    import torch

    build = _models().build
    key = json.dumps([name, _LOADED.get((Path(".") / file).resolve(), ("",))[0], in_channels, num_classes,
                      input_size, knobs], sort_keys=True, default=str)
    if key in _CHECKED:
        return
    shape = f"2 x {in_channels} x {input_size} x {input_size}"
    try:
        model = build(name, in_channels=in_channels, num_classes=num_classes, input_size=input_size, **knobs)
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, input_size, input_size))
    except Exception as err:  # the user's code
        raise NetworkFileError(f"{file}: network {name!r} fails on a dummy batch of {shape} ({where}): "
                               f"{type(err).__name__}: {err}; fix the builder or the experiment's "
                               "input_size and knobs") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise NetworkFileError(f"{file}: network {name!r} returns {got} for a dummy batch of {shape} "
                               f"({where}); expected (2, {num_classes}): one logit per class")
    _CHECKED.add(key)
