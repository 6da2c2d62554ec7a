"""The CLI reference, generated from the parsers the commands run, and a check of command lines.

``docs/reference/cli.md`` is this module's output, so a flag cannot be documented otherwise than it
parses (``tests/test_docs.py`` fails when the committed page differs; regenerate it with
``python -m convbench.cli_reference docs/reference/cli.md``). ``parse_error`` tells whether a
``convbench ...`` line, as the README and the manual write them, parses with the real parser, and
``unknown_options`` whether a command mentioned in prose (``convbench run --resume``) has the
options it is said to have.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import shlex
import sys
from pathlib import Path

from convbench.commands import COMMANDS

WIDTH = 100  # the help text's line width, fixed so that the page does not depend on the terminal

HEADER = """\
# Command reference

Every `convbench` command with its options, exactly as `convbench <command> --help` prints them.
This page is generated from the commands' own parsers (`python -m convbench.cli_reference
docs/reference/cli.md`; `tests/test_docs.py` fails when it is out of date), and every `convbench
...` line of the README and of this manual is checked against the same parsers.

"""


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser ``convbench <command>`` parses its options with."""
    entry = COMMANDS[command]
    return getattr(importlib.import_module(entry.module), entry.parser)()


def help_text(command: str) -> str:
    parser = build_parser(command)
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    return parser.format_help()


def markdown() -> str:
    parts = [HEADER]
    parts += [f"- [`convbench {name}`](#convbench-{name}): {entry.help}\n" for name, entry in COMMANDS.items()]
    for name, entry in COMMANDS.items():
        parts.append(f"\n## convbench {name}\n\n{entry.help[0].upper()}{entry.help[1:]}.\n\n"
                     f"```text\n{help_text(name).rstrip()}\n```\n")
    return "".join(parts)


def parse_error(line: str) -> str | None:
    """None when ``line`` (``convbench <command> [options]``, shell-quoted) parses with the command's
    parser; otherwise what is wrong, as argparse or the dispatcher says it."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:  # the command's own words: up to a redirection, a pipe or the next command
        if set(word) <= set(lexer.punctuation_chars):
            break
        words.append(word)
    if not words or words[0] != "convbench":
        return f"not a convbench command line: {line!r}"
    if len(words) == 1 or words[1] in ("-h", "--help", "--version"):
        return None
    if words[1] not in COMMANDS:
        return f"unknown command {words[1]!r}"
    parser = build_parser(words[1])
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(words[2:])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def unknown_options(mention: str) -> str | None:
    """None when ``mention``, a ``convbench <command> --option ...`` fragment of prose (where the
    other arguments are left out), names a real command and only options it has; otherwise what
    is not real."""
    words = mention.replace("[", " ").replace("]", " ").split()
    if len(words) < 2 or words[0] != "convbench":
        return f"not a convbench command: {mention!r}"
    if words[1] not in COMMANDS:
        return f"unknown command {words[1]!r}"
    # argparse lists a parser's options only in its (private) actions
    options = {option for action in build_parser(words[1])._actions for option in action.option_strings}
    unknown = [word.split("=")[0] for word in words[2:] if word.startswith("-") and word.split("=")[0] not in options]
    return f"convbench {words[1]} has no option {', '.join(unknown)}" if unknown else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m convbench.cli_reference FILE.md   (the manual's: docs/reference/cli.md)")
        return 0 if args and args[0] in ("-h", "--help") else 2
    Path(args[0]).write_text(markdown())
    print(f"wrote {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
