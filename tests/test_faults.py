"""Faults a user makes, tried on a finished tiny study, as a user would make them: no finished result
is lost, no hand-edited number reaches a report, and each ends in an error that names the file and
a fix that works (the test runs the fix), or in a correct rerun.

The study is run once by Snakemake (which records it in dvc.lock, as DVC's own runs are recorded);
every test changes its own copy (``copy_of``: mtimes kept). After a fix, the pipeline is run again
up to the report (``UP_TO_THE_REPORT``) where the fault is in a results file: the report's own
checks of each file are test_report's, and one test here (an edited accuracy) renders it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
from test_pipeline import TINY_STUDY, copy_of, make_project, planned_jobs, run, run_files

pytestmark = pytest.mark.slow

RUN = "results/mlp/r0-fold1-seed0"
UP_TO_THE_REPORT = ["snakemake", "--cores", "1", "--omit-from", "report"]  # a render is ~15 s


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study, run by Snakemake. Read only: a test that changes it works on ``copy_of``."""
    project = make_project(tmp_path_factory.mktemp("faults") / "project", TINY_STUDY)
    out = run(["snakemake", "--cores", "2", "--resources", "gpu=1"], project).stdout
    assert "recorded the finished study in dvc.lock" in out
    return project


def results_of(project: Path) -> dict[str, bytes]:
    """Every finished result: the runs' files and the study's, byte for byte."""
    files = run_files(project)
    for name in ("study.json", "scores.json", "ablations.json"):
        files[name] = (project / "results" / name).read_bytes()
    return files


def fails(args: list[str], project: Path) -> str:
    proc = run(args, project, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    return proc.stdout + proc.stderr


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """A results file edited by hand: ``change`` applied to its document."""
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


def refused_then_fixed(project: Path, message: str, fix_prefix: str) -> None:
    """Snakemake refuses the project with ``message``; the fix the message gives (the command
    starting with ``fix_prefix``) is run, and the pipeline then runs up to the report."""
    out = fails(["snakemake", "--cores", "1"], project)
    assert message in out, out[-3000:]
    run(fix_from(out, fix_prefix), project)
    run(UP_TO_THE_REPORT, project)


def fix_from(message: str, prefix: str) -> list[str]:
    """The command a message gives as its fix (``prefix`` ... up to the end of the clause)."""
    start = message.index(prefix)
    end = min(i for i in (message.find(c, start) for c in (" (", ";", "'", "\n", ", then")) if i != -1)
    return shlex.split(message[start:end])


# -------------------------------------------------------------------- DVC: check before deleting


@pytest.mark.parametrize(("override", "message"), [
    ("+experiments.mlp.knobs.dropot=0.5", "network 'mlp' does not accept knob(s) dropot"),
    ("recipe.epochs=0", "recipe.epochs"),
])
def test_dvc_exp_run_with_a_bad_setting_keeps_every_result(
    done: Path, tmp_path: Path, override: str, message: str
) -> None:
    """`dvc exp run` first resets every output to dvc.lock (a forced checkout), then runs the stages:
    the study Snakemake finished is in dvc.lock, and DVC's first stage refuses the bad study before
    any stage's outputs are removed."""
    copy = copy_of(done, tmp_path)
    before = results_of(copy)
    out = fails(["dvc", "exp", "run", "-S", override], copy)
    assert message in out and "failed to reproduce 'check'" in out
    assert results_of(copy) == before
    assert (copy / "data/raw/digits").is_dir() and (copy / "data/prepared/digits.npz").exists()


def test_smoke_set_by_hand_then_dvc_repro_deletes_nothing(done: Path, tmp_path: Path) -> None:
    copy = copy_of(done, tmp_path)
    before = results_of(copy)
    raw = sorted(p.name for p in (copy / "data/raw/digits").iterdir())
    params = copy / "params.yaml"
    text = params.read_text()
    assert text.startswith("smoke: 0\n")  # as Hydra composes it
    params.write_text("smoke: 1\n" + text[len("smoke: 0\n"):])
    out = fails(["dvc", "repro"], copy)
    assert "compose params.yaml again (dvc exp run -S smoke=N)" in out
    assert "Running stage 'download'" not in out
    assert results_of(copy) == before and sorted(p.name for p in (copy / "data/raw/digits").iterdir()) == raw


def test_a_bad_knob_then_dvc_repro_of_one_stage_names_the_checkout_that_restores_its_runs(
    done: Path, tmp_path: Path
) -> None:
    """`dvc repro -s run@<experiment>` runs that stage alone, without the check stage: DVC removes
    the stage's finished runs before the command refuses the study. The error says so and names
    `dvc checkout run@<experiment>`, which (once the study is fixed) brings them back from the cache."""
    copy = copy_of(done, tmp_path)
    before = results_of(copy)
    params = copy / "params.yaml"
    text = params.read_text()
    study = __import__("yaml").safe_load(text)
    study["experiments"]["lenet_relu"]["knobs"]["dropot"] = 0.5
    params.write_text(__import__("yaml").safe_dump(study))
    out = fails(["dvc", "repro", "-s", "run@lenet_relu"], copy)
    assert "does not accept knob(s) dropot" in out
    assert ("DVC removed the outputs of the stage run@lenet_relu before running this command: once the "
            "study is fixed, 'dvc checkout run@lenet_relu' brings them back") in out
    assert not (copy / "results/lenet_relu/r0-fold0-seed0/model.pt").exists()  # what DVC did
    params.write_text(text)
    run(["dvc", "checkout", "run@lenet_relu"], copy)
    assert results_of(copy) == before


# ------------------------------------------------------------------ Snakemake: a damaged split


def test_a_truncated_split_is_refused_before_any_job_and_its_fix_reruns_nothing(
    done: Path, tmp_path: Path
) -> None:
    copy = copy_of(done, tmp_path)
    before = results_of(copy)
    split = copy / "data/splits/digits-k2-s0/repeat0.json"
    split.write_bytes(split.read_bytes()[:100])
    out = fails(["snakemake", "--cores", "1"], copy)
    assert "data/splits/digits-k2-s0/repeat0.json: not a valid split file" in out
    assert "Nothing was run or deleted" in out
    assert results_of(copy) == before
    run(fix_from(out, "convbench split "), copy)
    assert planned_jobs(copy) == {}  # the same bytes: nothing to retrain
    assert results_of(copy) == before


# ------------------------------------------------------- split settings edited, stages by hand


@pytest.mark.parametrize("change", [{"folds": 3}, {"seed": 1}])
def test_runs_of_another_split_are_refused_by_aggregate_and_report(
    done: Path, tmp_path: Path, change: dict
) -> None:
    copy = copy_of(done, tmp_path)
    params = copy / "params.yaml"
    study = __import__("yaml").safe_load(params.read_text())
    params.write_text(__import__("yaml").safe_dump({**study, **change}, sort_keys=False))
    run(["convbench", "split", "--study", "params.yaml"], copy)
    split_dir = f"data/splits/digits-k{change.get('folds', 2)}-s{change.get('seed', 0)}"
    out = fails(["convbench", "aggregate", "--study", "params.yaml", "--experiment", "mlp",
                 "--out", "results/_experiments/mlp.json"], copy)
    assert "results/mlp/r0-fold0-seed0/metrics.json: this run was trained on split" in out
    assert split_dir in out and "convbench run --study params.yaml --experiment mlp" in out
    # the later steps, by hand over the old aggregates, refuse them too (each names what to redo)
    out = fails(["convbench", "aggregate", "--study", "params.yaml", "--out", "results/study.json"], copy)
    assert "results/_experiments/" in out and ("runs were trained on split" in out or "lists the runs" in out)
    out = fails(["convbench", "report", "--study", "params.yaml"], copy)
    assert "results/study.json: study." in out and "aggregate the study again" in out


# --------------------------------------------------------------------- hand-edited numbers


def test_an_edited_accuracy_in_a_runs_metrics_is_refused_and_its_fix_works(done: Path, tmp_path: Path) -> None:
    copy = copy_of(done, tmp_path)
    before = results_of(copy)
    path = copy / RUN / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["val"]["accuracy"] = 0.9999
    path.write_text(json.dumps(metrics, indent=2))
    out = fails(["snakemake", "--cores", "1"], copy)
    assert f"{RUN}/metrics.json: val.accuracy is 0.9999, but its confusion matrix gives" in out
    assert not (copy / "results/_experiments/mlp.json").exists() or "0.9999" not in (
        copy / "results/_experiments/mlp.json").read_text()
    run(fix_from(out, "convbench evaluate "), copy)
    run(["snakemake", "--cores", "1"], copy)
    assert results_of(copy) == before
    assert "99.99" not in (copy / "reports/report.html").read_text()


def test_an_edited_ablation_is_refused_and_its_fix_works(done: Path, tmp_path: Path) -> None:
    """An edited verdict (an edited p or difference: test_report's ablation test)."""
    copy = copy_of(done, tmp_path)

    def flip(document: dict[str, Any]) -> None:
        entry = document["ablations"]["convolutions"]["val_acc"]
        entry["verdict"] = "better" if entry["verdict"] != "better" else "worse"

    edit_json(copy / "results/ablations.json", flip)
    refused_then_fixed(copy, "results/ablations.json: ablations.convolutions.val_acc.verdict is",
                       "convbench aggregate ")
    assert results_of(copy) == results_of(done)


def test_an_edited_scores_json_is_refused_and_its_fix_works(done: Path, tmp_path: Path) -> None:
    copy = copy_of(done, tmp_path)
    edit_json(copy / "results/scores.json", lambda d: d["experiments"]["mlp"].update(val_acc_mean=0.99))
    refused_then_fixed(copy, "results/scores.json: experiments.mlp.val_acc_mean is 0.99, but results/study.json gives",
                       "convbench aggregate ")
    assert results_of(copy) == results_of(done)


def test_a_hand_edited_study_json_gets_a_fix_that_works(done: Path, tmp_path: Path) -> None:
    copy = copy_of(done, tmp_path)
    edit_json(copy / "results/study.json",
              lambda d: d["experiments"]["mlp"].update(val_acc_mean=d["experiments"]["mlp"]["val_acc_mean"] + 0.05))
    out = fails(["convbench", "report", "--study", "params.yaml"], copy)
    assert "results/study.json: val_acc_mean is" in out
    fix = fix_from(out, "convbench aggregate ")
    assert "--experiment" not in fix  # the study's step, not an experiment's file written over it
    run(fix, copy)
    run(UP_TO_THE_REPORT, copy)
    assert results_of(copy) == results_of(done)


# ---------------------------------------------------------------------------- damaged models


@pytest.mark.parametrize("damage", ["truncate", "another fold's"])
def test_a_damaged_model_is_refused_and_its_fix_retrains_it(done: Path, tmp_path: Path, damage: str) -> None:
    copy = copy_of(done, tmp_path)
    before = results_of(copy)
    model = copy / RUN / "model.pt"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    else:
        model.write_bytes((copy / "results/mlp/r0-fold0-seed0/model.pt").read_bytes())
    refused_then_fixed(copy, f"{RUN}/model.pt: its sha256 is", "convbench run ")
    assert results_of(copy) == before


# ------------------------------------------------------------------------ perf.json and --study


def test_an_empty_perf_json_is_named_before_the_notebook_runs(done: Path, tmp_path: Path) -> None:
    copy = copy_of(done, tmp_path)
    (copy / RUN / "perf.json").write_text("{}")
    out = fails(["convbench", "report", "--study", "params.yaml"], copy)
    assert f"{RUN}/perf.json: no training.seconds" in out and "delete it" in out
    assert "papermill" not in out.lower() and "Traceback" not in out
    (copy / RUN / "perf.json").unlink()  # the fix it gives
    run(["convbench", "report", "--study", "params.yaml"], copy)


def test_study_takes_a_file_and_every_command_a_bundled_name(done: Path, tmp_path: Path) -> None:
    copy = copy_of(done, tmp_path)
    other = copy / "elsewhere.yaml"
    other.write_text((copy / "params.yaml").read_text().replace("study: tiny", "study: elsewhere"))
    out = run(["convbench", "study", "--study", "elsewhere.yaml", "--no-estimate"], copy).stdout
    assert out.startswith("study elsewhere:")
    out = run(["convbench", "study", "--study", "tiny", "--no-estimate"], copy).stdout  # conf/study/tiny.yaml
    assert out.startswith("study tiny:")
    run(["convbench", "aggregate", "--study", "tiny", "--out", str(tmp_path / "study.json")], copy)
    assert "no such study file, and no bundled study" in fails(
        ["convbench", "split", "--study", "nonesuch"], copy)


# ------------------------------------------------------------------------- one engine at a time


def fake_dvc(tmp_path: Path, project: Path) -> subprocess.Popen:
    """A process named ``dvc`` that runs one stage's command (DVC's first stage) and stays, as
    ``dvc repro`` does between and during its stages."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "dvc"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import subprocess, sys, time
        cmd = "convbench check --study params.yaml --stamp results/_study_checked.txt"
        print("stage", subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL).returncode, flush=True)
        time.sleep(120)
    """))
    script.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(project / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([str(script), "repro"], cwd=project, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "stage 0"
    return proc


def test_snakemake_is_refused_while_dvc_is_between_or_inside_stages(done: Path, tmp_path: Path) -> None:
    """DVC lets go of its own lock while a stage's command runs; the project's claim stays with the
    dvc process until it ends."""
    copy = copy_of(done, tmp_path)
    dvc = fake_dvc(tmp_path, copy)
    try:
        out = fails(["snakemake", "--cores", "1", "--forcerun", "report"], copy)
        assert f"DVC (pid {dvc.pid}: " in out and "is running in this project" in out
        out = fails(["convbench", "aggregate", "--study", "params.yaml", "--out", "results/study.json"], copy)
        assert f"DVC (pid {dvc.pid}: " in out
    finally:
        dvc.kill()
        dvc.wait()
    # a dead claim is no claim
    run(["convbench", "aggregate", "--study", "params.yaml", "--out", "results/study.json"], copy)


def test_a_second_snakemake_is_refused_naming_the_first(done: Path, tmp_path: Path) -> None:
    copy = copy_of(done, tmp_path)
    code = ("import sys, time; sys.path.insert(0, 'src'); from convbench.engine_lock import claim_for_snakemake; "
            "claim_for_snakemake(); print('claimed', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=copy, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        out = fails(["snakemake", "--cores", "1", "--forcerun", "report"], copy)
        assert f"Snakemake (pid {holder.pid}: " in out and "DVC is running" not in out
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ timings after a DVC checkout


def test_timings_survive_a_dvc_checkout_of_the_runs(done: Path, tmp_path: Path) -> None:
    """DVC restores a run's directory without its perf.json (a by-product it neither tracks nor
    caches); the report finds the timings of the very model it reports in the study's store."""
    copy = copy_of(done, tmp_path)
    import shutil

    shutil.rmtree(copy / "results/mlp")
    run(["dvc", "checkout"], copy)
    assert not (copy / RUN / "perf.json").exists() and (copy / RUN / "model.pt").exists()
    code = ("from convbench.report.load import load_report_data; d = load_report_data('params.yaml'); "
            "print(len(d.perf), len(d.run_metrics))")
    assert run([sys.executable, "-c", code], copy).stdout.split() == ["8", "8"]
    shutil.rmtree(copy / "results/_timings")  # a clone that pulled the study: never measured here
    # the report shows "n/a" for the others (test_report's placeholders test)
    assert run([sys.executable, "-c", code], copy).stdout.split() == ["4", "8"]
