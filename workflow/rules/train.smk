rule train:
    input:
        data=STUDY.prepared_path,
        split=split_of,
        code=network_code("train"),
    output:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
    params:
        study=STUDY_FILE,
        settings=experiment_settings,
        out_dir=RUN,
    threads: STUDY.threads
    resources:
        gpu=GPU_PER_JOB,
        mem_mb=4000,
        runtime=120,
    log:
        f"{LOGS}/train/{RUN_LOG}.log",
    benchmark:
        f"{LOGS}/benchmark/train/{RUN_LOG}.tsv"
    shell:
        "convbench train --study {params.study} --experiment {wildcards.experiment}"
        " --repeat {wildcards.repeat} --fold {wildcards.fold} --seed {wildcards.seed}"
        " --data {input.data} --split {input.split} --out-dir {params.out_dir}"
        " --threads {threads} --no-progress > {log} 2>&1"
