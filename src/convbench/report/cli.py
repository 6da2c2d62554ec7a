"""``convbench report``: parse the arguments, render, and say in one line what went wrong."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from convbench._io import run_cli
from convbench.report.load import ReportError
from convbench.report.render import TEMPLATE, render
from convbench.study import add_smoke_option


def build_parser() -> argparse.ArgumentParser:
    """``convbench report``'s options; without any, the study in params.yaml as the pipeline runs it."""
    parser = argparse.ArgumentParser(
        prog="convbench report",
        description="Render the study's report: execute the papermill template "
        "(workflow/notebooks/report.ipynb), keep the executed notebook and write a self-contained "
        "report.html (code hidden, figures inline, nothing fetched from the network).",
    )
    parser.add_argument("--study", type=Path, default=Path("params.yaml"),
                        help="the study file (default: params.yaml)")
    parser.add_argument("--select", default=None, metavar="NAME", help="select a bundled study by name")
    add_smoke_option(parser)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where report.html, report.ipynb and figures/ go "
                             "(default: the study's reports_dir)")
    parser.add_argument("--kernel", default=None, metavar="NAME",
                        help="Jupyter kernel to execute the template "
                             "(default: 'python3', checked to run this interpreter)")
    parser.add_argument("--template", type=Path, default=None,
                        help=f"the papermill template (default: {TEMPLATE} if it exists, "
                             "else the one of this source tree)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 having written the report, or 1 with one line on stderr that says what is wrong (a
    missing file, a failed notebook cell); a bug in the report code keeps its traceback."""
    from papermill.exceptions import PapermillExecutionError

    from convbench.study import StudyError, load_study

    def action(args: argparse.Namespace) -> None:
        started = time.perf_counter()
        out_dir = args.out_dir or Path(load_study(args.study, args.select, args.smoke).reports_dir)
        try:
            html_path = render(args.study, out_dir, args.kernel, selection=args.select, template=args.template,
                               smoke=args.smoke)
        except PapermillExecutionError as err:
            raise ReportError(f"the report notebook failed in cell {err.exec_count}: {err.ename}: "
                              f"{' '.join(str(err.evalue).split())} (see {out_dir / 'report.ipynb'})") from None
        print(f"wrote {html_path} ({time.perf_counter() - started:.1f} s)")

    return run_cli(build_parser(), argv, action, expected=(ReportError, StudyError, OSError))
