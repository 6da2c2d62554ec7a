# An experiment's means and spreads over its runs, then the study's over every experiment: both are
# `convbench aggregate` (results/_experiments/<experiment>.json; results/study.json, with
# results/scores.json and results/ablations.json, the files DVC shows as metrics).
# One rule per set of training seeds, as rule `run` (workflow/rules/run.smk): the curves differ.
for SEEDS, GROUP in STUDY.seed_groups().items():

    rule:
        name:
            rule_name("aggregate_experiment", SEEDS)
        wildcard_constraints:
            experiment="|".join(GROUP),
        input:
            # each run's metrics.json (its numbers and its learning curve: no history.csv, a by-product,
            # is read) and model.pt, which the metrics are checked to come from
            runs=lambda wildcards: run_files(wildcards.experiment, ["metrics.json", "model.pt"]),
            # every run is checked against the study's split, read again
            splits=[STUDY.split_path(repeat) for repeat in range(STUDY.repeats)],
            code=code("aggregate"),
        output:
            results=STUDY.experiment_results_path("{experiment}"),
            # each run's file, not directory(): Snakemake's marker file in a directory output would be
            # one more "plot" for DVC, and not a plottable one
            curves=[f"{STUDY.curves_dir('{experiment}')}/{run.name}.csv" for run in STUDY.runs_with_seeds(SEEDS)],
        params:
            study=STUDY_FILE,
            smoke=STUDY.smoke,
            curves_dir=lambda wildcards: STUDY.curves_dir(wildcards.experiment),
        log:
            f"{LOGS}/aggregate/{{experiment}}.log",
        shell:
            "convbench aggregate --study {params.study} --smoke {params.smoke} --experiment {wildcards.experiment}"
            " --out {output.results} --curves-out {params.curves_dir} > {log} 2>&1"


rule aggregate:
    input:
        experiments=[STUDY.experiment_results_path(name) for name in STUDY.experiments],
        splits=[STUDY.split_path(repeat) for repeat in range(STUDY.repeats)],
        code=code("aggregate"),
    output:
        results=report(STUDY.study_results_path, caption="../report/study_json.rst", category="Results"),
        scores=STUDY.scores_path,
        ablations=report(STUDY.ablations_path, caption="../report/ablations_json.rst", category="Results"),
    params:
        study=STUDY_FILE,
        # ablations.json compares the study's named pairs: a changed pair reruns this step, as DVC's
        # `ablations` param does
        ablations=study_as_dict(STUDY)["ablations"],
        smoke=STUDY.smoke,
    log:
        f"{LOGS}/aggregate.log",
    shell:
        "convbench aggregate --study {params.study} --smoke {params.smoke} --out {output.results}"
        " --scores-out {output.scores} --ablations-out {output.ablations} > {log} 2>&1"
