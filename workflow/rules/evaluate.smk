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
