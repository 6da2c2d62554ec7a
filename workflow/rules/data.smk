# The study, checked before anything else: DVC's first stage (its stamp is a dependency of every
# other DVC stage), made here too so that both engines leave the same files.
rule check:
    input:
        code=code("check"),
    output:
        STUDY.stamp_path,
    params:
        study=STUDY_FILE,
        smoke=STUDY.smoke,
    log:
        f"{LOGS}/check.log",
    shell:
        "convbench check --study {params.study} --smoke {params.smoke} --stamp {output}"
        " > {log} 2>&1"


rule download:
    input:
        code=code("download"),
        # a data set of the project's own images: every file, so that an added one reruns it
        images=image_files(),
    output:
        directory(STUDY.raw_dir),
    params:
        study=STUDY_FILE,
        images=STUDY.images,  # the settings a folder of the project's own images is taken stock with
    log:
        f"{LOGS}/download.log",
    shell:
        "convbench download --study {params.study} --no-progress > {log} 2>&1"


rule prepare:
    input:
        raw=STUDY.raw_dir,
        code=code("prepare"),
    output:
        STUDY.prepared_path,
    params:
        study=STUDY_FILE,
    log:
        f"{LOGS}/prepare.log",
    shell:
        "convbench prepare --study {params.study} > {log} 2>&1"


# Repeat r of R x K-fold cross-validation shuffles with the seed `seed + r` (convbench.study).
rule split:
    input:
        data=STUDY.prepared_path,
        code=code("split"),
    output:
        f"{STUDY.splits_dir}/repeat{{repeat}}.json",
    params:
        folds=STUDY.folds,
        split_seed=lambda wildcards: STUDY.split_seed(int(wildcards.repeat)),
    log:
        f"{LOGS}/split/repeat{{repeat}}.log",
    shell:
        "convbench split --data {input.data} --folds {params.folds} --seed {params.split_seed}"
        " --out {output} > {log} 2>&1"
