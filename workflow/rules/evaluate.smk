rule evaluate:
    input:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
        data=STUDY.prepared_path,
        split=split_of,
        code=network_code("evaluate"),
    output:
        metrics=f"{RUN}/metrics.json",
        perf=f"{RUN}/perf.json",
    threads: STUDY.threads
    resources:
        gpu=GPU_PER_JOB,
        mem_mb=4000,
        runtime=30,
    log:
        f"{LOGS}/evaluate/{RUN_LOG}.log",
    shell:
        "convbench evaluate --checkpoint {input.model} --history {input.history}"
        " --data {input.data} --split {input.split} --out {output.metrics}"
        " --perf-out {output.perf} --threads {threads} > {log} 2>&1"


rule summarize_experiment:
    input:
        runs=lambda wildcards: run_files(wildcards.experiment, ["metrics.json", "perf.json"]),
        code=code("aggregate"),
    output:
        summary_path(STUDY.results_dir, "{experiment}"),
    params:
        study=STUDY_FILE,
    log:
        f"{LOGS}/aggregate/{{experiment}}.log",
    shell:
        "convbench aggregate --study {params.study} --experiment {wildcards.experiment}"
        " --out {output} > {log} 2>&1"


rule aggregate:
    input:
        summaries=[summary_path(STUDY.results_dir, name) for name in STUDY.experiments],
        code=code("aggregate"),
    output:
        STUDY.metrics_path,
    params:
        study=STUDY_FILE,
    log:
        f"{LOGS}/aggregate.log",
    shell:
        "convbench aggregate --study {params.study} --out {output} > {log} 2>&1"
