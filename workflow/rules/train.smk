rule train:
    input:
        data=STUDY.prepared_path,
        split=STUDY.split_path,
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
        f"{LOGS}/train/{{experiment}}/fold{{fold}}.log",
    benchmark:
        f"{LOGS}/benchmark/train/{{experiment}}/fold{{fold}}.tsv"
    shell:
        "convbench train --study {params.study} --experiment {wildcards.experiment}"
        " --fold {wildcards.fold} --data {input.data} --split {input.split}"
        " --out-dir {params.out_dir} --threads {threads} --no-progress > {log} 2>&1"
