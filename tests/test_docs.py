"""The README and the manual (docs/) against the code: the CLI reference is the parsers' own help,
and every `convbench ...` command line they show parses with the real parser. (The site itself is
built with `mkdocs build --strict` by .ci/run, so a broken link or a page missing from the
navigation fails CI.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convbench import cli_reference
from convbench.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "benchmarks/RESULTS.md"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.M | re.S)
INLINE = re.compile(r"(?<!`)`(convbench [^`]+)`(?!`)")


def command_lines(text: str) -> list[str]:
    """The `convbench ...` command lines of a Markdown text's code blocks (after a `$ ` prompt,
    with `\\` continuations joined). Lines that show convbench's output (`convbench study: error:
    ...`) and placeholders (`convbench <stage>`) are not commands."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("convbench ") or line == "convbench":
                found.append(line)
    return [line for line in found if is_command(line)]


def mentions(text: str) -> list[str]:
    """The commands that prose names in inline code, `convbench run --resume`: fragments, whose
    other arguments are left out."""
    return [span for span in INLINE.findall(FENCE.sub("", text)) if is_command(span)]


def is_command(line: str) -> bool:
    words = line.split()
    return len(words) == 1 or not (words[1].endswith(":") or words[1].startswith("<") or words[1] == "...")


def test_the_cli_reference_is_the_parsers_help() -> None:
    page = ROOT / "docs/reference/cli.md"
    assert page.read_text() == cli_reference.markdown(), (
        "docs/reference/cli.md is out of date: python -m convbench.cli_reference docs/reference/cli.md")
    assert all(f"## convbench {name}\n" in page.read_text() for name in COMMANDS)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_command_line_of_the_docs_parses(page: Path) -> None:
    text = page.read_text()
    bad = {line: error for line in command_lines(text) if (error := cli_reference.parse_error(line)) is not None}
    bad |= {span: error for span in mentions(text) if (error := cli_reference.unknown_options(span)) is not None}
    assert not bad, "\n".join(f"{line!r}: {error}" for line, error in bad.items())


def test_the_check_catches_a_stale_flag() -> None:
    assert cli_reference.parse_error("convbench study --study fashion_mnist_chapter --jobs 2") is None
    assert "unrecognized arguments: --cores" in cli_reference.parse_error("convbench study --cores 2")
    assert "invalid choice" in cli_reference.parse_error("convbench download imagenet --out data/raw")
    assert cli_reference.parse_error("convbench study --json > plan.json  # then: jq . plan.json") is None
    assert "unknown command 'train_all'" == cli_reference.parse_error("convbench train_all")
    assert cli_reference.unknown_options("convbench run ... --resume [--threads N]") is None
    assert cli_reference.unknown_options("convbench run --restart") == "convbench run has no option --restart"
    text = ("Run `convbench study --jobs 2`, then\n\n```\n$ convbench compare \\\n"
            "    --exact\nconvbench study: error: no study\n```\nand `convbench <stage>`.\n")
    assert command_lines(text) == ["convbench compare      --exact"]
    assert mentions(text) == ["convbench study --jobs 2"]


def test_the_readme_is_a_front_page_with_the_commands_ci_runs() -> None:
    """At most 150 lines; its setup and test commands are the lines .ci/run runs, and its main
    command is the one the project promises."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert len(readme.splitlines()) <= 150
    blocks = FENCE.findall(readme)
    setup = 'python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[pipeline,test]"'
    assert f"{setup}\n" in blocks and setup in ci.splitlines()
    assert "snakemake --cores 4 --resources gpu=1\n" in blocks
    assert "pytest\n" in blocks and "pytest" in ci.splitlines()
    assert (ROOT / "docs/images/report.png").is_file() and "](docs/images/report.png)" in readme
