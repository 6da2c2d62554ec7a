"""The ``convbench`` command: one subcommand per pipeline stage.

Each subcommand lives next to the code it runs, as ``main(argv) -> int`` in its module; this file
only dispatches, importing a stage's module when that stage is asked for (torch is slow to import).
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("convbench.summary", "list every network with default input size and parameters"),
    "summary": ("convbench.summary", "layer-by-layer table of one network"),
    "download": ("convbench.data", "download a dataset's raw files, verified by checksum"),
    "prepare": ("convbench.data", "turn raw files into one compact uint8 array file"),
    "split": ("convbench.splits", "write stratified K-fold splits of a prepared dataset"),
    "train": ("convbench.training", "train one network on one fold"),
    "evaluate": ("convbench.evaluation", "evaluate a trained checkpoint on its fold and the test set"),
    "aggregate": ("convbench.aggregate", "fold means and spreads per experiment"),
    "study": ("convbench.study", "validate a study and print what it plans"),
    "report": ("convbench.report.cli", "render the HTML report of a study"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: convbench <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
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
    module = importlib.import_module(COMMANDS[command][0])
    entry = getattr(module, f"{command}_main", None) or module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
