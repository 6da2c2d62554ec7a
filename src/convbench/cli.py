"""The ``convbench`` command: one subcommand per pipeline stage.

Each subcommand is a function ``(argv) -> int`` in the module named after it (``convbench evaluate``:
``convbench.evaluate.main``); this file only dispatches, importing a command's module when that
command is asked for (torch is slow to import), after checking that run from a checkout it runs
that checkout's code (``convbench.provenance.check_own_checkout``).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from convbench.commands import COMMANDS
from convbench.engine_lock import EngineBusyError, engine_guard
from convbench.provenance import ForeignInstallError, check_own_checkout


# The commands that write into the project: one engine (or person) at a time (convbench.engine_lock).
# `convbench check` is DVC's first stage, which claims the project for the whole `dvc repro`.
WRITING_COMMANDS = frozenset({"check", "download", "prepare", "split", "train", "evaluate", "run", "aggregate",
                              "report", "stability"})


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
    try:
        with engine_guard(command) if command in WRITING_COMMANDS else contextlib.nullcontext():
            return int(getattr(importlib.import_module(entry.module), entry.function)(rest) or 0)
    except EngineBusyError as err:
        print(f"convbench {command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
