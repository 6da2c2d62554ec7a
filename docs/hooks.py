"""mkdocs hook: benchmarks/RESULTS.md is the manual's page results.md, read where it lives (the
measured figures have one home, beside the benchmarks that make them)."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "results.md", abs_src_path=str(RESULTS)))
    return files
