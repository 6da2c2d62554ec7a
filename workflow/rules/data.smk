rule download:
    output:
        directory(STUDY.raw_dir),
    params:
        mirror=f"--mirror {STUDY.mirror}" if STUDY.mirror else "",
    log:
        f"{LOGS}/download.log",
    shell:
        "convbench download {STUDY.dataset} --out {output} --no-progress {params.mirror} > {log} 2>&1"


rule prepare:
    input:
        STUDY.raw_dir,
    output:
        STUDY.prepared_path,
    log:
        f"{LOGS}/prepare.log",
    shell:
        "convbench prepare {STUDY.dataset} --raw {input} --out {output} > {log} 2>&1"


rule split:
    input:
        STUDY.prepared_path,
    output:
        STUDY.split_path,
    log:
        f"{LOGS}/split.log",
    shell:
        "convbench split --data {input} --folds {STUDY.folds} --seed {STUDY.seed} --out {output} > {log} 2>&1"
