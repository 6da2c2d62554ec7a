"""Reproduction judged by what a result holds: the training code version covers training's files
only, ``convbench compare`` says identical, reproduced within noise, or what is off, for a finished
study or a part of one, and ``--write`` publishes only a complete, aggregated, consistent study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import TINY_TRAIN_ARGS
from convbench.compare import standard_error, tolerance
from convbench.expected import cpu_slug, read_run
from convbench.provenance import PACKAGE_DIR, changed_files, stage_sources, training_code_version

# two commands in one process: the arguments of the first, "--then", those of the second
RUN = ("import sys; from convbench import cli; i = sys.argv.index('--then'); "
       "sys.exit(cli.main(sys.argv[1:i]) or cli.main(sys.argv[i + 1:]))")


# ------------------------------------------------------------------- the training's code version


def test_the_training_code_version_covers_the_files_the_engines_track() -> None:
    version = training_code_version("lenet")
    files = {f"{p.relative_to(PACKAGE_DIR).as_posix()}" for p in stage_sources("run", "lenet")}
    assert set(version["files"]) == files
    assert {"train.py", "evaluate.py", "models/lenet.py"} <= files
    assert not any(f.startswith("report/") for f in files) and "models/resnet.py" not in files
    assert "stability.py" not in files and "compare.py" not in files
    assert version["scope"] == "convbench run, network lenet"
    assert training_code_version("resnet18")["files"].keys() - files == {"models/resnet.py"}
    edited = {**version, "files": {**version["files"], "train.py": "0" * 64}}
    assert changed_files(edited, version) == ["src/convbench/train.py"]
    assert changed_files({"source_sha256": "x"}, version) is None  # the whole package's, as before


def package_copy(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(PACKAGE_DIR, root / "src/convbench", ignore=shutil.ignore_patterns("__pycache__"))
    return root / "src"


def train_with(src: Path, out: Path, digits_npz: Path, digits_split: Path) -> tuple[bytes, bytes]:
    """``convbench train`` then ``evaluate`` in a process that imports the code under ``src``."""
    data = ["--data", str(digits_npz), "--split", str(digits_split)]
    argv = ["train", *data, "--fold", "0", *TINY_TRAIN_ARGS, "--recipe", "epochs=2",
            "--out-dir", str(out)]
    evaluate = ["evaluate", *data, "--checkpoint", str(out / "model.pt"), "--out", str(out / "metrics.json")]
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", RUN, *argv, "--then", *evaluate], env=env, cwd=out.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return (out / "model.pt").read_bytes(), (out / "metrics.json").read_bytes()


@pytest.mark.slow  # four trainings in fresh processes (about 20 s)
def test_an_edit_training_never_runs_leaves_a_rerun_byte_identical(
    tmp_path: Path, digits_npz: Path, digits_split: Path
) -> None:
    src = package_copy(tmp_path, "copy")
    first = train_with(src, tmp_path / "first", digits_npz, digits_split)
    # a comment in a report module and in a module no training imports: the same bytes
    for module in ("report/tables.py", "stability.py"):
        with open(src / "convbench" / module, "a") as file:
            file.write("# an edit training never runs\n")
    assert train_with(src, tmp_path / "second", digits_npz, digits_split) == first

    # a comment in training's own code: other bytes (the record), the same content
    with open(src / "convbench/train.py", "a") as file:
        file.write("# a comment in training's code\n")
    commented = train_with(src, tmp_path / "commented", digits_npz, digits_split)
    assert commented[0] != first[0] and commented[1] != first[1]
    a, b = read_run(tmp_path / "first"), read_run(tmp_path / "commented")
    assert (a["weights"], a["metrics"]) == (b["weights"], b["metrics"])
    assert changed_files(b["made_with"]["code_version"], a["made_with"]["code_version"]) == ["src/convbench/train.py"]

    # a real change of training's arithmetic: other weights
    train = src / "convbench/train.py"
    train.write_text(train.read_text().replace("scaler.scale(loss).backward()", "scaler.scale(2 * loss).backward()"))
    changed = train_with(src, tmp_path / "changed", digits_npz, digits_split)
    c = read_run(tmp_path / "changed")
    assert changed[0] != first[0] and c["weights"] != a["weights"] and c["metrics"] != a["metrics"]


def test_the_cpu_record_names_the_generation_and_both_instruction_sets() -> None:
    from convbench.device import describe_cpu

    cpu = describe_cpu()
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["vendor"] and cpu["family"] and cpu["model_number"]
    if Path("/proc/cpuinfo").is_file() and "vendor_id" in Path("/proc/cpuinfo").read_text():
        assert cpu["vendor"] in ("GenuineIntel", "AuthenticAMD") and cpu["family"].isdigit()
    if torch.backends.mkldnn.is_available():
        assert cpu["onednn_isa"].startswith("Intel "), cpu  # oneDNN's own words, e.g. "Intel AVX2"
    assert cpu_slug(cpu, 1).endswith(f"-{cpu['capability'].lower()}-1thread")


def test_the_oneDNN_cap_is_recorded() -> None:
    code = "from convbench.device import describe_cpu; print(describe_cpu()['onednn_isa'])"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "SSE41"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "Intel SSE4.1", done.stdout + done.stderr


def test_an_experiment_is_off_only_after_holms_adjustment_over_all_of_them() -> None:
    """34 comparisons at 5 % each would call about two off by chance: one at p 0.03 among many is
    within noise, one far off is not."""
    from convbench.compare import Agreement
    from convbench.stats import holm

    def row(name: str, difference: float) -> Agreement:
        return Agreement(name, "val_acc", 5, 0.9 + difference, 0.9, 0.01, 4, 0.0)

    rows = [row(f"e{i}", 0.0) for i in range(33)] + [row("close", 0.0316)]  # t = 3.16, df 4: p = 0.034
    assert 0.03 < rows[-1].p < 0.04
    assert all(p >= 0.05 for p in holm([r.p for r in rows]))
    rows[0] = row("far", 0.2)  # t = 20: p = 4e-5, Holm-adjusted 0.0013
    adjusted = holm([r.p for r in rows])
    assert adjusted[0] < 0.05 and adjusted[-1] >= 0.05


def test_the_tolerance_is_the_expected_runs_spread() -> None:
    from scipy import stats

    expected = [0.90, 0.92, 0.94]
    assert tolerance(expected, 3, 1000) == pytest.approx(stats.t.ppf(0.975, 2) * 0.02 * (2 / 3) ** 0.5)
    assert tolerance(expected, 1, 1000) == pytest.approx(tolerance(expected, 3, 1000) * 3 ** 0.5)
    assert tolerance([0.9, 0.9], 2, 100) == pytest.approx(stats.t.ppf(0.975, 1) * 0.01)  # one image
    assert tolerance([0.9], 1, 100) != tolerance([0.9], 1, 100)  # NaN: one run has no spread
    assert standard_error(expected, 3, 1000) == pytest.approx(0.02 * (2 / 3) ** 0.5)


# -------------------------------------------------------------------------- compare, end to end

TINY = """\
study: tiny
dataset: digits
folds: 3
seed: 0
threads: 1
results_dir: results
reports_dir: reports
recipe: {optimizer: adamw, lr: 0.01, batch_size: 64, epochs: 3, schedule: cosine, warmup_epochs: 0}
experiments:
  lenet: {arch: lenet, input_size: 16, knobs: {activation: relu, pool: max}}
  lenet_sigmoid: {arch: lenet, input_size: 16}
  mlp: {arch: mlp, input_size: 8}
ablations:
  activation: {baseline: lenet_sigmoid, treatment: lenet}
"""
EXPERIMENTS = ("lenet", "lenet_sigmoid", "mlp")


def convbench_cli(project: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "convbench.cli", *argv], cwd=project, capture_output=True,
                          text=True, env={**os.environ, **env})
    return done


def run_study(project: Path, experiments: tuple[str, ...] = EXPERIMENTS, **env: str) -> None:
    steps = [["download", "--study", "study.yaml"], ["prepare", "--study", "study.yaml"],
             ["split", "--study", "study.yaml"]]
    steps += [["run", "--study", "study.yaml", "--experiment", e] for e in experiments]
    steps += [["aggregate", "--study", "study.yaml", "--experiment", e, "--out", f"results/_experiments/{e}.json"]
              for e in experiments]
    steps += [["aggregate", "--study", "study.yaml", "--out", "results/study.json", "--ablations-out",
               "results/ablations.json"]]
    for step in steps:
        done = convbench_cli(project, *step, **env)
        assert done.returncode == 0, (step, done.stderr)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny digits study, finished, aggregated and its expected results written (about 25 s)."""
    project = tmp_path_factory.mktemp("published")
    (project / "study.yaml").write_text(TINY)
    run_study(project)
    done = convbench_cli(project, "compare", "--study", "study.yaml", "--write")
    assert done.returncode == 0 and done.stdout.startswith("wrote conf/expected/tiny/"), done.stderr
    return project


def project_copy(published: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(published, copy)
    return copy


def lower_cap() -> dict[str, str]:
    """Caps below this CPU's own instruction sets, so that its kernels round otherwise: AVX2 on an
    AVX-512 machine (as the issue asks), no vector extensions on an AVX2 one."""
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        return {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    return {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "SSE4_2"}


@pytest.mark.slow
def test_compare_identical_after_write(published: Path) -> None:
    done = convbench_cli(published, "compare", "--study", "study.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical: 9 runs' weights and metrics and all 1 ablations' verdicts match conf/expected/tiny/" in done.stdout
    assert "  code version: the same" in done.stdout and "  CPU type: the same" in done.stdout
    document = json.loads(next((published / "conf/expected/tiny").glob("*.json")).read_text())
    assert document["format"] == 2 and len(document["runs"]) == 9
    run = document["runs"]["mlp/r0-fold0-seed0"]
    assert 0.5 < run["val_acc"] <= 1 and run["test_images"] == 450 and len(run["weights"]) == 64
    ablation = json.loads((published / "results/ablations.json").read_text())["ablations"]["activation"]
    assert document["verdicts"] == {"activation": {k: ablation[k]["verdict"] for k in ("val_acc", "test_acc")}}


@pytest.mark.slow  # the tiny study again, under capped instruction sets (about 20 s)
def test_a_capped_rerun_is_reproduced_within_noise_and_a_changed_experiment_is_named(
    published: Path, tmp_path: Path
) -> None:
    project = project_copy(published, tmp_path)
    run_study(project, **lower_cap())
    done = convbench_cli(project, "compare", "--study", "study.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 of 9 runs identical" in done.stdout and "\nidentical" not in done.stdout
    assert "reproduced within noise: 3 of 3 experiments, 1 of 1 verdicts" in done.stdout
    assert "  CPU type: differs: yours" in done.stdout
    exact = convbench_cli(project, "compare", "--study", "study.yaml", "--exact")
    assert exact.returncode == 1 and "reproduced within noise" in exact.stdout

    study = project / "study.yaml"
    study.write_text(study.read_text().replace("mlp: {arch: mlp, input_size: 8}",
                                               "mlp: {arch: mlp, input_size: 8, recipe: {lr: 0.0002}}"))
    assert convbench_cli(project, "run", "--study", "study.yaml", "--experiment", "mlp").returncode == 0
    done = convbench_cli(project, "compare", "--study", "study.yaml")
    assert done.returncode == 1
    last = done.stdout.splitlines()[-1]
    assert last.startswith("not reproduced: 2 of 3 experiments, 1 of 1 verdicts; off: mlp (validation -"), last
    assert "Holm p" in last
    assert "lenet (" not in last


@pytest.mark.slow
def test_a_partial_study_is_checked_as_far_as_it_goes(published: Path, tmp_path: Path) -> None:
    project = project_copy(published, tmp_path)
    for run in ("mlp/r0-fold2-seed0", "lenet/r0-fold1-seed0"):
        shutil.rmtree(project / "results" / run)
    done = convbench_cli(project, "compare", "--study", "study.yaml")
    assert done.returncode == 1, done.stdout
    assert "tiny: 7 of 9 runs finished" in done.stdout
    assert "identical so far: 7 runs' weights and metrics and the ablations' verdicts not checked" in done.stdout
    assert done.stdout.rstrip().endswith(
        "incomplete: 2 of 9 runs missing (lenet/r0-fold1-seed0, mlp/r0-fold2-seed0); checked the runs that exist")
    refused = convbench_cli(project, "compare", "--study", "study.yaml", "--write")
    assert refused.returncode == 1
    assert "the study 'tiny' is not complete: 2 of 9 runs missing (first: lenet/r0-fold1-seed0)" in refused.stderr


@pytest.mark.slow
def test_write_publishes_only_a_consistent_aggregated_study_to_its_own_path(published: Path, tmp_path: Path) -> None:
    project = project_copy(published, tmp_path)
    target = next((project / "conf/expected/tiny").glob("*.json"))
    before = target.read_bytes()

    model = project / "results/mlp/r0-fold1-seed0/model.pt"
    kept = model.read_bytes()
    model.write_bytes(kept[: len(kept) // 2])  # truncated
    done = convbench_cli(project, "compare", "--study", "study.yaml", "--write")
    assert done.returncode == 1 and "results/mlp/r0-fold1-seed0/model.pt: is not the model its metrics.json scored" in done.stderr
    shutil.copy(project / "results/mlp/r0-fold0-seed0/model.pt", model)  # another fold's, swapped in
    assert "is not the model its metrics.json scored" in convbench_cli(project, "compare", "--study", "study.yaml", "--write").stderr
    compared = convbench_cli(project, "compare", "--study", "study.yaml")
    assert compared.returncode == 1 and "mlp/r0-fold1-seed0: its model.pt is not the model its metrics.json scored" in compared.stdout
    model.write_bytes(kept)

    results = project / "results/study.json"
    document = json.loads(results.read_text())
    document["experiments"]["mlp"]["per_run"][0]["val_acc"] = 0.5  # aggregated before a retraining
    results.write_text(json.dumps(document))
    done = convbench_cli(project, "compare", "--study", "study.yaml", "--write")
    assert done.returncode == 1 and "results/study.json: does not hold the run mlp/r0-fold0-seed0 as it is now" in done.stderr
    results.unlink()
    done = convbench_cli(project, "compare", "--study", "study.yaml", "--write")
    assert done.returncode == 1 and "results/study.json: missing; expected the study's results" in done.stderr
    run_study(project, experiments=())  # aggregate again

    other = project / "conf/expected/digits/x.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"study": "digits", "runs": {}, "verdicts": {}, "made_with": []}))
    done = convbench_cli(project, "compare", "--study", "study.yaml", "--write", "--expected", str(other))
    assert done.returncode == 1 and f"{other}: not a file of the expected results of the study 'tiny'" in done.stderr
    mine = project / "conf/expected/tiny.json"
    mine.write_text(json.dumps({"study": "digits", "runs": {}, "verdicts": {}, "made_with": []}))
    done = convbench_cli(project, "compare", "--study", "study.yaml", "--write", "--expected", str(mine))
    assert done.returncode == 1 and f"{mine}: holds the expected results of 'digits', not of 'tiny'" in done.stderr
    assert json.loads(other.read_text())["study"] == "digits" and target.read_bytes() == before
    done = convbench_cli(project, "compare", "--study", "study.yaml", "--write", "--expected", str(other), "--force")
    assert done.returncode == 0 and json.loads(other.read_text())["study"] == "tiny"


@pytest.mark.slow
def test_a_failed_write_leaves_the_published_file_as_it_was(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convbench: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import errno

    from convbench import _io

    project = project_copy(published, tmp_path)
    target = next((project / "conf/expected/tiny").glob("*.json"))
    before = target.read_bytes()
    monkeypatch.chdir(project)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    assert convbench(["compare", "--study", "study.yaml", "--write"]) == 1
    err = capsys.readouterr().err
    assert f"{target.relative_to(project)}: disk full (No space left on device) while writing it; nothing was lost" in err
    assert target.read_bytes() == before and not list(target.parent.glob(".*.tmp"))


@pytest.fixture
def expected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny study in an empty project, and where its expected file goes (not written)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(TINY)
    path = tmp_path / "conf/expected/tiny/a.json"
    path.parent.mkdir(parents=True)
    return path


def test_compare_names_an_expected_file_it_cannot_read(expected: Path, convbench: Callable[[list[str]], int],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "": "not valid JSON (Expecting value at line 1)",
        "[1, 2]": "a JSON list, not an object",
        '{"study": "tiny", "runs": {}, "verdicts": {}}': "no 'made_with' (list)",
        '{"study": "tiny", "runs": {"a/r0": 3}, "verdicts": {}, "made_with": []}': "run 'a/r0' lacks model.pt, metrics.json",
        '{"format": 2, "study": "tiny", "runs": {"a/r0": {"weights": "x"}}, "verdicts": {}, "made_with": []}':
            "run 'a/r0' lacks weights, metrics, val_acc, test_acc",
        '{"study": "digits", "runs": {}, "verdicts": {}, "made_with": []}': "expected results of the study 'digits', not 'tiny'",
        '{"format": 2, "study": "tiny", "runs": {"a/r0": {"weights": "x", "metrics": "y", "val_acc": "0.9", '
        '"test_acc": 0.9}}, "verdicts": {}, "made_with": []}': "run 'a/r0' has an accuracy that is not a number from 0 to 1",
        '{"study": "tiny", "runs": {}, "verdicts": {}, "made_with": [1]}': "an entry of 'made_with' that is not an object",
        '{"study": "tiny", "runs": {}, "verdicts": {"a": "better"}, "made_with": []}': "a verdict that is not an object",
        '{"format": 3, "study": "tiny", "runs": {}, "verdicts": {}, "made_with": []}': "format 3, which this version",
    }
    for text, problem in cases.items():
        expected.write_text(text)
        assert convbench(["compare", "--study", "study.yaml"]) == 1, text
        err = capsys.readouterr().err
        assert err.startswith(f"convbench compare: error: {Path('conf/expected/tiny/a.json')}: {problem}"), err
    expected.unlink()
    assert convbench(["compare", "--study", "study.yaml"]) == 1
    assert "no expected results for the study 'tiny'" in capsys.readouterr().err


def test_compare_names_a_metrics_file_it_cannot_read(tmp_path: Path, expected: Path,
                                                     convbench: Callable[[list[str]], int],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    expected.write_text('{"format": 2, "study": "tiny", "runs": {}, "verdicts": {}, "made_with": []}')
    run = tmp_path / "results/mlp/r0-fold0-seed0"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"weights")
    for text, problem in (("{", "not valid JSON"), ("[]", "a JSON list; expected an object"),
                          ('{"val": {"accuracy": 0.9}}', "no test.accuracy")):
        (run / "metrics.json").write_text(text)
        assert convbench(["compare", "--study", "study.yaml"]) == 1
        err = capsys.readouterr().err
        assert f"error: {Path('results/mlp/r0-fold0-seed0/metrics.json')}: {problem}" in err, err


def test_an_expected_file_of_format_1_is_matched_by_the_files_bytes(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Expected results written before format 2 (conf/expected/<study>.json, the sha256 of each
    run's files) still say identical for the same bytes, and say why they cannot judge others."""
    import hashlib

    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(TINY.replace("ablations:\n  activation: {baseline: lenet_sigmoid, treatment: lenet}\n", ""))
    runs = {}
    for experiment in EXPERIMENTS:
        for fold in range(3):
            run = tmp_path / "results" / experiment / f"r0-fold{fold}-seed0"
            run.mkdir(parents=True)
            (run / "model.pt").write_bytes(f"{experiment} {fold}".encode())
            (run / "metrics.json").write_text(json.dumps({"val": {"accuracy": 0.9}, "test": {"accuracy": 0.8},
                                                          "weights_sha256": {"model": experiment}}))
            runs[f"{experiment}/r0-fold{fold}-seed0"] = {
                name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in ("model.pt", "metrics.json")}
    legacy = tmp_path / "conf/expected/tiny.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"study": "tiny", "runs": runs, "verdicts": {}, "made_with": [{"cpu": None}]}))
    assert convbench(["compare", "--study", "study.yaml"]) == 0
    assert "identical: 9 runs' weights and metrics and all 0 ablations' verdicts match" in capsys.readouterr().out
    (tmp_path / "results/mlp/r0-fold1-seed0/model.pt").write_bytes(b"other")
    assert convbench(["compare", "--study", "study.yaml"]) == 1
    out = capsys.readouterr().out
    assert "8 of 9 runs identical" in out and "no expected file holds per-run numbers" in out
