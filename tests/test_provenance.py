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


@pytest.mark.parametrize("stage", ["check", "download", "prepare", "split", "aggregate", "report"])
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
    # the zoo's, and the bundled example's network of its own project (conf/study/your_network.yaml)
    assert sorted(p.stem for p in links.iterdir()) == sorted([*names(), "se_resnet"])
    assert (links / "se_resnet.py").resolve() == ROOT / "networks/se_resnet.py"
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
    git = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%H", "--", "src/convbench"],
                         capture_output=True, text=True)
    if git.returncode != 0:
        pytest.skip("not a git work tree")
    assert version["source_commit"] == git.stdout.strip()  # the code's last commit, not HEAD
    status = subprocess.run(["git", "-C", str(PACKAGE_DIR), "status", "--porcelain", "--", "."],
                            capture_output=True, text=True).stdout
    assert version["dirty"] is bool(status)
    line = describe(version)
    assert line.startswith(f"git {version['source_commit'][:12]}")
    assert line.endswith(f"source sha256 {version['source_sha256'][:12]}")
    assert describe("0.1.0") == "0.1.0"  # results from before versions named the code
    assert describe({"commit": "a" * 40, "dirty": False, "source_sha256": "b" * 64}) == \
        f"git {'a' * 12}, source sha256 {'b' * 12}"  # from before they named the code's commit


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
        runs = {str(Path(study.run_dir(name, run)).parent) for run in study.runs(name)}
        assert outputs("run", name) == runs
        assert outputs("aggregate_experiment", name) == {study.experiment_results_path(name), study.curves_dir(name)}
    assert outputs("aggregate") == {study.study_results_path, study.scores_path, study.ablations_path}
    assert outputs("report") == {f"{study.reports_dir}/{name}" for name in
                                 ("report.html", "report.ipynb", "figures")}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def code_version_of(checkout: Path) -> dict:
    """``code_version()`` as the checkout's own code reports it, run from the checkout."""
    import json
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    out = subprocess.run([sys.executable, "-c", "import json; from convbench.provenance import "
                          "code_version; print(json.dumps(code_version()))"],
                         cwd=checkout, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_the_code_version_names_the_code_not_the_repositorys_head(tmp_path: Path) -> None:
    """Committing dvc.lock, the README or a study file (DVC's normal workflow) changes no byte of
    what a rerun records; a commit of the sources does."""
    checkout = tmp_path / "clone"
    shutil.copytree(PACKAGE_DIR, checkout / "src/convbench", ignore=shutil.ignore_patterns("__pycache__"))
    git(checkout, "init", "-q")
    git(checkout, "config", "user.email", "test@convbench.local")
    git(checkout, "config", "user.name", "convbench test")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", "the code")
    code_commit = git(checkout, "rev-parse", "HEAD")
    before = code_version_of(checkout)
    assert before == {"source_commit": code_commit, "dirty": False,
                      "source_sha256": source_sha256(checkout / "src/convbench")}
    for name in ("dvc.lock", "README.md", "params.yaml"):
        (checkout / name).write_text(f"{name}\n")
        git(checkout, "add", name)
        git(checkout, "commit", "-qm", f"results: {name}")
    assert git(checkout, "rev-parse", "HEAD") != code_commit
    assert code_version_of(checkout) == before

    with open(checkout / "src/convbench/models/mlp.py", "a") as file:
        file.write("# an edit\n")
    edited = code_version_of(checkout)
    assert edited["source_commit"] == code_commit and edited["dirty"] is True
    assert edited["source_sha256"] != before["source_sha256"]
    git(checkout, "commit", "-qam", "an edit of the code")
    assert code_version_of(checkout) == {**edited, "source_commit": git(checkout, "rev-parse", "HEAD"),
                                         "dirty": False}


@pytest.fixture
def second_clone(tmp_path: Path) -> Path:
    """Another checkout of the project, while the importable convbench is this one's (an editable
    install shared by two clones)."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("Snakefile", "params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, clone / name)
    shutil.copytree(ROOT / "workflow", clone / "workflow", symlinks=True)
    shutil.copytree(ROOT / "conf", clone / "conf")
    shutil.copytree(PACKAGE_DIR, clone / "src/convbench", ignore=shutil.ignore_patterns("__pycache__"))
    return clone


def run_in(clone: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    import os
    import sys

    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONVBENCH_ALLOW_FOREIGN_INSTALL")}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    return subprocess.run(args, cwd=clone, env={**environment, **env}, capture_output=True, text=True)


@pytest.mark.slow  # it starts Snakemake and convbench in a second checkout (about 15 s)
def test_a_checkout_refuses_to_run_another_checkouts_code(second_clone: Path) -> None:
    """Run from a checkout, a command stops, naming both paths and the fix, when the convbench that
    Python imports is not the checkout's src/: Snakemake would track one and run the other."""
    own, imported = second_clone / "src/convbench", PACKAGE_DIR
    for args in (["convbench", "study"], ["snakemake", "--dry-run", "--cores", "1"]):
        proc = run_in(second_clone, args)
        said = proc.stdout + proc.stderr
        assert proc.returncode != 0, said
        assert f"this checkout's code is {own}" in said and f"imports is {imported}" in said
        assert f"'pip install -e .' in {second_clone}" in said
        assert "CONVBENCH_ALLOW_FOREIGN_INSTALL=1" in said
    # the opt-out, for a package installed on purpose; and its own code always runs
    # (--no-estimate: the check comes first; the estimate would time real training steps for a minute)
    for env in ({"CONVBENCH_ALLOW_FOREIGN_INSTALL": "1"}, {"PYTHONPATH": str(second_clone / "src")}):
        proc = run_in(second_clone, ["convbench", "study", "--no-estimate"], **env)
        assert proc.returncode == 0 and proc.stdout.startswith("study digits:"), proc.stdout + proc.stderr
    assert run_in(ROOT, ["convbench", "study", "--help"]).returncode == 0  # this checkout, its own code
