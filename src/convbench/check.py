"""``convbench check``: the pipeline's first stage in both engines. It validates the study (the
schema, then what only the code knows: networks, knobs, folds against the data) and writes a stamp.

DVC deletes a stage's outputs before it runs the stage's command, and every ``convbench`` command
checks the study only once it runs: a study that is not valid would cost the outputs of the first
stage DVC reruns. So every other DVC stage depends on this stage's stamp, and a bad study stops
here. The stamp has the same bytes for every valid study, so it reruns nothing by itself. It imports
only the study's checks, so that only they (and the study) rerun it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from convbench._io import atomic_write, run_cli
from convbench.networks import project_file
from convbench.recipe import warn
from convbench.study import Study, StudyError, add_smoke_option, load_study

STAMP_TEXT = "convbench check: the study is valid\n"
NETWORK_LINKS = Path("workflow/networks")  # dvc.yaml's run stage depends on <arch>.py here


def link_project_networks(study: Study, links: Path = NETWORK_LINKS) -> list[Path]:
    """Link ``workflow/networks/<arch>.py`` to each project file that defines an experiment's
    network, as the zoo's networks are linked: DVC's run stage depends on that path (dvc.yaml can
    only name a path made of the experiment's fields). Returns the links it made; refuses a path
    that is there already and is not a link to the file."""
    if not links.is_dir():  # not a convbench checkout: no dvc.yaml to serve
        return []
    made = []
    for arch in sorted({e.arch for e in study.experiments.values()}):
        file = project_file(arch)
        if file is None:
            continue
        link, target = links / f"{arch}.py", os.path.relpath(file, links)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.exists() or link.is_symlink():
            raise StudyError(f"{link}: is there already and is not a link to {file} (which defines the "
                             f"network {arch!r}); remove it, or rename the network")
        link.symlink_to(target)
        made.append(link)
    return made


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench check",
        description="Validate a study and, once it is valid, write its stamp (the pipeline's first "
                    "stage: DVC's every other stage depends on it).")
    parser.add_argument("--study", default="params.yaml", help="the study: a file or a bundled study's name")
    add_smoke_option(parser)
    parser.add_argument("--stamp", type=Path, required=True, metavar="FILE", help="the stamp to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def action(args: argparse.Namespace) -> None:
        study = load_study(args.study, smoke=args.smoke)
        warn(study, args.study, "check")
        for link in link_project_networks(study):
            print(f"linked {link} for dvc.yaml (the experiments' network dependency)")
        atomic_write(args.stamp, lambda file: file.write(STAMP_TEXT.encode()))
        print(f"study {study.name}: valid")

    return run_cli(parser, argv, action, expected=(StudyError, OSError))
