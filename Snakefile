# convbench: download -> prepare -> split -> train[experiment, fold] -> evaluate[experiment, fold]
# -> aggregate -> report, for the study params.yaml describes. Wiring only: every rule runs one
# `convbench <stage>` command, the same commands dvc.yaml runs.
#
#   snakemake --cores 4 --resources gpu=1                     # the study in params.yaml
#   snakemake --cores 4 --config study=fashion_mnist_d2l      # a bundled study (conf/study/)
import yaml
from snakemake.utils import validate

from convbench.study import load_study, study_file


configfile: "params.yaml"


# `--config study=NAME` selects conf/study/NAME.yaml, as `dvc exp run -S study=NAME` does.
STUDY_FILE = str(study_file("params.yaml", config.get("study")))
with open(STUDY_FILE) as _file:
    validate(yaml.safe_load(_file), "workflow/schemas/params.schema.yaml")
STUDY = load_study(STUDY_FILE)  # every network, knob, size and recipe, checked before any job


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{STUDY.reports_dir}/report.html",
