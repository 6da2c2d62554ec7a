"""Smoke runs: every bundled study, every stage for real at toy scale (``smoke: N``), to a report
that says its numbers mean nothing, in directories of its own.

The default study, ``fashion_mnist_cpu`` and ``fashion_mnist_chapter`` run here in this process, stage by stage, as DVC runs
them (``convbench <stage> --study params.yaml --smoke N``); the seeds' study ``fashion_mnist_d2l``
runs through Snakemake (tests/test_pipeline.py), as the README's acceptance command does. The
Fashion-MNIST studies use the real data (Debian's ``dataset-fashion-mnist``) and are skipped,
saying so, where it is not installed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from torch import nn

from convbench import datasets
from convbench.models import _registry
from convbench.study import SMOKE_EPOCHS, load_study

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HAS_FASHION = all((DEBIAN_DIR / name).is_file() for name, _ in datasets.DATASETS["fashion_mnist"].resources)
needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason=f"the real Fashion-MNIST is not installed "
                                   f"({DEBIAN_DIR}): apt-get install dataset-fashion-mnist")
SMOKE = 1  # batches per epoch: AlexNet's one step of 128 images at 224 px is seconds on 2 CPU cores


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, closed_port_url: str) -> None:
    """No official mirror reachable: the data must come from the local copy, as in CI."""
    spec = dataclasses.replace(datasets.DATASETS["fashion_mnist"], mirrors=(closed_port_url,))
    monkeypatch.setitem(datasets.DATASETS, "fashion_mnist", spec)
    monkeypatch.delenv(datasets.MIRRORS_ENV, raising=False)


def study_project(root: Path, name: str | None) -> Path:
    """A directory whose params.yaml is the bundled study ``name`` (None: the repository's own
    params.yaml, the default study), as `dvc exp run -S study=NAME` leaves it."""
    root.mkdir(parents=True, exist_ok=True)
    source = ROOT / "params.yaml" if name is None else ROOT / "conf/study" / f"{name}.yaml"
    shutil.copy(source, root / "params.yaml")
    return root


def smoke_run(convbench: Callable[[list[str]], int], root: Path, smoke: int = SMOKE) -> None:
    """Every stage of the study in ``root``/params.yaml as a smoke run, in this process, in the
    order the engines run them; fails at the first stage that does not exit 0, naming it."""
    study = load_study(root / "params.yaml", smoke=smoke)
    smoke_flag = ["--smoke", str(smoke)]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for argv in (["download", "--study", "params.yaml", "--no-progress"],
                     ["prepare", "--study", "params.yaml"], ["split", "--study", "params.yaml"]):
            assert convbench(argv) == 0, f"convbench {argv[0]} failed"
        for name in study.experiments:
            argv = ["run", "--study", "params.yaml", *smoke_flag, "--experiment", name,
                    "--threads", str(study.threads), "--no-progress"]
            assert convbench(argv) == 0, f"convbench run failed for experiment {name}"
            assert convbench(["aggregate", "--study", "params.yaml", *smoke_flag, "--experiment", name,
                              "--out", study.experiment_results_path(name),
                              "--curves-out", study.curves_dir(name)]) == 0, f"aggregate of {name} failed"
        assert convbench(["aggregate", "--study", "params.yaml", *smoke_flag, "--out", study.study_results_path,
                          "--scores-out", study.scores_path, "--ablations-out", study.ablations_path]) == 0
        assert convbench(["report", "--study", "params.yaml", *smoke_flag]) == 0, "convbench report failed"


def check_smoke_results(root: Path, smoke: int = SMOKE) -> None:
    """What a smoke run must leave: every run's files, recorded as a smoke run, in the -smoke
    directories only, and a report whose first words say its numbers mean nothing."""
    study = load_study(root / "params.yaml", smoke=smoke)
    real = load_study(root / "params.yaml")
    assert not (root / real.results_dir / "study.json").exists()
    assert not (root / real.reports_dir / "report.html").exists()
    for name, run in study.all_runs():
        run_dir = root / study.run_dir(name, run)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["recipe"]["smoke"] == smoke and metrics["epochs"] == SMOKE_EPOCHS
        assert metrics["input_size"] == real.experiment(name).input_size
        assert metrics["recipe"]["batch_size"] == real.experiment(name).recipe.batch_size
        assert metrics["val"]["n"] == metrics["test"]["n"] == smoke * metrics["recipe"]["eval_batch_size"]
        assert not (run_dir / "checkpoint.pt").exists()  # written every epoch, removed when done
    assert sorted({run.fold for _, run in study.all_runs()}) == [0, 1]
    page = (root / study.reports_dir / "report.html").read_text(encoding="utf-8")
    body = page[page.index("<body"):]
    assert body.index("SMOKE RUN: these numbers mean nothing") < body.index("<h1")
    assert "<title>convbench report: " in page and "(SMOKE RUN: these numbers mean nothing)</title>" in page
    for heading in ("Leaderboard", "Against the book", "The chapter's answer: the families ranked",
                    "Learning curves", "Accuracy against cost",
                    "Ablations", "Fold spread", "The best experiment", "Networks", "Study card"):
        assert f">{heading}" in page, heading
    for experiment in study.experiments:
        assert experiment in page


@pytest.mark.slow
def test_the_default_study_runs_as_a_smoke_run(
    tmp_path: Path, convbench: Callable[[list[str]], int]
) -> None:
    root = study_project(tmp_path / "digits", None)
    smoke_run(convbench, root)
    check_smoke_results(root)


@needs_fashion
@pytest.mark.slow
def test_fashion_mnist_cpu_runs_as_a_smoke_run_on_the_real_data(
    tmp_path: Path, convbench: Callable[[list[str]], int], offline: None
) -> None:
    root = study_project(tmp_path / "fm_cpu", "fashion_mnist_cpu")
    smoke_run(convbench, root)
    check_smoke_results(root)


@needs_fashion
@pytest.mark.slow
def test_the_chapter_study_runs_as_a_smoke_run_on_the_real_data(
    tmp_path: Path, convbench: Callable[[list[str]], int], offline: None
) -> None:
    """Every family of the chapter at its study's size, one batch an epoch, to a report that
    ranks the families beside d2l's and the published numbers."""
    root = study_project(tmp_path / "chapter", "fashion_mnist_chapter")
    smoke_run(convbench, root)
    check_smoke_results(root)
    study = load_study(root / "params.yaml", smoke=SMOKE)
    page = (root / study.reports_dir / "report.html").read_text(encoding="utf-8")
    for family in ("LeNet", "AlexNet", "VGG-11", "NiN", "GoogLeNet", "ResNet-18", "DenseNet", "MLP"):
        assert f"<td>{family}</td>" in page, family
    assert "Against d2l's (median of 20 builds) ordering" in page
    assert "pytorch-pretrained-cnns" in page and "Under 100,000 parameters:" in page


def misfit_alexnet(**kwargs: object) -> nn.Module:
    """AlexNet with a classic bug: its classifier's first layer sized for another resolution, so
    it builds, but its forward fails at the study's input size."""
    model = ALEXNET.builder(**kwargs)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    name, first = linears[0]
    parent = model.get_submodule(name.rpartition(".")[0])
    setattr(parent, name.rpartition(".")[2], nn.Linear(first.in_features + 256, first.out_features))
    return model


ALEXNET = _registry.spec("alexnet")


@needs_fashion
@pytest.mark.slow
def test_a_broken_network_in_the_seeds_study_fails_its_smoke_run_naming_the_experiment(
    tmp_path: Path, convbench: Callable[[list[str]], int], offline: None,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A network that builds but cannot run at the study's resolution (AlexNet at 224 px here)
    stops the smoke run at its experiment, with the error and the run that hit it."""
    monkeypatch.setitem(_registry._REGISTRY, "alexnet", dataclasses.replace(ALEXNET, builder=misfit_alexnet))
    root = study_project(tmp_path / "d2l", "fashion_mnist_d2l")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        smoke_run(convbench, root)
    err = capsys.readouterr().err
    assert "convbench run: experiment alexnet, repeat 0 fold 0 seed 0" in err
    study = load_study(root / "params.yaml", smoke=SMOKE)
    assert not (root / study.run_dir("alexnet", study.runs("alexnet")[0]) / "model.pt").exists()
    assert (root / study.run_dir("lenet", study.runs("lenet")[0]) / "metrics.json").exists()  # those before ran


GPU_RECIPES_STUDY = {
    "study": "gpu_path",
    "description": "what a GPU run uses and a CPU can execute: bf16 autocast, channels_last, "
                   "torch.compile, deterministic mode",
    "dataset": "digits", "folds": 2, "seed": 0, "threads": 1,
    "recipe": {"batch_size": 32, "epochs": 3, "lr": 0.05},
    "experiments": {
        "lenet_bf16": {"arch": "lenet", "input_size": 16,
                       "recipe": {"precision": "bf16", "channels_last": True, "deterministic": True}},
        "resnet18_bf16": {"arch": "resnet18", "input_size": 32, "knobs": {"width": 0.125},
                          "recipe": {"precision": "bf16", "channels_last": True}},
        "mlp_compiled": {"arch": "mlp", "input_size": 8, "recipe": {"compile": True}},
    },
    "ablations": {"compiled_vs_bf16": {"baseline": "mlp_compiled", "treatment": "lenet_bf16"}},
}


@pytest.mark.slow
def test_the_gpu_recipes_run_as_a_smoke_run_on_the_cpu(
    tmp_path: Path, convbench: Callable[[list[str]], int]
) -> None:
    """bf16 autocast (CPU autocast), channels_last, torch.compile (inductor's C++ on the CPU, one
    tiny network) and deterministic: true, through every stage to the report."""
    import yaml

    root = tmp_path / "gpu_path"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(GPU_RECIPES_STUDY, sort_keys=False))
    smoke_run(convbench, root, smoke=2)
    check_smoke_results(root, smoke=2)
    study = load_study(root / "params.yaml", smoke=2)
    for name, run in study.all_runs():
        metrics = json.loads((root / study.run_dir(name, run) / "metrics.json").read_text())
        wanted = GPU_RECIPES_STUDY["experiments"][name]["recipe"]
        assert {k: metrics["recipe"][k] for k in wanted} == wanted
        assert metrics["test"]["n"] == 2 * 16 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
