"""The pipeline end to end, on a tiny real study: Snakemake and DVC run the same DAG, a second run
finds nothing to do, a forced rerun is bit-identical, and bad params are refused before any job.

Runs in a copy of the pipeline files inside a fresh git + DVC repository, like a user's clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("lenet_relu", "mlp")
FOLDS = 2
TINY_STUDY = {
    "study": "tiny",
    "description": "two small networks, two folds, two epochs",
    "dataset": "digits",
    "folds": FOLDS,
    "fold_ids": list(range(FOLDS)),
    "seed": 0,
    "threads": 1,
    "results_dir": "results",
    "reports_dir": "reports",
    "recipe": {"lr": 0.05, "batch_size": 64, "epochs": 2, "weight_decay": 0.0005},
    "experiments": {
        "lenet_relu": {"arch": "lenet", "input_size": 12, "knobs": {"activation": "relu", "pool": "max"}},
        "mlp": {"arch": "mlp", "input_size": 8},
    },
    "ablations": {"convolutions": {"baseline": "mlp", "treatment": "lenet_relu",
                                   "question": "Does LeNet beat the MLP?"}},
}

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def write_study(project: Path, study: dict) -> None:
    """conf/study/<name>.yaml as the default of conf/config.yaml, and params.yaml composed from it."""
    from dvc.utils.hydra import compose_and_dump

    (project / "conf/study").mkdir(parents=True, exist_ok=True)
    (project / "conf/study" / f"{study['study']}.yaml").write_text(
        "# @package _global_\n" + yaml.safe_dump(study, sort_keys=False)
    )
    (project / "conf/config.yaml").write_text(
        f"defaults:\n  - _self_\n  - study: {study['study']}\n"
    )
    compose_and_dump(str(project / "params.yaml"), str(project / "conf"), None, "config",
                     str(project), [])


def make_project(path: Path, study: dict) -> Path:
    path.mkdir()
    for name in ("Snakefile", "dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    shutil.copytree(ROOT / "workflow", path / "workflow")
    write_study(path, study)
    run(["git", "init", "-q"], path)
    run(["git", "config", "user.email", "test@convbench.local"], path)
    run(["git", "config", "user.name", "convbench test"], path)
    run(["dvc", "init", "-q"], path)
    shutil.copy(ROOT / ".dvc/config", path / ".dvc/config")  # Hydra on, hardlinked cache
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "tiny study"], path)
    return path


def train_outputs_planned_by_snakemake(project: Path) -> set[str]:
    out = run(["snakemake", "--forceall", "--dry-run", "--printshellcmds", "--cores", "1"], project).stdout
    return {f"{d}/model.pt" for d in re.findall(r"convbench train .*?--out-dir (\S+)", out)}


def train_outputs_planned_by_dvc(project: Path) -> set[str]:
    out = run(["dvc", "stage", "list"], project).stdout
    return set(re.findall(r"^train@\S+\s+Outputs (\S+?);?\s", out, flags=re.M))


def run_files(project: Path) -> dict[str, bytes]:
    """The files a rerun must reproduce bit for bit."""
    return {
        f"{exp}/fold{k}/{name}": (project / "results" / exp / f"fold{k}" / name).read_bytes()
        for exp in EXPERIMENTS for k in range(FOLDS) for name in ("model.pt", "metrics.json")
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project", TINY_STUDY)
    run(["snakemake", "--cores", "2", "--resources", "gpu=1"], project)
    return project


def test_snakemake_runs_the_whole_study(project: Path) -> None:
    for exp in EXPERIMENTS:
        for k in range(FOLDS):
            run_dir = project / "results" / exp / f"fold{k}"
            for name in ("model.pt", "history.csv", "metrics.json", "perf.json"):
                assert (run_dir / name).stat().st_size > 0, run_dir / name
            assert not (run_dir / "checkpoint.pt").exists()
            assert (project / f"logs/tiny/benchmark/train/{exp}/fold{k}.tsv").exists()
            assert (project / f"logs/tiny/train/{exp}/fold{k}.log").exists()
    metrics = yaml.safe_load((project / "results/metrics.json").read_text())
    assert set(metrics["experiments"]) == set(EXPERIMENTS)
    assert metrics["experiments"]["mlp"]["folds"] == FOLDS
    assert (project / "reports/report.html").stat().st_size > 0


def test_a_second_run_finds_nothing_to_do(project: Path) -> None:
    out = run(["snakemake", "--cores", "2", "--resources", "gpu=1", "--dry-run"], project).stdout
    assert "Nothing to be done" in out


def test_snakemake_and_dvc_plan_the_same_training_outputs(project: Path) -> None:
    planned = train_outputs_planned_by_snakemake(project)
    assert planned == {f"results/{e}/fold{k}/model.pt" for e in EXPERIMENTS for k in range(FOLDS)}
    assert train_outputs_planned_by_dvc(project) == planned


def test_deleted_intermediate_outputs_are_made_again(project: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(project, tmp_path / "copy", symlinks=True)  # keeps the mtimes
    for name in ("model.pt", "history.csv"):
        (copy / "results/mlp/fold0" / name).unlink()
    out = run(["snakemake", "--dry-run", "--printshellcmds", "--cores", "1"], copy).stdout
    trained = re.findall(r"convbench train .*?--out-dir (\S+)", out)
    assert trained == ["results/mlp/fold0"]
    assert "convbench evaluate --checkpoint results/mlp/fold0/model.pt" in out


def test_a_forced_rerun_is_bit_identical(project: Path) -> None:
    before = run_files(project)
    target = "results/lenet_relu/fold0"
    run(["snakemake", "--cores", "1", "--force", f"{target}/model.pt"], project)
    run(["snakemake", "--cores", "1", "--force", f"{target}/metrics.json"], project)
    run(["snakemake", "--cores", "2", "--resources", "gpu=1"], project)  # bring the rest up to date
    assert run_files(project) == before


def test_dvc_repro_reproduces_snakemake_and_snakemake_stays_idle(project: Path) -> None:
    before = run_files(project)
    run(["dvc", "repro"], project)
    assert run_files(project) == before  # same commands, same files
    out = run(["snakemake", "--cores", "1", "--dry-run"], project).stdout
    assert "Nothing to be done" in out
    (project / "results/mlp/fold1/model.pt").unlink()
    run(["dvc", "checkout"], project)
    assert run_files(project) == before
    out = run(["snakemake", "--cores", "1", "--dry-run"], project).stdout
    assert "Nothing to be done" in out
    assert "up to date" in run(["dvc", "status"], project).stdout
    # a killed job's scratch files in a finished results directory change nothing downstream
    scratch = [project / "results/mlp/fold0/checkpoint.pt",
               project / "results/mlp/fold0/.metrics.json.99999999.0badc0de.tmp"]
    for path in scratch:
        path.write_bytes(b"left by a kill")
    try:
        assert "up to date" in run(["dvc", "status"], project).stdout
    finally:
        for path in scratch:
            path.unlink()


def test_dvc_exp_run_with_a_changed_param_moves_the_metrics(project: Path) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline results"], project)
    run(["dvc", "exp", "run", "-S", "recipe.epochs=3"], project)
    assert yaml.safe_load((project / "params.yaml").read_text())["recipe"]["epochs"] == 3
    diff = run(["dvc", "metrics", "diff", "--json"], project).stdout
    moved = yaml.safe_load(diff)
    changed = [path for path, values in moved.items() if values]
    assert "results/metrics.json" in changed
    assert any(path.startswith("results/lenet_relu/") for path in changed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["experiments"]["mlp"].update(knobs={"shortcut": False}),
         "experiments.mlp.knobs: network 'mlp' does not accept knob(s) shortcut"),
        (lambda s: s["experiments"]["lenet_relu"]["knobs"].update(activation="tanhh"),
         "experiments.lenet_relu.knobs: activation must be one of"),
        (("lr: 0.05", "lr: 1e-3"),  # params.yaml edited by hand: YAML 1.1 reads 1e-3 as text
         "recipe.lr: must be a number, got the text '1e-3'"),
    ],
    ids=["unknown knob", "bad knob value", "number as text"],
)
def test_bad_params_are_refused_by_name_before_any_job(tmp_path: Path, change, message: str) -> None:
    bad = yaml.safe_load(yaml.safe_dump(TINY_STUDY))
    if callable(change):
        change(bad)
    project = make_project(tmp_path / "bad", bad)
    if not callable(change):
        params = project / "params.yaml"
        assert change[0] in params.read_text()
        params.write_text(params.read_text().replace(*change))
    study = run(["convbench", "study"], project, check=False)
    assert study.returncode == 1 and message in study.stderr
    proc = run(["snakemake", "--cores", "1"], project, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr  # the same words as `convbench study`
    assert not (project / "data").exists() or not any((project / "data").rglob("*.npz"))
    # DVC has no parse-time hook: the data stages may run, but no training job starts.
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (project / "results").exists() or not any((project / "results").rglob("*.pt"))


def test_snakemake_report_and_dvc_plots_render(project: Path) -> None:
    """The report figures are flagged with report() and the histories are DVC plots."""
    run(["snakemake", "--cores", "1", "--report", "smk-report.html"], project)
    page = (project / "smk-report.html").read_text(errors="replace")
    assert "learning_curves.png" in page and "pareto.png" in page
    out = run(["dvc", "plots", "show", "--json"], project).stdout
    assert "results/lenet_relu/fold0/history.csv" in out
