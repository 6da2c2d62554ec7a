"""From the template to one self-contained HTML page.

``render`` executes the papermill template (``workflow/notebooks/report.ipynb``), keeps the
executed notebook and converts it to ``report.html`` with the code hidden, the figures inline and
nothing fetched from the network, so the page opens offline.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from convbench._io import atomic_write
from convbench.report.load import ReportError, load_report_data

TEMPLATE = Path("workflow/notebooks/report.ipynb")  # in the pipeline's directory (the repo root)

# nbconvert's lab template, less everything it would fetch from a CDN (require.js, MathJax,
# mermaid, the widget manager): the report must open offline.
HTML_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<style type="text/css">
main { max-width: 1280px; margin: 0 auto; }
table.convbench-table { font-size: 12px; margin-bottom: 1em; }
.jp-RenderedHTMLCommon table.convbench-table td,
.jp-RenderedHTMLCommon table.convbench-table th { text-align: left; vertical-align: top; }
table.convbench-table td:first-child { white-space: nowrap; }
details { margin: 0.3em 0; }
details summary { cursor: pointer; }
ul.verdicts li { margin-bottom: 0.5em; }
span.verdict { font-style: italic; }
</style>
{% endblock extra_css %}
"""
# What a browser would fetch: src= / href= / url( / @import pointing off the page.
EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)\s*(?:https?:)?//""", re.IGNORECASE
)
STYLE_BLOCK = re.compile(r"<style[^>]*>.*?</style>", re.DOTALL | re.IGNORECASE)
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


def external_references(page: str) -> list[str]:
    """The places in an HTML page that would make a browser reach for the network."""
    return [page[max(m.start() - 20, 0): m.end() + 60] for m in EXTERNAL_REFERENCE.finditer(page)]


def notebook_to_html(notebook_path: Path, title: str) -> str:
    """The executed notebook as one offline HTML page: outputs only, figures inline."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    notebook = nbformat.read(notebook_path, as_version=4)
    notebook.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        template_file="convbench_report.html.j2",
        extra_loaders=[jinja2.DictLoader({"convbench_report.html.j2": HTML_TEMPLATE})],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags={"parameters", "injected-parameters"}), enabled=True
    )
    page, _ = exporter.from_notebook_node(notebook)
    # The theme's CSS comments cite web pages; they fetch nothing, but a page without any URL is
    # easier to check.
    page = STYLE_BLOCK.sub(lambda block: CSS_COMMENT.sub("", block.group(0)), page)
    found = external_references(page)
    if found:
        raise ReportError(f"the HTML would fetch from the network: {found[0]!r}")
    return page


def default_kernel() -> str:
    """The kernel named "python3", provided it runs this interpreter (jupyter_client runs a bare
    ``python`` as ``sys.executable``); another interpreter's kernel would import another convbench."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise ReportError(
            f"no Jupyter kernel 'python3'; install one with '{sys.executable} -m ipykernel install "
            "--sys-prefix' or name one with --kernel"
        ) from None
    executable = spec.argv[0] if spec.argv else ""
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if executable not in bare and os.path.abspath(executable) != os.path.abspath(sys.executable):
        raise ReportError(
            f"the Jupyter kernel 'python3' runs {executable}, not this interpreter ({sys.executable}); "
            f"install one with '{sys.executable} -m ipykernel install --sys-prefix' or name one with --kernel"
        )
    return "python3"


def default_template() -> Path:
    """The pipeline's own template, the one Snakemake and DVC track, when run where the pipeline
    runs; otherwise the one beside this source tree."""
    if TEMPLATE.exists():
        return TEMPLATE
    beside = Path(__file__).resolve().parents[3] / TEMPLATE  # src/convbench/report/ -> the repo
    if not beside.exists():
        raise ReportError(f"no report template: neither {TEMPLATE} nor {beside} exists; give --template")
    return beside


def render(
    study_path: str | Path,
    out_dir: str | Path,
    kernel_name: str | None = None,
    *,
    selection: str | None = None,
    results_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    template: str | Path | None = None,
    smoke: int | None = None,
) -> Path:
    """Execute the report template with papermill and convert it to ``out_dir/report.html``.

    Keeps the executed notebook at ``out_dir/report.ipynb`` and the figures in ``out_dir/figures``.
    Paths are taken relative to the current directory, where the kernel runs too (the repo root in
    the pipeline). ``template`` defaults to :func:`default_template`. Returns the HTML path.
    """
    import papermill

    # every file and check the notebook will read, read here first: a fault fails here, naming its
    # file, not in a notebook cell
    study = load_report_data(study_path, selection, results_dir, data_path, smoke).study
    template = Path(template) if template is not None else default_template()
    kernel = kernel_name or default_kernel()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / "report.ipynb"
    # A new file, never one written over in place: with DVC's cache the old output may be a link
    # to the bytes in the cache.
    executed.unlink(missing_ok=True)
    parameters = {
        "study_path": str(study_path),
        "study_selection": selection,
        "smoke": smoke,
        "results_dir": study.results_dir,
        "data_path": str(data_path) if data_path is not None else None,
        "figures_dir": str(out_dir / "figures"),
    }
    quiet = logging.getLogger("papermill")  # it warns that black is not there to format parameters
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        papermill.execute_notebook(
            str(template), str(executed), parameters=parameters, kernel_name=kernel,
            cwd=str(Path.cwd()), progress_bar=False, log_output=False,
            # the kernel's start-up chatter (a local TCP kernel without encryption) is not news
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    finally:
        quiet.setLevel(level)
    title = f"convbench report: {study.name}" + (" (SMOKE RUN: these numbers mean nothing)" if study.smoke else "")
    page = notebook_to_html(executed, title)
    html_path = out_dir / "report.html"
    atomic_write(html_path, lambda file: file.write(page.encode("utf-8")))
    return html_path
