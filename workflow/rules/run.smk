# An experiment's runs (repeats x folds x seeds), trained and then scored: one `convbench run` job
# per experiment, as DVC's stage run@<experiment>. One process pays torch's start-up once for all of
# an experiment's runs (about 7 s on a 2-core machine, more than a small network's training).
# Its outputs are what a rerun reproduces bit for bit; each run's history.csv and perf.json, which
# hold wall-clock timings, are by-products (written, not declared, and .dvcignore'd): a results
# directory that DVC restored without them is complete, and nothing downstream depends on a timing.
# One rule per set of training seeds (an experiment may train its own, convbench.study): the run
# files differ. The study's own seeds' rule is `run`; another's is `run_seeds_<s>_<s>...`.
for SEEDS, GROUP in STUDY.seed_groups().items():

    rule:
        name:
            rule_name("run", SEEDS)
        wildcard_constraints:
            experiment="|".join(GROUP),
        input:
            data=STUDY.prepared_path,
            splits=[STUDY.split_path(repeat) for repeat in range(STUDY.repeats)],
            code=network_code("run"),
        output:
            run_files_with_seeds("{experiment}", SEEDS, ["model.pt", "metrics.json"]),
        params:
            study=STUDY_FILE,
            smoke=STUDY.smoke,
            settings=experiment_settings,
            # the study's count, not Snakemake's (scaled down to --cores): CPU results depend on it, so
            # a change reruns the runs, as DVC's params do
            threads=STUDY.threads,
        threads: STUDY.threads
        # Jobs start in the study file's order (the first experiment first): a study lists its
        # longest experiments first (fashion_mnist_chapter does), so that the last jobs to start are short.
        priority: lambda wildcards: len(STUDY.experiments) - list(STUDY.experiments).index(wildcards.experiment)
        resources:
            gpu=GPU_PER_JOB,
            mem_mb=4000,
            runtime=120 * len(STUDY.runs_with_seeds(SEEDS)),  # minutes: a guess of 2 h per run, for SLURM
        log:
            f"{LOGS}/run/{{experiment}}.log",
        benchmark:
            f"{LOGS}/benchmark/run/{{experiment}}.tsv"
        shell:
            "convbench run --study {params.study} --experiment {wildcards.experiment}"
            " --threads {params.threads} --smoke {params.smoke} --no-progress > {log} 2>&1"
