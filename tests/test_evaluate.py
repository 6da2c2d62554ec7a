"""Evaluation of trained digits models (the test set, once, with the best epoch's weights), the
metrics it writes, and the fold means and spreads ``convbench aggregate`` makes of them."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convbench import prepare
from convbench.aggregate import aggregate, load_run
from convbench.batches import BatchTransform, channel_stats
from convbench.evaluate import (
    classification_metrics,
    evaluate_checkpoint,
    peak_gpu_memory_mb,
    training_perf,
)
from convbench.models import build
from convbench.split import load_split, make_split, write_split
from convbench.checkpoint import HISTORY_COLUMNS, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_TEST = 450  # the digits' fixed 25% hold-out


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ------------------------------------------------------------------- classification_metrics


def test_classification_metrics_on_hand_made_logits() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0])
    logits = F.one_hot(predicted, 3).float() * 3 + torch.linspace(-0.5, 0.5, 15).reshape(5, 3)
    assert torch.equal(logits.argmax(1), predicted)
    metrics = classification_metrics(logits, labels, num_classes=3)
    assert metrics["n"] == 5
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]  # rows: true
    assert metrics["per_class_accuracy"] == pytest.approx([0.5, 1.0, 0.5])
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    json.dumps(metrics)  # plain Python types only


def test_a_class_without_examples_has_no_accuracy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
    metrics = classification_metrics(logits, torch.tensor([0, 1]), num_classes=4)
    assert metrics["per_class_accuracy"] == [1.0, 0.0, None, None]
    assert metrics["confusion_matrix"][1] == [0, 0, 0, 1]
    assert np.array(metrics["confusion_matrix"]).sum() == 2


# ------------------------------------------------------------------------ convbench evaluate


def test_evaluate_writes_test_and_validation_metrics(
    digits_run: Any, digits: prepare.Dataset, digits_split: Path
) -> None:
    metrics = load_json(digits_run.metrics)
    checkpoint = torch.load(digits_run.model, weights_only=True)
    split = load_split(digits_split)
    assert (metrics["experiment"], metrics["arch"], metrics["fold"], metrics["seed"]) == (
        "lenet", "lenet", 0, 0
    )
    assert (metrics["dataset"], metrics["data_sha256"]) == ("digits", digits.sha256)
    assert metrics["split_id"] == split.split_id
    assert metrics["weights"] == "best" and metrics["epochs"] == 3
    assert metrics["best_epoch"] == checkpoint["best_epoch"]
    assert metrics["params"] == sum(p.numel() for p in build("lenet", input_size=16).parameters())
    assert metrics["macs"] > 0
    assert metrics["final_train_loss"] == checkpoint["history"][-1]["train_loss"]

    for part, labels in (("val", digits.train_labels[split.val(0)]), ("test", digits.test_labels)):
        scores = metrics[part]
        confusion = np.array(scores["confusion_matrix"])
        assert confusion.shape == (10, 10)
        assert scores["n"] == confusion.sum() == len(labels)
        np.testing.assert_array_equal(confusion.sum(1), np.bincount(labels, minlength=10))
        assert scores["accuracy"] == pytest.approx(np.trace(confusion) / len(labels))
        assert len(scores["per_class_accuracy"]) == 10
        per_class = confusion.diagonal() / confusion.sum(1)
        np.testing.assert_allclose(scores["per_class_accuracy"], per_class)
        assert scores["accuracy"] > 0.5
    assert metrics["test"]["n"] == N_TEST
    # validation is scored with the best epoch's weights, as training scored them
    assert metrics["val"]["accuracy"] == pytest.approx(checkpoint["best_val_acc"], abs=1e-6)


def test_misclassified_examples_agree_with_the_confusion_matrix(
    digits_run: Any, digits: prepare.Dataset
) -> None:
    test = load_json(digits_run.metrics)["test"]
    confusion = np.array(test["confusion_matrix"])
    errors = int(confusion.sum() - np.trace(confusion))
    wrong = test["misclassified"]
    assert len(wrong) == min(64, errors) > 0
    indices = [entry["index"] for entry in wrong]
    assert indices == sorted(set(indices))
    counted = np.zeros_like(confusion)
    for entry in wrong:
        assert entry["true"] == digits.test_labels[entry["index"]]
        assert entry["predicted"] != entry["true"]
        counted[entry["true"], entry["predicted"]] += 1
    assert np.all(counted <= confusion)
    if errors <= 64:
        np.testing.assert_array_equal(counted + np.diag(confusion.diagonal()), confusion)


def test_the_test_set_is_the_prepared_files_and_in_no_fold(
    digits_run: Any, digits: prepare.Dataset, digits_split: Path
) -> None:
    split = load_split(digits_split)
    folds = np.concatenate([split.val(fold) for fold in range(split.folds)])
    np.testing.assert_array_equal(np.sort(folds), np.arange(len(digits.train_labels)))
    assert len(digits.train_labels) + N_TEST == 1797  # each digit is in one of the two parts

    # score the prepared test images here, independently, with the checkpoint's best weights
    checkpoint = torch.load(digits_run.model, weights_only=True)
    model = build("lenet", input_size=16, activation="relu")
    model.load_state_dict(checkpoint["best_model"])
    model.eval()
    train_images = torch.from_numpy(digits.train_images[split.train_indices(0)])
    transform = BatchTransform(16, *channel_stats(train_images))
    with torch.no_grad():
        predicted = model(transform(torch.from_numpy(digits.test_images))).argmax(1).numpy()
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (digits.test_labels, predicted), 1)
    reported = load_json(digits_run.metrics)["test"]["confusion_matrix"]
    np.testing.assert_array_equal(reported, confusion)


def test_perf_json_has_training_and_inference_speed(digits_run: Any) -> None:
    perf = load_json(digits_run.perf)
    with open(digits_run.history, newline="") as file:
        rows = list(csv.DictReader(file))
    training = perf["training"]
    assert training["epochs"] == len(rows) == 3
    assert training["seconds"] == pytest.approx(sum(float(row["seconds"]) for row in rows))
    assert training["examples_per_s"] > 0
    assert training["devices"] == [rows[0]["device"]]
    inference = perf["inference"]
    assert inference["images_per_s"] > 0
    assert inference["device"].startswith("cpu:")
    # on the CPU there is no GPU allocator to measure; the process's peak memory is measured
    # (a torch process holds well over 50 MiB; this one, its own pytest, far more)
    assert inference["peak_gpu_memory_mb"] is None
    assert inference["peak_process_rss_mb"] > 50
    assert "peak_memory_mb" not in inference
    assert "images_per_s" not in digits_run.metrics.read_text()  # timings stay out of metrics


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_gpu_memory_is_the_allocators_peak_not_the_process() -> None:
    device = torch.device("cuda")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) / 2**20
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=device)  # 64 MiB on the GPU only
    del block
    assert peak_gpu_memory_mb(device) == pytest.approx(before + 64, abs=0.01)
    assert peak_gpu_memory_mb(torch.device("cpu")) is None


def test_training_perf_refuses_an_empty_history(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text(",".join(HISTORY_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no epochs recorded"):
        training_perf(history)


def test_evaluate_the_last_epochs_weights(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "last" / "metrics.json"
    code = convbench(["evaluate", "--checkpoint", str(digits_run.model), "--data", str(digits_npz),
                      "--split", str(digits_split), "--out", str(out), "--weights", "last"])
    assert code == 0
    metrics = load_json(out)
    history = torch.load(digits_run.model, weights_only=True)["history"]
    assert metrics["weights"] == "last"
    assert metrics["val"]["accuracy"] == pytest.approx(history[-1]["val_acc"], abs=1e-6)
    assert (out.parent / "perf.json").exists()  # history.csv is found next to the checkpoint


def test_flip_tta_scores_the_mean_of_the_image_and_its_mirror(
    digits_run: Any, convbench: Callable[[list[str]], int], digits: prepare.Dataset,
    digits_npz: Path, digits_split: Path, tmp_path: Path,
) -> None:
    """The same weights evaluated with ``tta: flip``: the plain accuracies are the run's own, and
    the scored ones are those of the averaged softmax, computed here by hand."""
    checkpoint = torch.load(digits_run.model, weights_only=True)
    checkpoint["meta"]["recipe"].update(augmentation="crop_flip", tta="flip")
    model_path = tmp_path / "tta" / "model.pt"
    model_path.parent.mkdir()
    torch.save(checkpoint, model_path)
    shutil.copy(digits_run.model.parent / "history.csv", model_path.parent)
    out = tmp_path / "tta" / "metrics.json"
    assert convbench(evaluate_argv(model_path, digits_npz, digits_split, out)) == 0
    plain, scored = load_json(digits_run.metrics), load_json(out)
    assert scored["recipe"]["tta"] == "flip" and "tta" not in plain["recipe"]
    assert "accuracy_without_tta" not in plain["test"]
    for part in ("val", "test"):
        assert scored[part]["accuracy_without_tta"] == plain[part]["accuracy"]

    meta = checkpoint["meta"]
    model = build(meta["arch"], in_channels=meta["in_channels"], num_classes=meta["num_classes"],
                  input_size=meta["input_size"], **meta["knobs"])
    model.load_state_dict(checkpoint["best_model"])
    model.eval()
    train = torch.from_numpy(digits.train_images[load_split(digits_split).train_indices(0)])
    mean, std = channel_stats(train)
    transform = BatchTransform(meta["input_size"], mean, std)
    test = torch.from_numpy(digits.test_images)
    with torch.no_grad():
        probs = model(transform(test)).softmax(1) + model(transform(test.flip(-1))).softmax(1)
    by_hand = (probs.argmax(1) == torch.from_numpy(digits.test_labels).long()).double().mean()
    assert scored["test"]["accuracy"] == pytest.approx(float(by_hand), abs=1e-12)
    assert scored["test"]["accuracy"] != plain["test"]["accuracy"]  # the mirror changed answers


def evaluate_argv(checkpoint: Path, data_path: Path, split: Path, out: Path) -> list[str]:
    return ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data_path),
            "--split", str(split), "--out", str(out)]


def test_evaluate_refuses_a_run_that_did_not_complete(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    state = torch.load(digits_run.model, weights_only=True)
    state["completed"] = False
    torch.save(state, tmp_path / "checkpoint.pt")
    out = tmp_path / "metrics.json"
    assert convbench(evaluate_argv(tmp_path / "checkpoint.pt", digits_npz, digits_split, out)) == 1
    assert "training did not complete" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_refuses_data_or_splits_the_model_was_not_trained_on(
    digits_run: Any, digits: prepare.Dataset, convbench: Callable[[list[str]], int],
    digits_npz: Path, other_digits: tuple[Path, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other_npz, other_split = other_digits
    another_split = tmp_path / "split_seed1.json"
    write_split(make_split(digits, 3, seed=1), another_split)
    out = tmp_path / "metrics.json"

    assert convbench(evaluate_argv(digits_run.model, digits_npz, other_split, out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("convbench evaluate: error: split ") and "make a new split" in err
    for data_path, split in ((digits_npz, another_split), (other_npz, other_split)):
        assert convbench(evaluate_argv(digits_run.model, data_path, split, out)) == 1
        err = capsys.readouterr().err
        # the files and both ids, so a user sees which of the two does not belong
        assert f"{digits_run.model} against {data_path} and {split}: the checkpoint was trained on data" in err
        assert f"the split {load_split(split).split_id[:12]}" in err
    assert not out.exists() and not (tmp_path / "perf.json").exists()

    # the function refuses too
    checkpoint = torch.load(digits_run.model, weights_only=True)
    with pytest.raises(ValueError, match="the checkpoint was trained on data .* but the data given is"):
        evaluate_checkpoint(
            checkpoint, digits, load_split(another_split), device=torch.device("cpu")
        )


# ------------------------------------------------------------------------------- aggregate


def fold_result(
    experiment: str, fold: int, val: float, test: float, **changes: Any
) -> dict[str, Any]:
    """A run's metrics.json, as much of it as aggregation reads."""
    return {"seed": 0,
        "experiment": experiment, "arch": "lenet", "knobs": {"activation": "relu"},
        "input_size": 16, "split_id": "abc", "data_sha256": "0f" * 32, "recipe": {"lr": 0.1},
        "params": 21386, "macs": 95400, "fold": fold, "best_epoch": 2 + fold,
        "val": {"accuracy": val}, "test": {"accuracy": test},
        **changes,
    }


def test_aggregate_means_and_sample_std_per_experiment() -> None:
    val, test = [0.91, 0.87, 0.95], [0.90, 0.88, 0.93]
    folds = [fold_result("lenet", f, val[f], test[f]) for f in (2, 0, 1)]  # any order
    folds.append(fold_result("alexnet", 0, 0.5, 0.4, arch="alexnet"))
    result = aggregate(folds)["experiments"]
    assert list(result) == ["alexnet", "lenet"]
    lenet = result["lenet"]
    assert (lenet["runs"], lenet["folds"], lenet["repeats"], lenet["seeds"]) == (3, 3, 1, 1)
    assert [r["fold"] for r in lenet["per_run"]] == [0, 1, 2]  # by fold
    assert [r["val_acc"] for r in lenet["per_run"]] == val and [r["test_acc"] for r in lenet["per_run"]] == test
    assert lenet["val_acc_fold_std"] == pytest.approx(np.std(val, ddof=1))  # one seed: the same
    assert lenet["val_acc_seed_std"] is None
    assert lenet["val_acc_mean"] == pytest.approx(np.mean(val))
    assert lenet["val_acc_std"] == pytest.approx(np.std(val, ddof=1))
    assert lenet["test_acc_mean"] == pytest.approx(np.mean(test))
    assert lenet["test_acc_std"] == pytest.approx(np.std(test, ddof=1))
    # no timing: they differ between bit-identical runs, so they stay in the runs' perf.json
    assert not [key for key in lenet if "seconds" in key or "per_s" in key]
    assert lenet["best_epoch_mean"] == pytest.approx(3.0)
    assert (lenet["arch"], lenet["params"], lenet["input_size"]) == ("lenet", 21386, 16)
    single = result["alexnet"]
    assert (single["folds"], single["val_acc_mean"], single["val_acc_std"]) == (1, 0.5, 0.0)


def test_aggregate_separates_the_spread_over_folds_from_the_spread_over_seeds() -> None:
    """2 repeats x 2 folds x 3 seeds: fold_std is over the four (repeat, fold) cells' seed means,
    seed_std the root of the mean within-cell variance over seeds, both computed here by hand."""
    val = {(0, 0): [0.90, 0.92, 0.94], (0, 1): [0.80, 0.80, 0.83],
           (1, 0): [0.85, 0.86, 0.90], (1, 1): [0.88, 0.91, 0.91]}
    runs = [fold_result("lenet", k, v, v, repeat=r, seed=s, split_id=f"split{r}")
            for (r, k), values in val.items() for s, v in zip((0, 1, 2), values)]
    row = aggregate(runs)["experiments"]["lenet"]
    assert (row["runs"], row["repeats"], row["folds"], row["seeds"]) == (12, 2, 2, 3)
    cell_means = [sum(v) / 3 for v in val.values()]
    grand = sum(cell_means) / 4
    fold_std = (sum((m - grand) ** 2 for m in cell_means) / 3) ** 0.5
    within = [sum((x - sum(v) / 3) ** 2 for x in v) / 2 for v in val.values()]
    seed_std = (sum(within) / 4) ** 0.5
    everything = [x for v in val.values() for x in v]
    assert row["val_acc_mean"] == pytest.approx(sum(everything) / 12)
    assert row["val_acc_std"] == pytest.approx(np.std(everything, ddof=1))
    assert row["val_acc_fold_std"] == pytest.approx(fold_std)
    assert row["val_acc_seed_std"] == pytest.approx(seed_std)
    assert [(r["repeat"], r["fold"], r["seed"]) for r in row["per_run"]][:4] == [
        (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)]


@pytest.mark.parametrize(
    ("key", "value"),
    [("arch", "alexnet"), ("knobs", {}), ("input_size", 28), ("split_id", "other"),
     ("recipe", {"lr": 0.2})],
)
def test_aggregate_refuses_runs_that_disagree(key: str, value: Any) -> None:
    folds = [fold_result("lenet", 0, 0.9, 0.9), fold_result("lenet", 1, 0.8, 0.8, **{key: value})]
    message = "the runs of repeat 0 disagree on the split" if key == "split_id" else f"runs disagree on {key}"
    with pytest.raises(ValueError, match=f"experiment 'lenet': {message}"):
        aggregate(folds)


def test_aggregate_refuses_a_run_given_twice() -> None:
    folds = [fold_result("lenet", f, 0.9, 0.9) for f in (0, 1, 1)]
    with pytest.raises(ValueError, match=r"a run \(repeat, fold, seed\) given twice: .*\(0, 1, 0\), \(0, 1, 0\)"):
        aggregate(folds)


STUDY = """\
study: tiny
dataset: digits
folds: 3
seed: 0
results_dir: {results}
recipe: {{epochs: 2, batch_size: 64, lr: 0.1}}
experiments:
  lenet: {{arch: lenet, knobs: {{activation: relu}}, input_size: 16}}
"""


@pytest.fixture(scope="module")
def tiny_study(
    convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A one-experiment study of the digits, every fold trained and evaluated by the CLIs as the
    pipeline runs them (``train --study``); its results under its own results_dir."""
    root = tmp_path_factory.mktemp("study")
    study = root / "params.yaml"
    study.write_text(STUDY.format(results=root / "results"))
    common = ["--data", str(digits_npz), "--split", str(digits_split)]
    layout = root / "data/splits/digits-k3-s0/repeat0.json"  # where the study's later steps read it
    layout.parent.mkdir(parents=True)
    shutil.copy(digits_split, layout)
    for fold in range(3):
        run = root / "results" / "lenet" / f"r0-fold{fold}-seed0"
        assert convbench(["train", "--study", str(study), "--experiment", "lenet", *common,
                          "--fold", str(fold), "--out-dir", str(run)]) == 0
        assert convbench(["evaluate", *common, "--checkpoint", str(run / "model.pt"),
                          "--out", str(run / "metrics.json")]) == 0
    return study


@pytest.fixture(autouse=True)
def _in_the_tiny_studys_directory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny study's relative paths (its split, data/splits/...) are read from its directory, as
    the pipeline reads a study's from the project's."""
    if "tiny_study" in request.fixturenames:
        monkeypatch.chdir(request.getfixturevalue("tiny_study").parent)


def test_aggregate_of_evaluated_folds(tiny_study: Path) -> None:
    runs = sorted((tiny_study.parent / "results" / "lenet").glob("r0-fold*"))
    assert len(runs) == 3
    result = aggregate([load_run(run / "metrics.json") for run in reversed(runs)])
    row = result["experiments"]["lenet"]
    metrics = [load_json(run / "metrics.json") for run in runs]
    val = [m["val"]["accuracy"] for m in metrics]
    test = [m["test"]["accuracy"] for m in metrics]
    assert row["folds"] == 3 and [r["val_acc"] for r in row["per_run"]] == val
    assert [r["test_acc"] for r in row["per_run"]] == test
    assert row["val_acc_mean"] == pytest.approx(np.mean(val))
    assert row["val_acc_std"] == pytest.approx(np.std(val, ddof=1))
    assert row["test_acc_mean"] == pytest.approx(np.mean(test))
    assert row["test_acc_std"] == pytest.approx(np.std(test, ddof=1))
    assert all((run / "perf.json").exists() for run in runs)  # measured, and left out
    assert not [key for key in row if "seconds" in key or "per_s" in key]
    assert row["params"] == metrics[0]["params"] > 0
    with pytest.raises(ValueError, match="given twice"):
        aggregate([load_run(runs[0] / "metrics.json")] * 2)


def test_aggregate_cli_aggregates_an_experiment_then_the_study(
    tiny_study: Path, convbench: Callable[[list[str]], int], digits: prepare.Dataset,
    digits_split: Path,
) -> None:
    results = tiny_study.parent / "results"
    experiment = results / "_experiments" / "lenet.json"
    assert convbench(["aggregate", "--study", str(tiny_study), "--experiment", "lenet",
                      "--out", str(experiment)]) == 0
    row = load_json(experiment)
    val = [load_json(results / "lenet" / f"r0-fold{k}-seed0" / "metrics.json")["val"]["accuracy"]
           for k in range(3)]
    assert [r["val_acc"] for r in row["per_run"]] == val
    assert row["val_acc_mean"] == pytest.approx(np.mean(val))
    assert row["val_acc_std"] == pytest.approx(np.std(val, ddof=1))

    combined_path = results / "study.json"
    assert convbench(["aggregate", "--study", str(tiny_study), "--out", str(combined_path)]) == 0
    combined = load_json(combined_path)
    assert combined["experiments"] == {"lenet": row}
    card = combined["study"]
    assert (card["name"], card["dataset"], card["folds"]) == ("tiny", "digits", 3)
    assert card["data_sha256"] == digits.sha256
    assert card["split_id"] == load_split(digits_split).split_id


def test_the_study_step_reads_only_the_experiment_results_it_depends_on(
    tiny_study: Path, convbench: Callable[[list[str]], int], tmp_path: Path,
) -> None:
    """Both engines give `aggregate` (the study step) the experiments' results as its inputs,
    nothing else: with no run directory beside them it writes the same study file."""
    results = tiny_study.parent / "results"
    experiment, full = results / "_experiments" / "lenet.json", tmp_path / "full.json"
    assert convbench(["aggregate", "--study", str(tiny_study), "--experiment", "lenet", "--out", str(experiment)]) == 0
    assert convbench(["aggregate", "--study", str(tiny_study), "--out", str(full)]) == 0
    alone = tmp_path / "alone"
    (alone / "results/_experiments").mkdir(parents=True)
    shutil.copy(experiment, alone / "results/_experiments/lenet.json")
    (alone / "params.yaml").write_text(STUDY.format(results=alone / "results"))
    assert convbench(["aggregate", "--study", str(alone / "params.yaml"), "--out", str(alone / "study.json")]) == 0
    assert load_json(alone / "study.json") == load_json(full)


def test_aggregate_cli_refuses_an_unknown_experiment(
    tiny_study: Path, convbench: Callable[[list[str]], int], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out.json"
    argv = ["aggregate", "--study", str(tiny_study), "--experiment", "vgg", "--out", str(out)]
    assert convbench(argv) == 1
    assert "no experiment 'vgg'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: "{ not json", "not valid JSON (Expecting property name"),
        (lambda text: "[1, 2]", "expected a JSON object written by convbench evaluate, found list"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "val"}),
         "no 'val.accuracy'; expected a metrics.json written by convbench evaluate"),
    ],
    ids=["garbage", "a list", "incomplete"],
)
def test_aggregate_names_a_bad_metrics_file(
    tiny_study: Path, convbench: Callable[[list[str]], int], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], damage: Callable[[str], str], message: str,
) -> None:
    copy = shutil.copytree(tiny_study.parent, tmp_path / "copy")
    study = copy / "params.yaml"
    study.write_text(study.read_text().replace(str(tiny_study.parent), str(copy)))
    broken = copy / "results" / "lenet" / "r0-fold1-seed0" / "metrics.json"
    broken.write_text(damage(broken.read_text()))
    out = tmp_path / "experiment.json"
    argv = ["aggregate", "--study", str(study), "--experiment", "lenet", "--out", str(out)]
    assert convbench(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench aggregate: error: {broken}: {message}")
    assert "Traceback" not in err and not out.exists()


# ------------------------------------------------------------------- errors a user can act on


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path, state: path.write_bytes(b"not a zip, not a pickle"), "not a readable checkpoint"),
        (lambda path, state: torch.save([1, 2], path), "not a convbench checkpoint of format 2 (found format 'list')"),
        (lambda path, state: save_checkpoint({k: v for k, v in state.items() if k != "history"}, path),
         "a checkpoint without history; expected one written by convbench train"),
        (lambda path, state: save_checkpoint({**state, "meta": {k: v for k, v in state["meta"].items()
                                                                if k != "split_id"}}, path),
         "a checkpoint without meta.split_id"),
        (lambda path, state: save_checkpoint({**state, "meta": {k: v for k, v in state["meta"].items()
                                                                if k not in ("params", "macs")}}, path),
         "a checkpoint without meta.params, meta.macs (what evaluation reads)"),
    ],
    ids=["garbage", "a list", "no history", "no split id", "no size"],
)
def test_evaluate_names_a_file_that_is_not_a_checkpoint(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path, dict], None], message: str,
) -> None:
    bad = tmp_path / "model.pt"
    make(bad, torch.load(digits_run.model, weights_only=True))
    out = tmp_path / "metrics.json"
    assert convbench(evaluate_argv(bad, digits_npz, digits_split, out)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench evaluate: error: {bad}: ") and message in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "no epochs recorded"), ("epoch,train_loss\n1,0.5\n", "no column 'seconds'"),
     ("epoch,seconds,examples_per_s\n1,fast,100\n", "could not convert string to float: 'fast'")],
    ids=["empty", "missing columns", "text for a number"],
)
def test_evaluate_names_a_bad_history(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str,
) -> None:
    history = tmp_path / "history.csv"
    history.write_text(content)
    out = tmp_path / "metrics.json"
    argv = [*evaluate_argv(digits_run.model, digits_npz, digits_split, out), "--history", str(history)]
    assert convbench(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench evaluate: error: {history}: not a history written by convbench train")
    assert message in err and "Traceback" not in err and not out.exists()


def test_unwritable_outputs_are_refused_before_the_work(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A results directory this user cannot write is refused before training or scoring, not
    after (as root every directory is writable, so the permission answer is the OS's, patched)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "metrics.json"  # its directory would have to be a file
    assert convbench(evaluate_argv(digits_run.model, digits_npz, digits_split, out)) == 1
    assert f"{out}: cannot create its directory {blocker}" in capsys.readouterr().err

    from convbench import _io

    locked = tmp_path / "locked"
    real_access = os.access
    monkeypatch.setattr(_io.os, "access",
                        lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    started = []
    monkeypatch.setattr("convbench.train_job.train", lambda *a, **k: started.append(1))
    argv = ["train", "--data", str(digits_npz), "--split", str(digits_split), "--fold", "0",
            "--arch", "lenet", "--input-size", "12", "--out-dir", str(locked)]
    assert convbench(argv) == 1
    err = capsys.readouterr().err
    assert f"its directory {locked} is not writable by this user" in err and started == []
    assert convbench(evaluate_argv(digits_run.model, digits_npz, digits_split, locked / "metrics.json")) == 1
    assert f"its directory {locked} is not writable by this user" in capsys.readouterr().err


# ------------------------------------------------------------------ bugs keep their traceback


BUGS = [RuntimeError("CUDA error: out of memory"), KeyError("val_acc_mean"),
        ValueError("operands could not be broadcast together")]
BUG_IDS = ["CUDA error", "KeyError", "ValueError"]


@pytest.mark.parametrize("bug", BUGS, ids=BUG_IDS)
def test_a_bug_inside_evaluate_keeps_its_traceback(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    raiser: Callable[[Exception], Callable[..., Any]], bug: Exception,
) -> None:
    """A ValueError too: only EvaluationError (and the other errors a user can fix) become one
    line naming the checkpoint; a bug's ValueError is not the user's."""
    monkeypatch.setattr("convbench.evaluate.evaluate_checkpoint", raiser(bug))
    out = tmp_path / "metrics.json"
    with pytest.raises(type(bug)) as raised:
        convbench(evaluate_argv(digits_run.model, digits_npz, digits_split, out))
    assert raised.value is bug
    assert not out.exists()


@pytest.mark.parametrize("bug", BUGS, ids=BUG_IDS)
def test_a_bug_inside_aggregate_keeps_its_traceback(
    tiny_study: Path, convbench: Callable[[list[str]], int], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, raiser: Callable[[Exception], Callable[..., Any]],
    bug: Exception,
) -> None:
    monkeypatch.setattr("convbench.aggregate.aggregate", raiser(bug))
    out = tmp_path / "experiment.json"
    with pytest.raises(type(bug)) as raised:
        convbench(["aggregate", "--study", str(tiny_study), "--experiment", "lenet", "--out", str(out)])
    assert raised.value is bug
    assert not out.exists()


def test_an_unknown_evaluation_device_is_one_line(
    digits_run: Any, convbench: Callable[[list[str]], int], digits_npz: Path, digits_split: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "metrics.json"
    assert convbench([*evaluate_argv(digits_run.model, digits_npz, digits_split, out), "--device", "gpu"]) == 1
    err = capsys.readouterr().err
    assert err == "convbench evaluate: error: unknown device 'gpu': give auto, cpu, cuda or cuda:N\n"
    assert not out.exists()
