# An experiment's means and spreads over its runs, then the study's over every experiment: both are
# `convbench aggregate` (results/_experiments/<experiment>.json; results/study.json, with
# results/scores.json and results/ablations.json, the files DVC shows as metrics).
rule aggregate_experiment:
    input:
        # and each run's history.csv, a by-product of the same job (rule run): its curves
        runs=lambda wildcards: run_files(wildcards.experiment, ["metrics.json"]),
        code=code("aggregate"),
    output:
        results=STUDY.experiment_results_path("{experiment}"),
        curves=directory(STUDY.curves_dir("{experiment}")),
    params:
        study=STUDY_FILE,
    log:
        f"{LOGS}/aggregate/{{experiment}}.log",
    shell:
        "convbench aggregate --study {params.study} --experiment {wildcards.experiment}"
        " --out {output.results} --curves-out {output.curves} > {log} 2>&1"


rule aggregate:
    input:
        experiments=[STUDY.experiment_results_path(name) for name in STUDY.experiments],
        code=code("aggregate"),
    output:
        results=report(STUDY.study_results_path, caption="../report/study_json.rst", category="Results"),
        scores=STUDY.scores_path,
        ablations=report(STUDY.ablations_path, caption="../report/ablations_json.rst", category="Results"),
    params:
        study=STUDY_FILE,
    log:
        f"{LOGS}/aggregate.log",
    shell:
        "convbench aggregate --study {params.study} --out {output.results}"
        " --scores-out {output.scores} --ablations-out {output.ablations} > {log} 2>&1"
