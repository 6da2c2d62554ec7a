"""The chapter's study: its published references, the report's family ranking, the estimate's wall
time with parallel jobs, and ``convbench compare`` against a study's expected results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from convbench import reference
from convbench.estimate import ExperimentCost, wall_seconds
from convbench.report import tables
from convbench.study import load_study

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "conf/study/fashion_mnist_chapter.yaml"
FAMILIES = ("lenet", "lenet_bn", "alexnet", "vgg11", "nin", "googlenet", "resnet18", "densenet",
            "mlp", "mini_inception", "mini_resnet")


# ------------------------------------------------------------------------------- the study file


def test_the_chapter_study_trains_every_family_and_names_the_chapters_ablations() -> None:
    study = load_study(CHAPTER)
    assert study.dataset == "fashion_mnist" and study.folds >= 2
    assert {e.arch for e in study.experiments.values()} == set(FAMILIES)
    assert {"activation_and_pooling", "batch_norm", "shortcuts", "inception_size", "dropout",
            "weight_decay", "xavier_init", "recipe"} <= set(study.ablations)
    for name, e in study.experiments.items():  # native resolution or a small multiple of it
        assert e.input_size in (28, 32, 56, 84), (name, e.input_size)


def test_every_family_of_the_chapter_study_has_a_native_reference_entry() -> None:
    native = reference.native()
    assert native.dataset == "fashion_mnist"
    assert set(FAMILIES) <= set(native.families)
    for arch, result in native.families.items():
        if result.test_acc is None:
            assert result.source is None, arch
        else:
            assert 0.8 < result.test_acc < 1.0 and result.source_text, arch


# ------------------------------------------------------------------------ the ranking of families


def experiment_row(arch: str, val: float, test: float, params: int = 50_000) -> dict[str, Any]:
    return {"arch": arch, "knobs": {}, "input_size": 28, "params": params, "macs": params * 10,
            "val_acc_mean": val, "val_acc_std": 0.002, "test_acc_mean": test, "test_acc_std": 0.002,
            "best_epoch_mean": 10.0, "val_acc_fold_std": 0.002}


def report_data(experiments: dict[str, dict[str, Any]]) -> SimpleNamespace:
    study = SimpleNamespace(dataset="fashion_mnist", folds=3, repeats=1,
                            experiments={name: SimpleNamespace(seeds=(0,)) for name in experiments},
                            runs_with_seeds=lambda seeds: [0, 1, 2])
    return SimpleNamespace(study=study, results={"experiments": experiments})


def test_the_ranking_takes_each_familys_best_experiment_by_validation_accuracy() -> None:
    data = report_data({
        "lenet": experiment_row("lenet", 0.78, 0.77),
        "lenet_relu_max": experiment_row("lenet", 0.91, 0.90),
        "resnet18": experiment_row("resnet18", 0.92, 0.915, params=700_000),
        "densenet": experiment_row("densenet", 0.90, 0.95),  # best on test: ranks by validation
    })
    rows = tables.family_ranking(data)
    assert [(r["rank"], r["arch"], r["experiment"]) for r in rows] == [
        (1, "resnet18", "resnet18"), (2, "lenet", "lenet_relu_max"), (3, "densenet", "densenet")]
    assert rows[0]["d2l"].arch == "resnet18" and rows[0]["native"].test_acc == pytest.approx(0.9397)
    frame = tables.format_family_ranking(rows)
    assert frame.iloc[0]["family"] == "ResNet-18"
    assert "at 96 px, d2l's recipe" in frame.iloc[0]["d2l, 20 builds (different setting)"]
    assert "[pytorch-pretrained-cnns]" in frame.iloc[0]["published at native resolution"]


def test_a_number_scored_with_test_time_augmentation_is_marked_wherever_it_is_shown() -> None:
    tta = {**experiment_row("mini_resnet", 0.937, 0.9326, params=89_578), "recipe": {"tta": "flip"},
           "val_acc_without_tta_mean": 0.9338, "test_acc_without_tta_mean": 0.9284}
    plain = {**experiment_row("vgg11", 0.93, 0.9228, params=700_000), "recipe": {}}
    data = report_data({"mini_resnet": tta, "vgg11": plain})
    ranking = tables.format_family_ranking(tables.family_ranking(data))
    assert ranking.iloc[0]["test acc (%)"] == "93.26\u00a0±\u00a00.20 with flip TTA (92.84 without)"
    assert ranking.iloc[1]["test acc (%)"] == "92.28\u00a0±\u00a00.20"
    board = tables.format_leaderboard(tables.leaderboard(data.results))
    assert board.iloc[0]["val acc (%)"] == "93.70\u00a0±\u00a00.20 with flip TTA (93.38 without)"
    assert "test 93.26\u00a0±\u00a00.20 % with flip TTA (92.84 % without)" in tables.smallest_line(data.results)


def test_the_ordering_text_counts_agreeing_pairs_and_names_the_others() -> None:
    # d2l's medians: resnet18 0.909 > googlenet 0.888 > lenet 0.808; ours puts LeNet above GoogLeNet
    data = report_data({
        "resnet18": experiment_row("resnet18", 0.92, 0.91),
        "lenet": experiment_row("lenet", 0.90, 0.89),
        "googlenet": experiment_row("googlenet", 0.85, 0.84),
    })
    text = tables.ordering_text(tables.family_ranking(data), "d2l")
    assert "ours ResNet-18 > LeNet > GoogLeNet" in text
    assert "theirs ResNet-18 > GoogLeNet > LeNet" in text
    assert "agree on 2 of 3 pairs: LeNet above GoogLeNet here, below in theirs." in text
    native = tables.ordering_text(tables.family_ranking(data), "native")
    assert "agree on 2 of 3 pairs" in native  # published: ResNet-18 93.97 > GoogLeNet 93.44 > LeNet 89.1


def test_the_smallest_line_picks_the_best_network_under_100k_parameters() -> None:
    results = {"experiments": {
        "big": experiment_row("resnet18", 0.93, 0.93, params=700_000),
        "small": experiment_row("mini_resnet", 0.92, 0.918, params=41_802),
        "smaller": experiment_row("lenet", 0.90, 0.89, params=61_706),
    }}
    line = tables.smallest_line(results)
    assert line.startswith("Under 100,000 parameters: small (41,802 params)")
    assert "test 91.80" in line and "92.50 %" in line
    assert tables.smallest_line({"experiments": {"big": results["experiments"]["big"]}}) is None


# --------------------------------------------------------------------- the estimate with 2 jobs


def cost(name: str, seconds: float) -> ExperimentCost:
    return ExperimentCost(experiment=name, arch="lenet", input_size=28, batch_size=128, precision="fp32",
                          runs=3, epochs=10, steps_per_epoch=312, step_s=0.01, eval_image_s=1e-4,
                          seconds=seconds, peak_memory_mb=100.0, memory_kind="rss")


def test_the_wall_time_packs_the_run_jobs_onto_the_slots_longest_first() -> None:
    stages = {"check": 2.0, "download and prepare": 4.0, "split": 2.0, "aggregate": 10.0, "report": 20.0}
    costs = [cost("a", 50), cost("b", 100), cost("c", 40), cost("d", 60)]
    # each job +1 s for its aggregation: slot 1 takes b (101), slot 2 d (61) then a (112), then
    # slot 1 c (142); before: check, data and split (8 s); after: the study's aggregation, the report
    assert wall_seconds(costs, stages, light_s=1.0, jobs=2) == pytest.approx(8 + 142 + 1 + 20)
    one = wall_seconds(costs, stages, light_s=1.0, jobs=1)
    assert one == pytest.approx(8 + 250 + 4 + 1 + 20)
    with pytest.raises(ValueError, match="at least 1"):
        wall_seconds(costs, stages, light_s=1.0, jobs=0)


# ------------------------------------------------------------- benchmarks/throughput.py --study


def test_throughput_times_every_experiment_of_a_study_against_its_bare_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One row per experiment at its own input size and batch size, with the trainer's share of
    the bare step (a number: the benchmark, not this test, judges it)."""
    from benchmark_scripts import load_benchmark

    study = tmp_path / "tiny.yaml"
    study.write_text("study: tiny\ndataset: digits\nfolds: 2\nrecipe: {batch_size: 32, channels_last: true}\n"
                     "experiments:\n  a: {arch: lenet, input_size: 16}\n"
                     "  b: {arch: mlp, input_size: 8, recipe: {batch_size: 64, augmentation: crop_flip}}\n")
    throughput = load_benchmark("throughput")
    args = SimpleNamespace(study=str(study), only=None, threads=1, device="cpu", examples=256, epochs=1,
                           repeats=1)
    throughput.study_main(args)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert [row.split(" | ")[2:4] for row in rows] == [["16", "32"], ["8", "64"]]
    for row in rows:
        share = row.split(" | ")[6].strip("* ")
        assert share.endswith("%") and int(share[:-1]) > 0


def test_aggregation_keeps_what_tta_scored_runs_score_without_it() -> None:
    from convbench.aggregate import aggregate

    def run(fold: int, tta: bool) -> dict[str, Any]:
        val, test = {"accuracy": 0.93 + fold / 100}, {"accuracy": 0.92}
        if tta:
            val["accuracy_without_tta"], test["accuracy_without_tta"] = 0.92 + fold / 100, 0.91
        return {"experiment": "tta" if tta else "plain", "arch": "mlp", "knobs": {}, "input_size": 28,
                "data_sha256": "d", "recipe": {}, "split_id": "s", "repeat": 0, "fold": fold, "seed": 0,
                "params": 1, "macs": 1, "best_epoch": 1, "val": val, "test": test}

    experiments = aggregate([run(f, tta) for f in (0, 1) for tta in (True, False)])["experiments"]
    assert experiments["tta"]["val_acc_without_tta_mean"] == pytest.approx(0.925)
    assert experiments["tta"]["test_acc_without_tta_mean"] == pytest.approx(0.91)
    assert "val_acc_without_tta_mean" not in experiments["plain"]
