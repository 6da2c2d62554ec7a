# Paths and resources shared by the rules. Paths come from convbench.study, so Snakemake, DVC and
# the report agree on the layout.
import shutil
import subprocess

from convbench.aggregate import summary_path


def _visible_gpus():
    """GPUs on this machine, without importing torch: 0 when there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return listing.stdout.count("GPU ") if listing.returncode == 0 else 0


# A GPU job asks for one `gpu`; on a machine without one it asks for none, so
# `--resources gpu=1` does not serialize CPU-only runs. (SLURM profiles set gpu per rule.)
GPU_PER_JOB = 1 if _visible_gpus() > 0 else 0
RUN = f"{STUDY.results_dir}/{{experiment}}/fold{{fold}}"
LOGS = f"logs/{STUDY.name}"


wildcard_constraints:
    experiment="|".join(STUDY.experiments),
    fold=r"\d+",


def experiment_settings(wildcards):
    """An experiment's resolved settings: a changed knob or recipe reruns exactly its jobs."""
    e = STUDY.experiment(wildcards.experiment)
    return {"arch": e.arch, "knobs": e.knobs, "input_size": e.input_size,
            "recipe": e.recipe.to_dict(), "seed": STUDY.seed}
