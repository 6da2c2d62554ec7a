"""Snakemake's own view of the workflow: `snakemake --lint` finds nothing the manual does not answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The one finding left, and why: docs/snakemake.md, "Snakemake's lint and report".
ANSWERED = {"Specify a conda environment or container for each rule."}


def test_snakemake_lint_finds_only_what_the_readme_answers() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["snakemake", "--lint"], cwd=ROOT, env=env, capture_output=True, text=True)
    said = proc.stdout + proc.stderr
    assert "Lints for rule run " in said, said  # it did lint the rules
    assert set(re.findall(r"^    \* (.*?):?$", said, flags=re.M)) == ANSWERED, said
    readme = (ROOT / "docs/snakemake.md").read_text()
    assert "snakemake --lint" in readme and "conda environment" in readme
