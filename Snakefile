# convbench: download -> prepare -> split[repeat] -> run[experiment] (train, then evaluate, each run)
# -> aggregate -> report, for the study params.yaml describes. Wiring only: every rule runs one
# `convbench <stage>` command, the same commands dvc.yaml runs.
#
#   snakemake --cores 4 --resources gpu=1                     # the study in params.yaml
#   snakemake --cores 4 --config study=fashion_mnist_d2l      # a bundled study (conf/study/)
#   snakemake --cores 2 --config study=fashion_mnist_d2l smoke=2   # its smoke run (README)
from convbench._io import hold_dvc_lock
from convbench.engine_lock import claim_for_snakemake, record_in_dvc, release
from convbench.provenance import check_own_checkout
from convbench.split import check_split_files
from convbench.study import load_study, study_file


# The rules' code inputs are the files of the convbench Python imports: it must be this checkout's
# src/ (the files dvc.yaml names), else an edit here would rerun nothing (convbench.provenance).
check_own_checkout(workflow.basedir)


configfile: "params.yaml"
# `snakemake --report report.zip`: this description, the results, the HTML report and its figures.
report: "workflow/report/workflow.rst"


# `--config study=NAME` selects conf/study/NAME.yaml, as `dvc exp run -S study=NAME` does.
STUDY_FILE = str(study_file("params.yaml", config.get("study")))
# `--config smoke=N`, as `dvc exp run -S smoke=N`: the study as a smoke run, into its own
# directories; every command that reads the study is told (`--smoke N`).
SMOKE = config.get("smoke") or 0
# The whole study (src/convbench/study.schema.yaml, then networks, knobs and the data) is checked
# before any job, with the same messages as `convbench study` and DVC's stages.
STUDY = load_study(STUDY_FILE, smoke=SMOKE)
# A damaged split file is refused before any job: Snakemake would delete every run's results before
# their jobs failed on it.
check_split_files(STUDY, STUDY_FILE)


# One engine at a time in a project (each deletes outputs before it reruns a job): this run claims
# the project (convbench.engine_lock) and DVC's repository lock until it ends, so `dvc repro` and
# any writing `convbench` command started meanwhile are refused, and this run is refused while DVC
# (or another Snakemake, or a `convbench run` by hand) works here. Dry runs take nothing.
onstart:
    claim_for_snakemake()
    hold_dvc_lock()


# A finished run of params.yaml's study is recorded in dvc.lock (`dvc commit`), as DVC's own runs
# are: `dvc exp run` first resets every output to what dvc.lock records, which would delete results
# DVC was never told of.
onsuccess:
    record_in_dvc(STUDY_FILE, SMOKE, {job.rule.name for job in workflow.dag.targetjobs})
    release()


onerror:
    release()


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/run.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


# The targets are the report and every file it stands on: Snakemake only looks upstream of a
# *missing target*, so a deleted checkpoint or experiment's results file is made again (and what
# depends on it rerun) only when it is a target itself. Not the runs' history.csv and perf.json:
# timings, by-products that DVC does not track (workflow/rules/run.smk).
rule all:
    input:
        STUDY.stamp_path,
        f"{STUDY.reports_dir}/report.html",
        STUDY.study_results_path,
        STUDY.scores_path,
        STUDY.ablations_path,
        [STUDY.experiment_results_path(name) for name in STUDY.experiments],
        [f"{STUDY.curves_dir(name)}/{run.name}.csv" for name in STUDY.experiments for run in STUDY.runs(name)],
        [run_files(name, ["model.pt", "metrics.json"])
         for name in STUDY.experiments],
