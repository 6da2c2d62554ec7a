"""Issue 40: the commands that read a study or write beside it, tried as a hostile user would.

Every file they read is named in its error; what they write is written atomically; one
``convbench stability`` at a time, never into the pipeline's results; seeds checked with the study;
``--jobs`` at least 1; flips on handwriting warned; a hand-run ``run``/``train``/``evaluate`` does
not replace a finished run of other settings without ``--replace``; ``gpu_check.py`` refuses an
unusable ``--out`` before measuring and prints what it cannot save.
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

from benchmark_scripts import ROOT, load_benchmark
from convbench import _io, stability
from convbench.recipe import flip_warnings
from convbench.study import (
    SPLIT_SEED_MAX,
    StudyError,
    load_study,
    max_train_seed,
    parse_study,
    read_study_file,
)
from test_evaluate import STUDY  # a one-experiment study: lenet, 3 folds, 2 epochs

ABLATION_STUDY = """\
study: pair
dataset: {dataset}
folds: 3
seed: 0
results_dir: {results}
recipe: {{epochs: 2, batch_size: 64, lr: 0.1, augmentation: {augmentation}}}
experiments:
  relu: {{arch: lenet, knobs: {{activation: relu}}, input_size: 16}}
  sigmoid: {{arch: lenet, input_size: 16}}
ablations:
  activation: {{baseline: sigmoid, treatment: relu}}
"""


def pair_study(root: Path, dataset: str = "digits", augmentation: str = "none") -> Path:
    path = root / "pair.yaml"
    path.write_text(ABLATION_STUDY.format(dataset=dataset, results=root / "results", augmentation=augmentation))
    return path


# 1. Every file read is named, with what was expected.

STUDY_FAULTS = {
    "not YAML": (lambda p: p.write_text("study: [tiny\n"), "not valid YAML: "),
    "a list": (lambda p: p.write_text("- 1\n- 2\n"), "must be a mapping of keys (study, dataset, folds, experiments, ...), got list [1, 2]"),
    "text": (lambda p: p.write_text("just text\n"), "must be a mapping of keys (study, dataset, folds, experiments, ...), got str 'just text'"),
    "empty": (lambda p: p.write_text(""), "is empty; expected a study: a mapping with study, dataset, folds and experiments"),
    "a directory": (lambda p: p.mkdir(), "is a directory; expected a study file (YAML)"),
    "missing": (lambda p: None, "cannot be read (No such file or directory); expected a study file (YAML)"),
    "not UTF-8": (lambda p: p.write_bytes(b"study: \xff\xfe\n"), "is not text (not UTF-8); expected a study file (YAML)"),
}


@pytest.mark.parametrize("command", [["study", "--no-estimate"], ["check", "--stamp", "stamp.txt"], ["stability"]],
                         ids=["study", "check", "stability"])
@pytest.mark.parametrize("fault", list(STUDY_FAULTS))
def test_a_broken_study_file_is_one_line_naming_it(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    command: list[str], fault: str,
) -> None:
    make, message = STUDY_FAULTS[fault]
    path = tmp_path / "params.yaml"
    make(path)
    with chdir(tmp_path):
        assert convbench([command[0], "--study", str(path), *command[1:]]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench {command[0]}: error: {path}: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "stamp.txt").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object with an 'ablations' mapping"),
    ('{"ablations": {"activation": {"val_acc": {"difference": 1.0}}}}',
     "ablations.activation.val_acc: expected its difference, ci_low, ci_high, p_holm and verdict"),
])
def test_a_seed_sets_ablations_that_are_not_aggregates_are_refused_naming_the_file(
    tmp_path: Path, content: str, message: str,
) -> None:
    path = tmp_path / "ablations.json"
    path.write_text(content)
    with pytest.raises(stability.StabilityError) as caught:
        stability.read_ablations(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    with pytest.raises(stability.StabilityError, match=f"^{tmp_path / 'gone.json'}: cannot be read"):
        stability.read_ablations(tmp_path / "gone.json")


# 2. Atomic writes: a failed write leaves the old file.

def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "verdicts.json"
    _io.write_json_atomic(target, [{"verdict": "old"}])

    def fail(_fd: int) -> None:  # the bytes are written; the disk refuses them
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output error"):
        _io.write_json_atomic(target, [{"verdict": "new"}])
    with pytest.raises(OSError):
        _io.write_text_atomic(target, "new")
    assert json.loads(target.read_text()) == [{"verdict": "old"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verdicts.json"]


# 3. One stability at a time, never into the pipeline's results.

def test_a_second_stability_is_refused_at_once_naming_the_first(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
) -> None:
    study = pair_study(tmp_path)
    lock = tmp_path / "results/_stability.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from convbench.stability import one_stability\n"
         f"with one_stability([Path({str(lock)!r})]):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline() == "held\n"
        with chdir(tmp_path):
            assert convbench(["stability", "--study", str(study), "--seed-sets", "1"]) == 1
    finally:
        holder.communicate("")
    err = capsys.readouterr().err
    assert err.startswith(f"convbench stability: error: {lock}: process {holder.pid} (")
    assert "one_stability" in err and "is already running convbench stability" in err
    assert not (tmp_path / "results/_stability/seeds1.yaml").exists()  # nothing written, nothing run


@pytest.mark.parametrize("out_dir", ["results", "results/relu", "reports/x", "data"])
def test_stability_refuses_an_out_dir_in_the_pipelines_results(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str], out_dir: str,
) -> None:
    study = pair_study(tmp_path)
    with chdir(tmp_path):
        assert convbench(["stability", "--study", str(study), "--out-dir", out_dir]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench stability: error: --out-dir {out_dir}: is ")
    assert "where the pipeline (Snakemake, DVC) keeps its results" in err and "_stability" in err
    assert not (tmp_path / out_dir / "seeds0.yaml").exists()


def test_the_default_and_stability_named_out_dirs_are_allowed(tmp_path: Path) -> None:
    study = load_study(pair_study(tmp_path))
    for out_dir in (Path(study.results_dir) / "_stability", Path(study.results_dir) / "_stability-avx2",
                    tmp_path / "elsewhere"):
        stability.check_out_dir(out_dir, study, tmp_path)


# 4. Ranges checked with the study.

def seeds_study(**changes: object) -> dict:
    config = {"study": "s", "dataset": "digits", "folds": 3,
              "experiments": {"mlp": {"arch": "mlp", "input_size": 8}}}
    return {**config, **changes}


@pytest.mark.parametrize(("changes", "key"), [
    ({"seeds": [0, 2**64]}, "seeds[1]: "),
    ({"seeds": [max_train_seed(10) + 1]}, "seeds[0]: "),
    ({"experiments": {"mlp": {"arch": "mlp", "input_size": 8, "seeds": [2**63]}}}, "experiments.mlp.seeds[0]: "),
    ({"seed": SPLIT_SEED_MAX + 1}, "seed: "),
    ({"seed": SPLIT_SEED_MAX, "repeats": 2}, "seed: "),
    ({"seed": -1}, "seed: must be >= 0"),
])
def test_a_seed_beyond_torchs_or_sklearns_range_is_refused_with_its_key(changes: dict, key: str) -> None:
    with pytest.raises(StudyError) as caught:
        parse_study(seeds_study(**changes))
    assert str(caught.value).startswith(key), str(caught.value)


def test_the_largest_seeds_the_study_allows_are_ones_torch_and_sklearn_take() -> None:
    import numpy as np
    import torch

    from convbench.train import epoch_seed

    parse_study(seeds_study(seed=SPLIT_SEED_MAX, seeds=[max_train_seed(10)]))  # mlp: 10 epochs by default
    torch.manual_seed(epoch_seed(max_train_seed(10), 10))
    np.random.RandomState(SPLIT_SEED_MAX)
    with pytest.raises((ValueError, RuntimeError, OverflowError), match="Overflow"):
        torch.manual_seed(epoch_seed(max_train_seed(10) + 1, 10))


@pytest.mark.parametrize("command", [["study", "--no-estimate"], ["stability"]])
def test_jobs_zero_is_a_usage_error(
    convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str], command: list[str],
) -> None:
    assert convbench([*command, "--jobs", "0"]) == 2
    assert "argument --jobs: must be a positive integer, got '0'" in capsys.readouterr().err


def test_more_jobs_than_cores_is_noted(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    study = pair_study(tmp_path)
    assert convbench(["study", "--no-estimate", "--study", str(study), "--jobs", "3"]) == 0
    assert ("convbench study: note: --jobs 3 is more than this machine's 2 CPU core(s)"
            in capsys.readouterr().err)
    assert convbench(["study", "--no-estimate", "--study", str(study), "--jobs", "2"]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["digits", "mnist", "kmnist"])
@pytest.mark.parametrize("augmentation", ["crop_flip", "crop_flip_erase"])
def test_flips_on_handwriting_are_warned_at_the_study_check(
    tmp_path: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
    dataset: str, augmentation: str,
) -> None:
    study = pair_study(tmp_path, dataset, augmentation)
    assert convbench(["check", "--study", str(study), "--stamp", str(tmp_path / "stamp.txt")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert [w.split(": augmentation")[0] for w in warnings] == [
        f"convbench check: warning: {study}: experiments.relu", f"convbench check: warning: {study}: experiments.sigmoid"]
    assert all(f"mirrors the images of {dataset}" in w and "no longer holds" in w for w in warnings)


def test_flip_tta_is_warned_and_fashion_mnist_or_the_bundled_studies_are_not() -> None:
    config = seeds_study(recipe={"augmentation": "crop_flip", "tta": "flip"})
    assert [w.split(":")[0] for w in flip_warnings(parse_study(config))] == ["experiments.mlp"]
    assert "augmentation: crop_flip and tta: flip mirrors the images of digits" in flip_warnings(parse_study(config))[0]
    assert flip_warnings(parse_study({**config, "dataset": "fashion_mnist"})) == []
    for path in sorted((ROOT / "conf/study").glob("*.yaml")):
        assert flip_warnings(parse_study(read_study_file(path))) == [], path.name


# 5. A hand run does not replace a finished run of other settings.

@pytest.fixture
def finished(tmp_path: Path, digits_npz: Path, convbench: Callable[[list[str]], int]) -> Path:
    """The tiny study's fold 0, trained and scored as the pipeline runs it."""
    (tmp_path / "params.yaml").write_text(STUDY.format(results="results"))
    (tmp_path / "data/prepared").mkdir(parents=True)
    shutil.copy(digits_npz, tmp_path / "data/prepared/digits.npz")
    with chdir(tmp_path):
        assert convbench(["split", "--study", "params.yaml"]) == 0
        assert convbench(["run", "--study", "params.yaml", "--experiment", "lenet", "--fold", "0",
                          "--threads", "1", "--no-progress"]) == 0
    return tmp_path


def test_a_hand_run_with_other_settings_does_not_replace_a_finished_run(
    finished: Path, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = Path("results/lenet/r0-fold0-seed0")
    before = {name: (finished / run_dir / name).read_bytes() for name in ("model.pt", "metrics.json")}
    capsys.readouterr()
    with chdir(finished):
        assert convbench(["run", "--study", "params.yaml", "--experiment", "lenet", "--fold", "0",
                          "--threads", "2", "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"convbench run: error: {run_dir}: holds a finished run ({run_dir / 'metrics.json'}) "
                              "of other settings than this convbench run's (threads 1 -> 2)")
        assert "its study's own run there has threads 2 -> 1" in err and "add --replace" in err
        assert convbench(["train", "--study", "params.yaml", "--experiment", "lenet", "--fold", "0",
                          "--threads", "2"]) == 1
        assert "convbench train: error: results/lenet/r0-fold0-seed0: holds a finished run" in capsys.readouterr().err
        assert convbench(["train", "--data", "data/prepared/digits.npz", "--split", "data/splits/digits-k3-s0/repeat0.json",
                          "--fold", "0", "--arch", "lenet", "--out-dir", str(run_dir), "--recipe", "lr=0.5"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"convbench train: error: {run_dir}: holds a finished run") and "recipe.lr 0.1 -> 0.5" in err
        assert convbench(["evaluate", "--study", "params.yaml", "--experiment", "lenet", "--fold", "0",
                          "--weights", "last"]) == 1
        assert "(weights 'best' -> 'last')" in capsys.readouterr().err
        assert {name: (finished / run_dir / name).read_bytes() for name in before} == before
        # the study's own settings, as Snakemake and DVC run them, pass; so does --replace
        assert convbench(["evaluate", "--study", "params.yaml", "--experiment", "lenet", "--fold", "0"]) == 0
        assert convbench(["run", "--study", "params.yaml", "--experiment", "lenet", "--fold", "0",
                          "--threads", "2", "--no-progress", "--replace"]) == 0
    assert json.loads((finished / run_dir / "metrics.json").read_text())["threads"] == 2


# 6. gpu_check.py: an unusable --out before any measurement; results printed when not saved.

@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def test_gpu_check_refuses_an_unusable_out_before_measuring(
    gpu_check, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpu_check, "environment", lambda _device: pytest.fail("measured before checking --out"))
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    assert gpu_check.main(["--quick", "--out", str(afile)]) == 2
    assert capsys.readouterr().err.startswith(f"gpu_check.py: error: --out {afile}: is a file; expected a directory")
    assert gpu_check.main(["--quick", "--out", str(afile / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpu_check.py: error: --out {afile / 'sub'}: ") and "cannot create its directory" in err
    assert afile.read_text() == "mine\n"


def test_gpu_check_prints_its_results_when_it_cannot_save_them(
    gpu_check, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "gpu_check.json").write_text('{"earlier": true}\n')
    results = {"date": "today", "command": "gpu_check.py", "quick": True, "device": "cpu", "threads": 1,
               "status": "passed", "failed": [], "seconds": 1.0, "sections": {}}
    monkeypatch.setattr(os, "fsync", lambda _fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert gpu_check.save(tmp_path, results) is False
    out, err = capsys.readouterr()
    assert json.loads(out) == results
    assert err.startswith(f"gpu_check.py: error: could not save the results to {tmp_path} (")
    assert "disk full" in err and "printed above" in err
    assert (tmp_path / "gpu_check.json").read_text() == '{"earlier": true}\n'
    assert not (tmp_path / "gpu_check.md").exists()
