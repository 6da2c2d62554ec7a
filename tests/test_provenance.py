"""Which code each stage runs (one list, read by both engines) and which code made a result."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from convbench.models import names
from convbench.provenance import (
    NETWORK_LINKS,
    PACKAGE_DIR,
    code_version,
    describe,
    network_files,
    source_sha256,
    stage_sources,
)

ROOT = Path(__file__).resolve().parents[1]


def repo_paths(paths: list[Path]) -> set[str]:
    return {path.relative_to(ROOT).as_posix() for path in paths}


def dvc_code_deps(stage: str) -> set[str]:
    """The package files a dvc.yaml stage lists as dependencies."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    body = stages[stage].get("do", stages[stage])
    return {dep for dep in body["deps"] if dep.startswith("src/")}


@pytest.mark.parametrize("stage", ["download", "prepare", "split", "aggregate", "report"])
def test_dvc_stages_list_exactly_the_code_they_run(stage: str) -> None:
    assert dvc_code_deps(stage) == repo_paths(stage_sources(stage))


def test_the_run_stage_lists_training_and_evaluation_code_but_no_network() -> None:
    expected = repo_paths(stage_sources("run"))
    assert dvc_code_deps("run") == expected
    assert {"src/convbench/train.py", "src/convbench/evaluate.py", "src/convbench/run.py"} <= expected
    # no network's own file: only the shared ones and the catalogue of their interfaces
    assert not any(dep.startswith("src/convbench/models/") and not Path(dep).name.startswith("_")
                   and Path(dep).name not in ("__init__.py", "networks.json") for dep in expected)
    assert dvc_code_deps("aggregate_experiment") == repo_paths(stage_sources("aggregate"))


def test_every_network_has_a_link_to_the_file_that_defines_it() -> None:
    links = ROOT / NETWORK_LINKS
    assert sorted(p.stem for p in links.iterdir()) == names()
    for name in names():
        link = links / f"{name}.py"
        assert link.is_symlink(), link  # a link: DVC hashes the network file itself
        module = network_files()[name].rsplit(".", 1)[1]
        assert link.resolve() == PACKAGE_DIR / "models" / f"{module}.py"
    assert network_files()["lenet_bn"] == network_files()["lenet"] == "convbench.models.lenet"
    assert network_files()["vgg16"] == "convbench.models.vgg"


def test_a_stage_runs_its_imports_and_one_network() -> None:
    train = repo_paths(stage_sources("run", "resnet18"))
    assert {"src/convbench/train.py", "src/convbench/recipe.py", "src/convbench/models/_layers.py",
            "src/convbench/models/resnet.py", "src/convbench/cli.py"} <= train
    report_package = repo_paths(sorted((PACKAGE_DIR / "report").glob("*.py")))
    assert len(report_package) > 1
    assert "src/convbench/models/lenet.py" not in train and not report_package & train
    report = repo_paths(stage_sources("report"))
    # every module of the package, those only the notebook template calls too; data files too
    assert report_package | {"src/convbench/reference/d2l.yaml"} <= report
    assert not report_package & repo_paths(stage_sources("aggregate"))
    with pytest.raises(ValueError, match="no network 'lenet9'"):
        stage_sources("run", "lenet9")
    with pytest.raises(ValueError, match="unknown stage 'fit'"):
        stage_sources("fit")


def test_the_source_hash_follows_every_byte_of_the_package(tmp_path: Path) -> None:
    copy = shutil.copytree(PACKAGE_DIR, tmp_path / "convbench", ignore=shutil.ignore_patterns("__pycache__"))
    assert source_sha256(copy) == source_sha256(PACKAGE_DIR)
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled")  # not source
    assert source_sha256(copy) == source_sha256(PACKAGE_DIR)
    with open(copy / "models" / "lenet.py", "a") as file:
        file.write("# a comment counts\n")
    assert source_sha256(copy) != source_sha256(PACKAGE_DIR)


def test_code_version_names_the_commit_when_there_is_one() -> None:
    version = code_version()
    assert version["source_sha256"] == source_sha256()
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if git.returncode != 0:
        pytest.skip("not a git work tree")
    assert version["commit"] == git.stdout.strip()
    status = subprocess.run(["git", "-C", str(PACKAGE_DIR), "status", "--porcelain", "--", "."],
                            capture_output=True, text=True).stdout
    assert version["dirty"] is bool(status)
    line = describe(version)
    assert line.startswith(f"git {version['commit'][:12]}")
    assert line.endswith(f"source sha256 {version['source_sha256'][:12]}")
    assert describe("0.1.0") == "0.1.0"  # results from before versions named the code


def test_dvc_yaml_spells_the_layout_convbench_study_defines() -> None:
    """dvc.yaml must spell its outputs; they are the paths convbench.study gives (the one layout)."""
    from convbench.study import load_study

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    study = load_study(ROOT / "params.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def outputs(stage: str, key: str = "") -> set[str]:
        body = stages[stage].get("do", stages[stage])
        paths = body.get("outs", []) + body.get("metrics", [])
        return {re.sub(r"\$\{(\w+)\}", lambda m: key if m[1] == "key" else str(params[m[1]]), path)
                for path in paths}

    assert outputs("download") == {study.raw_dir}
    assert outputs("prepare") == {study.prepared_path}
    assert outputs("split") == {str(Path(study.split_path(0)).parent)} == {study.splits_dir}
    for name in study.experiments:
        runs = {str(Path(study.run_dir(name, run)).parent) for run in study.runs()}
        assert outputs("run", name) == runs
        assert outputs("aggregate_experiment", name) == {study.experiment_results_path(name), study.curves_dir(name)}
    assert outputs("aggregate") == {study.study_results_path, study.scores_path, study.ablations_path}
    assert outputs("report") == {f"{study.reports_dir}/{name}" for name in
                                 ("report.html", "report.ipynb", "figures")}
