"""A network of the user's own project (convbench.user_networks): a study names its file, the study
check imports it and tries each experiment's network on a dummy batch, every error names the file
and the fix, both engines track the file, and an edit reruns the experiments that use it only."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Callable

import pytest
import yaml

from convbench.provenance import changed_files, stage_sources, training_code_version
from convbench.study import StudyError, load_study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "networks/se_resnet.py"
STUDY = """\
study: mine
dataset: digits
folds: 2
results_dir: results
networks: [networks/{file}]
recipe: {{batch_size: 64, epochs: 1}}
experiments:
  se: {{arch: {arch}, input_size: 16{knobs}}}
  mlp: {{arch: mlp, input_size: 8}}
"""


def project(tmp_path: Path, network: str | None = None, file: str = "se_resnet.py", arch: str = "se_resnet",
            knobs: str = "") -> Path:
    (tmp_path / "networks").mkdir(exist_ok=True)
    if network is None:
        shutil.copy(EXAMPLE, tmp_path / "networks" / file)
    else:
        (tmp_path / "networks" / file).write_text(network)
    (tmp_path / "study.yaml").write_text(STUDY.format(file=file, arch=arch, knobs=knobs))
    return tmp_path / "study.yaml"


def test_a_study_uses_a_network_of_its_project_like_the_zoos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = load_study(project(tmp_path, knobs=", knobs: {squeeze_excite: false, width: 0.5}"))
    assert study.networks == ("networks/se_resnet.py",)
    assert study.experiments["se"].knobs == {"squeeze_excite": False, "width": 0.5}
    # both engines track it: the run stage's files, and the training code version names it
    sources = stage_sources("run", "se_resnet")
    assert (tmp_path / "networks/se_resnet.py").resolve() in sources
    assert not any(p.name == "mlp.py" for p in sources)
    version = training_code_version("se_resnet")
    digest = hashlib.sha256((tmp_path / "networks/se_resnet.py").read_bytes()).hexdigest()
    assert version["files"]["project:networks/se_resnet.py"] == digest
    edited = {**version, "files": {**version["files"], "project:networks/se_resnet.py": "0" * 64}}
    assert changed_files(edited, version) == ["networks/se_resnet.py"]
    # an edited file is imported again, in the same process
    path = tmp_path / "networks/se_resnet.py"
    path.write_text(path.read_text().replace("STAGES = (16, 32, 64)", "STAGES = (8, 16, 32)"))
    assert load_study("study.yaml").networks == ("networks/se_resnet.py",)


BAD_FILES = {
    "missing": (None, "networks/nope.py: no such file; networks: lists Python files of your project"),
    "syntax": ("def broken(:\n", "networks/net.py:1: not valid Python ("),
    "signature": ("from convbench.models import register\n"
                  "@register('mine', default_input_size=16, min_input_size=8)\n"
                  "def mine(*, in_channels, input_size):\n    pass\n",
                  "networks/net.py: TypeError: builder for 'mine' lacks keyword(s) ['num_classes']; a builder "
                  "takes the zoo's keywords: def my_net(*, in_channels, num_classes, input_size, **knobs)"),
    "clash": ("from convbench.models import register\n"
              "@register('resnet18', default_input_size=16, min_input_size=8)\n"
              "def mine(*, in_channels, num_classes, input_size):\n    pass\n",
              "networks/net.py: ValueError: model 'resnet18' is already registered; that name is the zoo's"),
    "nothing": ("import math\n", "networks/net.py: registers no network; decorate a builder with @register("),
    "dummy": ("import torch\nfrom convbench.models import register\n"
              "@register('mine', default_input_size=16, min_input_size=8)\n"
              "def mine(*, in_channels, num_classes, input_size):\n"
              "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, num_classes))\n",
              "networks/net.py: network 'mine' fails on a dummy batch of 2 x 1 x 16 x 16 (experiments.se): "
              "RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    "shape": ("import torch\nfrom convbench.models import register\n"
              "@register('mine', default_input_size=16, min_input_size=8)\n"
              "def mine(*, in_channels, num_classes, input_size):\n"
              "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_size ** 2, 3))\n",
              "networks/net.py: network 'mine' returns (2, 3) for a dummy batch of 2 x 1 x 16 x 16 "
              "(experiments.se); expected (2, 10): one logit per class"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_network_file_that_cannot_be_used_is_refused_naming_it(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convbench: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    text, message = BAD_FILES[case]
    if text is None:
        project(tmp_path, file="se_resnet.py")
        (tmp_path / "study.yaml").write_text(STUDY.format(file="nope.py", arch="se_resnet", knobs=""))
    else:
        project(tmp_path, text, file="net.py", arch="mine")
    assert convbench(["study", "--study", "study.yaml", "--no-estimate"]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    if case in ("syntax", "signature", "clash", "nothing"):
        from convbench.models import names

        assert "mine" not in names()  # a file that fails to import leaves nothing registered


def test_convbench_study_says_it_imported_the_projects_networks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convbench: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    project(tmp_path)
    assert convbench(["study", "--study", "study.yaml", "--no-estimate"]) == 0
    assert ("  networks of the project: se_resnet (networks/se_resnet.py); imported to check them, with torch"
            in capsys.readouterr().out)


def test_a_bad_knob_of_a_project_network_names_the_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudyError, match=r"experiments.se.knobs: network 'se_resnet' does not accept knob\(s\) colour"):
        load_study(project(tmp_path, knobs=", knobs: {colour: 1}"))
    with pytest.raises(StudyError, match="squeeze_excite must be true or false, got 'yes'"):
        load_study(project(tmp_path, knobs=", knobs: {squeeze_excite: 'yes'}"))


def test_models_and_summary_list_a_project_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   convbench: Callable[[list[str]], int],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    project(tmp_path)
    assert convbench(["models", "--networks", "networks/se_resnet.py"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("se_resnet"))
    assert "80,582" in line and line.endswith("(networks/se_resnet.py)")
    assert convbench(["summary", "se_resnet", "--networks", "networks/se_resnet.py", "--set",
                      "squeeze_excite=false", "--input-size", "28"]) == 0
    assert "params:      77,754" in capsys.readouterr().out


def test_check_links_a_project_network_for_dvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               convbench: Callable[[list[str]], int],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    project(tmp_path)
    (tmp_path / "workflow/networks").mkdir(parents=True)
    assert convbench(["check", "--study", "study.yaml", "--stamp", "stamp.txt"]) == 0
    link = tmp_path / "workflow/networks/se_resnet.py"
    assert link.is_symlink() and link.resolve() == (tmp_path / "networks/se_resnet.py").resolve()
    assert "linked workflow/networks/se_resnet.py" in capsys.readouterr().out
    assert convbench(["check", "--study", "study.yaml", "--stamp", "stamp.txt"]) == 0  # once
    assert "linked" not in capsys.readouterr().out
    link.unlink()
    link.write_text("# not a link\n")
    assert convbench(["check", "--study", "study.yaml", "--stamp", "stamp.txt"]) == 1
    assert ("workflow/networks/se_resnet.py: is there already and is not a link to networks/se_resnet.py"
            in capsys.readouterr().err)


# ------------------------------------------------------------------------------ both engines

ENGINE_STUDY = {
    "study": "mine", "description": "a network of the project's own on a folder of its own images",
    "dataset": "shapes", "images": {"size": 16, "channels": 1},
    "folds": 3, "repeats": 1, "seed": 0, "seeds": [0], "threads": 1, "results_dir": "results",
    "reports_dir": "reports", "networks": ["networks/se_resnet.py"],
    "recipe": {"optimizer": "adamw", "lr": 0.01, "batch_size": 16, "epochs": 2},
    "experiments": {
        "se": {"arch": "se_resnet", "input_size": 16, "knobs": {"width": 0.25}},
        "se_plain": {"arch": "se_resnet", "input_size": 16, "knobs": {"width": 0.25, "squeeze_excite": False}},
        "lenet": {"arch": "lenet", "input_size": 16, "knobs": {"activation": "relu", "pool": "max"}},
    },
    "ablations": {"squeeze_excite": {"baseline": "se_plain", "treatment": "se"}},
}


@pytest.mark.slow  # a smoke run under Snakemake, the study under DVC, two edits (about 4 min)
def test_your_network_and_your_images_end_to_end_under_both_engines(tmp_path: Path) -> None:
    """The README's "Your network, your data", on a generated image folder: a smoke run under
    Snakemake, the whole study under DVC; an edit of the network file reruns its experiments only
    (both engines' plans), an added image everything from the data on."""
    import json

    from test_imagefolder import write_images
    from test_pipeline import copy_of, dvc_changed_stages, make_project, planned_jobs, planned_runs, run

    project = tmp_path / "project"
    make_project(project, ENGINE_STUDY, extra={"networks/se_resnet.py": EXAMPLE})
    write_images(project / "images/shapes", per_class=12)
    run(["snakemake", "--cores", "2", "--config", "smoke=1"], project)
    assert (project / "reports-smoke/report.html").is_file()

    out = run(["dvc", "repro"], project).stdout
    assert "Running stage 'run@se'" in out and (project / "reports/report.html").is_file()
    assert (project / "workflow/networks/se_resnet.py").resolve() == (project / "networks/se_resnet.py").resolve()
    metrics = json.loads((project / "results/se/r0-fold0-seed0/metrics.json").read_text())
    assert metrics["dataset"] == "shapes" and metrics["test"]["n"] == 8  # ceil(20 % of 3 x 12), held out once
    assert "project:networks/se_resnet.py" in metrics["code_version"]["files"]
    page = (project / "reports/report.html").read_text(encoding="utf-8")
    assert "se_resnet (width=0.25, squeeze_excite=False)" in page and "circle" in page
    assert dvc_changed_stages(project) == set()

    edited = copy_of(project, tmp_path)
    with open(edited / "networks/se_resnet.py", "a") as file:
        file.write("# an edit\n")
    assert dvc_changed_stages(edited) == {"run@se", "run@se_plain"}
    assert planned_runs(edited) == ["se", "se_plain"]
    params = edited / "params.yaml"  # other images: settings: the data is prepared again
    config = yaml.safe_load(params.read_text())
    config["images"]["size"] = 12
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    assert "download" in dvc_changed_stages(edited) and "download" in planned_jobs(edited)

    for name in ("circle", "cross", "square"):  # one more image in each class
        shutil.copy(project / "images/shapes" / name / "001.png", project / "images/shapes" / name / "extra.png")
    assert dvc_changed_stages(project) == {"download"}
    out = run(["dvc", "repro"], project).stdout
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    assert ran[:3] == ["download", "prepare", "split"] and {"run@se", "run@se_plain", "run@lenet", "report"} <= set(ran)
