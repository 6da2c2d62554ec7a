"""Every number a report shows belongs to the study it is reported under (issue 22): runs made with
other settings, aggregates that do not follow from their runs, names the layout cannot hold, two
writers on one run, a full disk.

One tiny study (three MLPs, 2 folds, one epoch) is run once by the CLIs, in process, as the
pipeline runs them; each test changes its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import chdir
from pathlib import Path
from typing import Callable

import pytest
import yaml

from convbench import _io

EXPERIMENTS = ("mlp_a", "mlp_b", "mlp_c")
STUDY = {
    "study": "tiny",
    "description": "three MLPs",
    "dataset": "digits",
    "folds": 2,
    "seed": 0,
    "threads": 1,
    "results_dir": "results",
    "reports_dir": "reports",
    "recipe": {"lr": 0.05, "batch_size": 64, "epochs": 1},
    "experiments": {
        "mlp_a": {"arch": "mlp", "input_size": 8, "knobs": {"dropout": 0.0}},
        "mlp_b": {"arch": "mlp", "input_size": 8, "knobs": {"dropout": 0.5}},
        "mlp_c": {"arch": "mlp", "input_size": 8, "knobs": {"dropout": 0.2}},
    },
    "ablations": {"dropout": {"baseline": "mlp_a", "treatment": "mlp_b"}},
}
RUN = "r0-fold0-seed0"


def write_study(path: Path, **changes: object) -> Path:
    study = json.loads(json.dumps(STUDY))
    for key, value in changes.items():  # "recipe.lr": 0.5
        node = study
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run, aggregated per experiment and for the study, as the pipeline does."""
    from convbench import cli

    root = tmp_path_factory.mktemp("belong") / "project"
    root.mkdir()
    write_study(root / "study.yaml")
    (root / "data/prepared").mkdir(parents=True)
    shutil.copy(digits_npz, root / "data/prepared/digits.npz")
    import torch

    threads = torch.get_num_threads()
    try:
        with chdir(root):
            assert cli.main(["split", "--study", "study.yaml"]) == 0
            for name in EXPERIMENTS:
                assert cli.main(["run", "--study", "study.yaml", "--experiment", name, "--no-progress"]) == 0
                assert cli.main(["aggregate", "--study", "study.yaml", "--experiment", name,
                                 "--out", f"results/_experiments/{name}.json",
                                 "--curves-out", f"results/_curves/{name}"]) == 0
            assert cli.main(["aggregate", "--study", "study.yaml", "--out", "results/study.json"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture
def project(finished: Path, tmp_path: Path) -> Path:
    return shutil.copytree(finished, tmp_path / "project")


def aggregate_experiment(name: str) -> list[str]:
    return ["aggregate", "--study", "study.yaml", "--experiment", name, "--out", f"results/_experiments/{name}.json"]


STUDY_STEP = ["aggregate", "--study", "study.yaml", "--out", "results/study.json"]
REPORT = ["report", "--study", "study.yaml"]


def refused(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


# ----------------------------------------------------------------- runs made with other settings


def test_a_study_edited_during_the_pipeline_is_refused_by_aggregate_and_report(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 1: mlp_b trained with lr 0.05, then params.yaml says 0.5 and the others train with it."""
    study_json = (project / "results/study.json").read_bytes()
    write_study(project / "study.yaml", **{"recipe.lr": 0.5})
    with chdir(project):
        for name in ("mlp_a", "mlp_c"):
            assert convbench(["run", "--study", "study.yaml", "--experiment", name, "--no-progress"]) == 0
            assert convbench(aggregate_experiment(name)) == 0
        capsys.readouterr()
        assert convbench(aggregate_experiment("mlp_b")) == 1
        message = refused(capsys)
        assert (f"results/mlp_b/{RUN}/metrics.json: recipe.lr is 0.05, but the study study.yaml asks "
                "for 0.5") in message
        assert "convbench run --study study.yaml --experiment mlp_b" in message
        # the study step, from the experiment file aggregated before the edit
        assert convbench(STUDY_STEP) == 1
        message = refused(capsys)
        assert "results/_experiments/mlp_b.json: recipe.lr is 0.05, but the study study.yaml asks for 0.5" in message
        assert "convbench run --study study.yaml --experiment mlp_b" in message
        assert (project / "results/study.json").read_bytes() == study_json
        # the report, from the study.json made before the edit
        assert convbench(REPORT) == 1
        message = refused(capsys)
        assert "results/study.json: recipe.lr is 0.05, but the study study.yaml asks for 0.5" in message
    assert not (project / "reports/report.html").exists()


def test_a_run_of_another_study_file_in_the_same_results_is_refused(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 2: a hand `convbench run --study params_new.yaml` (2 epochs instead of 1)."""
    write_study(project / "params_new.yaml", **{"recipe.epochs": 2})
    with chdir(project):
        assert convbench(["run", "--study", "params_new.yaml", "--experiment", "mlp_b", "--no-progress"]) == 0
        capsys.readouterr()
        assert convbench(aggregate_experiment("mlp_b")) == 1
        message = refused(capsys)
        assert f"results/mlp_b/{RUN}/metrics.json: recipe.epochs is 2, but the study study.yaml asks for 1" in message
        # study.json and the experiment's file predate the hand run: the report reads the runs too
        assert convbench(REPORT) == 1
        message = refused(capsys)
        assert f"results/mlp_b/{RUN}/metrics.json: recipe.epochs is 2, but the study study.yaml asks for 1" in message
        assert "convbench run --study study.yaml --experiment mlp_b" in message


def test_runs_made_with_another_thread_count_are_refused(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """CPU results depend on the thread count: it is one of a run's settings (case 4)."""
    with chdir(project):
        # replacing the study's finished runs with other settings takes --replace (issue 40)
        assert convbench(["run", "--study", "study.yaml", "--experiment", "mlp_c", "--threads", "2",
                          "--no-progress"]) == 1
        assert "add --replace to replace it on purpose" in capsys.readouterr().err
        assert convbench(["run", "--study", "study.yaml", "--experiment", "mlp_c", "--threads", "2",
                          "--no-progress", "--replace"]) == 0
        assert json.loads((project / f"results/mlp_c/{RUN}/metrics.json").read_text())["threads"] == 2
        capsys.readouterr()
        assert convbench(aggregate_experiment("mlp_c")) == 1
        message = refused(capsys)
        assert f"results/mlp_c/{RUN}/metrics.json: threads is 2, but the study study.yaml asks for 1" in message


def test_the_study_card_shows_no_recipe_exception_for_runs_of_other_settings(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Results aggregated entirely under another recipe: the report refuses instead of listing
    "recipe exceptions"."""
    from convbench.report.load import ReportError, load_study_results

    write_study(project / "study.yaml", **{"experiments.mlp_b.recipe": {"lr": 0.5}})
    with chdir(project), pytest.raises(ReportError, match=r"recipe\.lr is 0\.05, but the study study\.yaml asks for 0\.5"):
        load_study_results("study.yaml")


def test_a_renamed_experiment_names_the_file_and_both_names(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """results/mlp_c moved to results/mlp_z and the study renamed: the metrics still say mlp_c."""
    (project / "results/mlp_c").rename(project / "results/mlp_z")
    study = yaml.safe_load((project / "study.yaml").read_text())
    study["experiments"]["mlp_z"] = study["experiments"].pop("mlp_c")
    (project / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    with chdir(project):
        assert convbench(aggregate_experiment("mlp_z")) == 1
    message = refused(capsys)
    assert (f"results/mlp_z/{RUN}/metrics.json: experiment is 'mlp_c', but the study study.yaml asks "
            "for 'mlp_z'") in message


# ----------------------------------------------------------------- aggregates checked against runs


def test_a_hand_edited_experiment_mean_is_refused_by_the_study_step(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 5: val_acc_mean set to 0.9991 in results/_experiments/mlp_a.json."""
    path = project / "results/_experiments/mlp_a.json"
    results = json.loads(path.read_text())
    true_mean = results["val_acc_mean"]
    results["val_acc_mean"] = 0.9991
    path.write_text(json.dumps(results, indent=2))
    with chdir(project):
        assert convbench(STUDY_STEP) == 1
    message = refused(capsys)
    assert (f"results/_experiments/mlp_a.json: val_acc_mean is 0.9991, but its 2 runs' val_acc values "
            f"give {true_mean!r}") in message
    assert "convbench aggregate --study study.yaml --experiment mlp_a" in message


def test_a_hand_edited_study_json_is_refused_by_the_report(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "results/study.json"
    results = json.loads(path.read_text())
    results["experiments"]["mlp_a"]["val_acc_mean"] = 0.9991
    path.write_text(json.dumps(results, indent=2))
    with chdir(project):
        assert convbench(REPORT) == 1
    assert "results/study.json: val_acc_mean is 0.9991, but its 2 runs' val_acc values give" in refused(capsys)


def test_a_listed_run_unlike_its_metrics_is_refused_by_the_report(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """study.json's per-run test accuracy and the means made from it, both changed consistently:
    only the run's own metrics.json tells."""
    from convbench.aggregate import mean_std, spread

    path = project / "results/study.json"
    results = json.loads(path.read_text())
    row = results["experiments"]["mlp_b"]
    row["per_run"][1]["test_acc"] = 0.5
    values = [r["test_acc"] for r in row["per_run"]]
    row["test_acc_mean"], row["test_acc_std"] = mean_std(values)
    row["test_acc_fold_std"] = spread(row["per_run"], values)["fold_std"]
    path.write_text(json.dumps(results, indent=2))
    own = json.loads((project / "results/mlp_b/r0-fold1-seed0/metrics.json").read_text())["test"]["accuracy"]
    with chdir(project):
        assert convbench(REPORT) == 1
    assert (f"results/study.json: experiment 'mlp_b' lists test_acc 0.5 for the run in "
            f"results/mlp_b/r0-fold1-seed0, whose metrics.json says {own!r}") in refused(capsys)


# ---------------------------------------------------------------------- names the layout cannot hold


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("study.json", "experiments.study.json: must be a name of letters, digits, '_' and '-' (no '.'"),
        ("mlp.v2", "experiments.mlp.v2: must be a name of letters, digits, '_' and '-' (no '.'"),
        ("MLP_A", "experiments.MLP_A: differs from experiments.mlp_a only in case"),
        ("m" * 229, "must be at most 200 characters long, not 229"),
    ],
    ids=["study.json", "dot", "case", "too long"],
)
def test_experiment_names_the_layout_cannot_hold_are_refused(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    name: str, message: str,
) -> None:
    study = json.loads(json.dumps(STUDY))
    study["experiments"][name] = {"arch": "mlp", "input_size": 8}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    assert convbench(["study", str(tmp_path / "study.yaml")]) == 1
    assert message in refused(capsys)


def test_the_longest_experiment_name_fits_every_file_name_of_the_layout() -> None:
    """The schema's limit is what keeps atomic_write's temporary names within 255 bytes."""
    from convbench import schema
    from convbench.study import StudyError, parse_study

    longest = schema.definition("experiment_name")["maxLength"]
    name = "m" * longest
    study = json.loads(json.dumps(STUDY))
    study["experiments"][name] = {"arch": "mlp", "input_size": 8}
    parsed = parse_study(study)
    target = Path(parsed.experiment_results_path(name)).name
    largest_pid = 4194304  # Linux's PID_MAX_LIMIT
    temporary = f".{target}.{largest_pid}.{'0' * 8}.tmp"  # atomic_write's name for it
    assert len(temporary.encode()) <= 255
    with pytest.raises(StudyError, match="must be at most"):
        study["experiments"][name + "m"] = study["experiments"].pop(name)
        parse_study(study)


# ------------------------------------------------------------------------ one writer per run


def test_a_second_writer_of_a_run_is_refused_naming_the_first(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = project / "results/mlp_a" / RUN
    model = (run_dir / "model.pt").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom convbench._io import one_writer\n"
         f"with one_writer({str(run_dir)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with chdir(project):
            assert convbench(["run", "--study", "study.yaml", "--experiment", "mlp_a", "--fold", "0",
                              "--no-progress"]) == 1
            message = refused(capsys)
            assert f"results/mlp_a/{RUN}: process {holder.pid} (" in message
            assert "is writing this run" in message
            assert convbench(["evaluate", "--study", "study.yaml", "--experiment", "mlp_a", "--fold", "0"]) == 1
            assert f"process {holder.pid}" in refused(capsys)
        assert (run_dir / "model.pt").read_bytes() == model
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed: its lock file stays, its lock does not)
    with chdir(project):
        assert convbench(["evaluate", "--study", "study.yaml", "--experiment", "mlp_a", "--fold", "0"]) == 0
    assert not (run_dir / _io.RUN_LOCK).exists()


def test_one_writer_is_reentrant_and_leaves_nothing(tmp_path: Path) -> None:
    with _io.one_writer(tmp_path / "run"):
        with _io.one_writer(tmp_path / "run"):
            assert (tmp_path / "run" / _io.RUN_LOCK).read_text() == f"{os.getpid()}\n"
        assert (tmp_path / "run" / _io.RUN_LOCK).exists()
    assert list((tmp_path / "run").iterdir()) == []


# -------------------------------------------------------------------------------------- disk full


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every temporary file of an atomic write is /dev/full: its writes fail with ENOSPC."""
    real_open = os.open

    def open_(path: object, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".tmp"):
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_during_training_names_the_file(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    full_disk: None,
) -> None:
    run_dir = project / "results/mlp_a" / RUN
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with chdir(project):
        assert convbench(["run", "--study", "study.yaml", "--experiment", "mlp_a", "--fold", "0",
                          "--no-progress"]) == 1
    message = refused(capsys)
    assert "disk full" in message
    assert f"results/mlp_a/{RUN}/checkpoint.pt: disk full" in message or \
        f"results/mlp_a/{RUN}/history.csv: disk full" in message
    # nothing finished was lost
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name in before} == before


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_during_evaluation_names_the_file(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    full_disk: None,
) -> None:
    run_dir = project / "results/mlp_a" / RUN
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with chdir(project):
        assert convbench(["evaluate", "--study", "study.yaml", "--experiment", "mlp_a", "--fold", "0"]) == 1
    assert f"results/mlp_a/{RUN}/metrics.json: disk full" in refused(capsys)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
