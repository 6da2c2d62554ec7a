"""The ``convbench`` command: one subcommand per pipeline stage.

Each subcommand is a function ``(argv) -> int`` in the module named after it (``convbench evaluate``:
``convbench.evaluate.main``); this file only dispatches, importing a command's module when that
command is asked for (torch is slow to import), after checking that run from a checkout it runs
that checkout's code (``convbench.provenance.check_own_checkout``).
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

from convbench.provenance import ForeignInstallError, check_own_checkout


class Command(NamedTuple):
    module: str
    function: str
    help: str


COMMANDS: dict[str, Command] = {
    "models": Command("convbench.summary", "models_main",
                      "list every network with default input size and parameters"),
    "summary": Command("convbench.summary", "summary_main",
                       "layer-by-layer table of one network"),
    "download": Command("convbench.download", "main",
                        "download a dataset's raw files, verified by checksum"),
    "prepare": Command("convbench.prepare", "main",
                       "turn raw files into one compact uint8 array file"),
    "split": Command("convbench.split", "main",
                     "write stratified K-fold splits of a prepared dataset"),
    "train": Command("convbench.train_job", "main",
                     "train one network on one fold"),
    "evaluate": Command("convbench.evaluate", "main",
                        "evaluate a trained checkpoint on its fold and the test set"),
    "run": Command("convbench.run", "main",
                   "train and evaluate an experiment's runs of a study, in one process"),
    "aggregate": Command("convbench.aggregate", "main",
                         "means and spreads of an experiment's runs, or of the study"),
    "study": Command("convbench.plan", "main",
                     "validate a study, print what it plans and estimate its cost on this machine"),
    "report": Command("convbench.report.cli", "main",
                      "render the HTML report of a study"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: convbench <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    lines += ["", "Run 'convbench <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from convbench import __version__

        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"convbench: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    entry = COMMANDS[command]
    try:
        check_own_checkout()
    except ForeignInstallError as err:
        print(f"convbench {command}: error: {err}", file=sys.stderr)
        return 1
    return int(getattr(importlib.import_module(entry.module), entry.function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
