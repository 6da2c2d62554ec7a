"""The ``convbench`` subcommands: each a function ``(argv) -> int`` in the module named here.

Each also names the function that builds its parser, so that the CLI reference
(``convbench.cli_reference``, docs/reference/cli.md) is generated from the parsers the commands use.
A table of its own, so that ``convbench.cli`` (which dispatches) and ``convbench.provenance``
(which lists the files each stage runs) both read it without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str
    function: str
    help: str
    parser: str = "build_parser"  # the module's function that builds its argparse parser (the CLI reference)


COMMANDS: dict[str, Command] = {
    "models": Command("convbench.summary", "models_main",
                      "list every network with default input size and parameters", "models_parser"),
    "summary": Command("convbench.summary", "summary_main",
                       "layer-by-layer table of one network", "summary_parser"),
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
    "check": Command("convbench.check", "main",
                     "check a study and write its stamp (the pipeline's first stage)"),
    "study": Command("convbench.plan", "main",
                     "validate a study, print what it plans and estimate its cost on this machine"),
    "stability": Command("convbench.stability", "main",
                         "rerun the study's ablations under other training seeds: verdicts per seed set"),
    "report": Command("convbench.report.cli", "main",
                      "render the HTML report of a study"),
    "compare": Command("convbench.compare", "main",
                       "hold a study's runs against its expected results: identical, within noise, or what is off"),
}
