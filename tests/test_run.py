"""``convbench run``: an experiment's runs trained and scored in one process, writing exactly what
``convbench train`` then ``convbench evaluate`` write."""

from __future__ import annotations

import csv
import json
import shutil
from contextlib import chdir
from pathlib import Path
from typing import Any, Callable

import pytest

from convbench.checkpoint import TIMING_COLUMNS
from test_evaluate import STUDY  # a one-experiment study: lenet, 3 folds, 2 epochs

RUNS = [f"r0-fold{k}-seed0" for k in range(3)]


@pytest.fixture(scope="module")
def project(digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study's data and split where its layout puts them; two study files that differ
    only in their results directory."""
    from convbench import cli

    root = tmp_path_factory.mktemp("run")
    for name in ("by_run", "by_stage"):
        (root / f"{name}.yaml").write_text(STUDY.format(results=name))
    (root / "data/prepared").mkdir(parents=True)
    shutil.copy(digits_npz, root / "data/prepared/digits.npz")
    with chdir(root):
        assert cli.main(["split", "--study", "by_run.yaml"]) == 0
    return root


def history_without_timings(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(file)]


def test_run_writes_what_train_then_evaluate_write(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    with chdir(project):
        assert convbench(["run", "--study", "by_run.yaml", "--experiment", "lenet"]) == 0
        printed = capsys.readouterr().out.splitlines()
        for fold in range(3):
            for command in ("train", "evaluate"):
                assert convbench([command, "--study", "by_stage.yaml", "--experiment", "lenet",
                                  "--fold", str(fold)]) == 0
    # each run trained, then scored, before the next
    assert [line.split(":")[0] for line in printed] == [
        f"lenet repeat 0 fold {k} seed 0" for k in range(3) for _ in ("train", "evaluate")]
    assert [("model.pt" in line, "metrics.json" in line) for line in printed] == [(True, False), (False, True)] * 3
    for run in RUNS:
        by_run, by_stage = project / "by_run/lenet" / run, project / "by_stage/lenet" / run
        for name in ("model.pt", "metrics.json"):
            assert (by_run / name).read_bytes() == (by_stage / name).read_bytes(), f"{run}/{name}"
        assert history_without_timings(by_run / "history.csv") == history_without_timings(by_stage / "history.csv")
        perf = json.loads((by_run / "perf.json").read_text())
        assert perf["training"]["epochs"] == 2 and perf["inference"]["images_per_s"] > 0
        assert not (by_run / "checkpoint.pt").exists()


def test_run_can_pick_one_run(project: Path, convbench: Callable[[list[str]], int], tmp_path: Path) -> None:
    study = tmp_path / "one.yaml"
    study.write_text(STUDY.format(results=tmp_path / "results"))
    with chdir(project):
        assert convbench(["run", "--study", str(study), "--experiment", "lenet", "--fold", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "results/lenet").iterdir()) == ["r0-fold2-seed0"]
    assert sorted(p.name for p in (tmp_path / "results/lenet/r0-fold2-seed0").iterdir()) == [
        "history.csv", "metrics.json", "model.pt", "perf.json"]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--experiment", "resnet"], 1, "convbench run: error: experiments: no experiment 'resnet' in study 'tiny'"),
        (["--experiment", "lenet", "--fold", "3"], 1,
         "convbench run: error: fold 3 is not in study 'tiny', which has folds 0, 1, 2"),
        (["--experiment", "lenet", "--threads", "0"], 2, "--threads: must be a positive integer"),
        ([], 2, "the following arguments are required: --experiment"),
    ],
    ids=["unknown experiment", "fold out of range", "zero threads", "no experiment"],
)
def test_run_refuses_in_one_line(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    argv: list[str], code: int, message: str,
) -> None:
    with chdir(project):
        assert convbench(["run", "--study", "by_run.yaml", *argv]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bug_inside_run_keeps_its_traceback(
    project: Path, convbench: Callable[[list[str]], int], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, raiser: Callable[[Exception], Callable[..., Any]],
) -> None:
    """A ValueError from deep inside scoring is a bug, not a user's error: it is not turned into
    one line (the errors `run` reports in one line are train's and evaluate's own)."""
    bug = ValueError("operands could not be broadcast together")
    monkeypatch.setattr("convbench.evaluate.evaluate_checkpoint", raiser(bug))
    study = tmp_path / "bug.yaml"
    study.write_text(STUDY.format(results=tmp_path / "results"))
    with chdir(project), pytest.raises(ValueError) as raised:
        convbench(["run", "--study", str(study), "--experiment", "lenet", "--fold", "0"])
    assert raised.value is bug
    assert not (tmp_path / "results/lenet/r0-fold0-seed0/metrics.json").exists()


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> str:
    """This process without a usable GPU, as with a driver too old for the wheel (torch warns and
    answers False); returns the warning."""
    import warnings

    import torch

    from convbench import device

    warning = "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040)."

    def is_available() -> bool:
        warnings.warn(warning, UserWarning)
        return False

    monkeypatch.setattr(device, "_CUDA_STATE", [])
    monkeypatch.setattr(device, "_FALLBACK_SAID", [])
    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    return warning


@pytest.mark.parametrize("how", ["study", "option"])
def test_a_job_told_to_use_cuda_stops_before_any_work_without_one(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    tmp_path: Path, no_cuda: str, how: str,
) -> None:
    """`device: cuda` in the study, or `--device cuda`: no silent fallback to the CPU."""
    study = tmp_path / "cuda.yaml"
    study.write_text(STUDY.format(results=tmp_path / "results") + ("device: cuda\n" if how == "study" else ""))
    with chdir(project):
        argv = ["run", "--study", str(study), "--experiment", "lenet"]
        assert convbench(argv + (["--device", "cuda"] if how == "option" else [])) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "convbench run: error: device 'cuda' was asked for, but CUDA is not usable" in err
    assert "built for CUDA 13.0" in err and no_cuda in err
    assert not (tmp_path / "results").exists()


def test_auto_records_its_fallback_to_the_cpu_and_an_explicit_cpu_none(
    project: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    tmp_path: Path, no_cuda: str,
) -> None:
    import platform

    from convbench.checkpoint import load_checkpoint

    records = {}
    for device in ("auto", "cpu"):
        study = tmp_path / f"{device}.yaml"
        study.write_text(STUDY.format(results=tmp_path / device))
        with chdir(project):
            assert convbench(["run", "--study", str(study), "--experiment", "lenet", "--fold", "0",
                              "--device", device]) == 0
        run_dir = tmp_path / device / "lenet/r0-fold0-seed0"
        meta = load_checkpoint(run_dir / "model.pt")["meta"]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["device"] == meta["device"]
        assert metrics["recipe"]["tf32"] is False
        records[device] = meta["device"]
    err = capsys.readouterr().err
    assert err.count("convbench: device auto: running on the CPU, as torch.cuda.is_available() is False") == 1
    used = f"cpu:{platform.machine()}:1 threads"  # the study's threads
    assert records["auto"]["fallback"].startswith("torch.cuda.is_available() is False (torch ")
    assert no_cuda in records["auto"]["fallback"]
    assert {k: v for k, v in records["auto"].items() if k != "fallback"} == {"asked": "auto", "used": used, "tf32": False}
    assert records["cpu"] == {"asked": "cpu", "used": used, "fallback": None, "tf32": False}


def test_the_estimate_of_a_study_for_cuda_stops_in_one_line_without_one(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str], no_cuda: str,
) -> None:
    study = tmp_path / "cuda.yaml"
    study.write_text(STUDY.format(results=tmp_path / "results") + "device: cuda\n")
    assert convbench(["study", str(study), "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and no_cuda in err
    assert err.startswith("convbench study: error: device 'cuda' was asked for, but CUDA is not usable")
