# Paths and resources shared by the rules. Paths come from convbench.study, so Snakemake, DVC and
# the report agree on the layout.
import os
import shutil
import subprocess

from convbench.imagefolder import IMAGES_DIR
from convbench.provenance import stage_sources
from convbench.study import REPORT_FIGURES, study_as_dict


def _visible_gpus():
    """GPUs on this machine, without importing torch: 0 when there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return listing.stdout.count("GPU ") if listing.returncode == 0 else 0


# A GPU job asks for one `gpu`; on a machine without one it asks for none, so
# `--resources gpu=1` does not serialize CPU-only runs. (SLURM profiles set gpu per rule.)
GPU_PER_JOB = 1 if _visible_gpus() > 0 else 0
LOGS = f"logs/{STUDY.layout_name}"  # a smoke run's apart: logs/<study>-smoke/


wildcard_constraints:
    experiment="|".join(STUDY.experiments),
    repeat=r"\d+",


def code(stage, arch=None):
    """The package files `convbench <stage>` runs (convbench.provenance): editing one reruns the
    jobs that run it. Paths inside the working directory are kept relative."""
    here = os.getcwd()
    return [os.path.relpath(path) if str(path).startswith(here + os.sep) else str(path)
            for path in stage_sources(stage, arch)]


def image_files():
    """Every file of images/<dataset>/ for a study of the project's own images (convbench.imagefolder),
    none for a built-in data set."""
    if not STUDY.images:
        return []
    return sorted(str(p) for p in (IMAGES_DIR / STUDY.dataset).rglob("*") if p.is_file())


def network_code(stage):
    """`code(stage)` plus the one network file of the job's experiment."""
    return lambda wildcards: code(stage, STUDY.experiment(wildcards.experiment).arch)


def run_files(experiment, names):
    """Every run's `names` files of one experiment (all repeats, folds and seeds)."""
    return run_files_with_seeds(experiment, STUDY.experiment(experiment).seeds, names)


def run_files_with_seeds(experiment, seeds, names):
    """`run_files` of an experiment that trains `seeds` (a rule's output pattern: `experiment` may
    be the wildcard "{experiment}")."""
    return [f"{STUDY.run_dir(experiment, run)}/{name}" for run in STUDY.runs_with_seeds(seeds) for name in names]


def rule_name(stage, seeds):
    """`stage` for the experiments that train the study's seeds, `<stage>_seeds_<s>_...` for those
    that train their own."""
    return stage if seeds == STUDY.seeds else f"{stage}_seeds_" + "_".join(map(str, seeds))


def experiment_settings(wildcards):
    """An experiment's resolved settings and its runs' seeds: a changed knob or recipe reruns
    exactly its job."""
    e = STUDY.experiment(wildcards.experiment)
    return {"arch": e.arch, "knobs": e.knobs, "input_size": e.input_size,
            "recipe": e.recipe.to_dict(),
            "split_seeds": [STUDY.split_seed(repeat) for repeat in range(STUDY.repeats)],
            "train_seeds": [run.train_seed for run in STUDY.runs(e.name)]}
