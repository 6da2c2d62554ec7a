"""mkdocs hooks: benchmarks/RESULTS.md is the manual's page results.md, read where it lives (the
measured figures have one home, beside the benchmarks that make them). The pages link to it as
`../benchmarks/RESULTS.md`, which works in the repository; on the site those links lead to the page."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"
PAGE = "results.md"


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, PAGE, abs_src_path=str(RESULTS)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    here = posixpath.dirname(page.file.src_uri)
    repository_path = posixpath.relpath("../benchmarks/RESULTS.md", here or ".")  # as the page writes it
    site_path = posixpath.relpath(PAGE, here or ".")
    return re.sub(rf"\]\({re.escape(repository_path)}(?=[#)])", f"]({site_path}", markdown)
