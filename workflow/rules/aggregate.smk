# An experiment's means and spreads over its runs, then the study's over every experiment: both are
# `convbench aggregate` (results/_experiments/<experiment>.json, results/study.json).
rule aggregate_experiment:
    input:
        runs=lambda wildcards: run_files(wildcards.experiment, ["metrics.json", "perf.json"]),
        code=code("aggregate"),
    output:
        STUDY.experiment_results_path("{experiment}"),
    params:
        study=STUDY_FILE,
    log:
        f"{LOGS}/aggregate/{{experiment}}.log",
    shell:
        "convbench aggregate --study {params.study} --experiment {wildcards.experiment}"
        " --out {output} > {log} 2>&1"


rule aggregate:
    input:
        experiments=[STUDY.experiment_results_path(name) for name in STUDY.experiments],
        code=code("aggregate"),
    output:
        report(STUDY.study_results_path, caption="../report/study_json.rst", category="Results"),
    params:
        study=STUDY_FILE,
    log:
        f"{LOGS}/aggregate.log",
    shell:
        "convbench aggregate --study {params.study} --out {output} > {log} 2>&1"
