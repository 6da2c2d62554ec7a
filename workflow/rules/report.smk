rule report:
    input:
        results=STUDY.study_results_path,
        ablations=STUDY.ablations_path,
        # checked against study.json: an edited copy is refused (DVC shows it as a metric)
        scores=STUDY.scores_path,
        runs=[run_files(name, ["metrics.json"]) for name in STUDY.experiments],
        # each run's perf.json is read when there (the measured columns), never waited for
        curves=[f"{STUDY.curves_dir(name)}/{run.name}.csv" for name in STUDY.experiments for run in STUDY.runs(name)],
        data=STUDY.prepared_path,
        splits=[STUDY.split_path(repeat) for repeat in range(STUDY.repeats)],
        notebook="workflow/notebooks/report.ipynb",
        code=code("report"),
    output:
        html=report(f"{STUDY.reports_dir}/report.html", caption="../report/report_html.rst", category="Report"),
        notebook=f"{STUDY.reports_dir}/report.ipynb",
        figures=[
            report(f"{STUDY.reports_dir}/figures/{name}.png", caption=f"../report/figures/{name}.rst",
                   category="Figures")
            for name in REPORT_FIGURES
        ],
    params:
        study=STUDY_FILE,
        smoke=STUDY.smoke,
        # the whole study: a changed description, ablation or any setting reruns the report, as
        # DVC's params do (the path alone would not)
        content=study_as_dict(STUDY),
        out_dir=lambda wildcards, output: os.path.dirname(output.html),
    log:
        f"{LOGS}/report.log",
    shell:
        "convbench report --study {params.study} --smoke {params.smoke} --out-dir {params.out_dir} > {log} 2>&1"
