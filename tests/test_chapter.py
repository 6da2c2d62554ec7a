"""The chapter's study: its published references, the report's family ranking, the estimate's wall
time with parallel jobs, and ``convbench compare`` against a study's expected results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from convbench import reference
from convbench.estimate import ExperimentCost, wall_seconds
from convbench.report import forms, tables
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


def experiment_row(arch: str, val: float, test: float, params: int = 50_000, input_size: int = 28,
                   knobs: dict[str, Any] | None = None, **recipe: Any) -> dict[str, Any]:
    """study.json's row of one experiment; ``recipe`` holds only the given fields (as a row from
    before recipes were recorded: the rest are the defaults)."""
    row = {"arch": arch, "knobs": knobs or {}, "input_size": input_size, "params": params,
           "macs": params * 10, "val_acc_mean": val, "val_acc_std": 0.002, "test_acc_mean": test,
           "test_acc_std": 0.002, "best_epoch_mean": 10.0, "val_acc_fold_std": 0.002}
    return {**row, "recipe": recipe} if recipe else row


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
    assert frame.iloc[0]["our form"] == "d2l's stem, 28 px, 10 epochs, no augmentation"


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


def test_a_number_trained_in_bf16_is_marked_wherever_it_is_shown() -> None:
    bf16 = {**experiment_row("mini_resnet", 0.937, 0.9326, params=89_578), "recipe": {"precision": "bf16"}}
    both = {**experiment_row("resnet18", 0.93, 0.9228, params=700_000),
            "recipe": {"precision": "bf16", "tta": "flip"}, "test_acc_without_tta_mean": 0.92,
            "val_acc_without_tta_mean": 0.925}
    data = report_data({"mini_resnet": bf16, "resnet18": both})
    ranking = tables.format_family_ranking(tables.family_ranking(data))
    assert ranking.iloc[0]["test acc (%)"] == "93.26\u00a0±\u00a00.20 in bf16"
    assert ranking.iloc[1]["test acc (%)"] == "92.28\u00a0±\u00a00.20 in bf16 with flip TTA (92.00 without)"
    board = tables.format_leaderboard(tables.leaderboard(data.results))
    assert board.iloc[0]["val acc (%)"] == "93.70\u00a0±\u00a00.20 in bf16"
    assert "test 93.26\u00a0±\u00a00.20 % in bf16" in tables.smallest_line(data.results)


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


@pytest.mark.parametrize(
    ("row", "text"),
    [
        (experiment_row("resnet18", 0.9, 0.9, knobs={"stem": "lowres"}, epochs=15,
                        augmentation="crop_flip", tta="flip"),
         "lowres stem, 28 px, 15 epochs, crops and flips, flip TTA"),
        (experiment_row("resnet18", 0.9, 0.9), "d2l's stem, 28 px, 10 epochs, no augmentation"),
        (experiment_row("alexnet", 0.9, 0.9, input_size=84, knobs={"stem": "d2l"}, epochs=12),
         "d2l's stem, 84 px, 12 epochs, no augmentation"),
        (experiment_row("vgg11", 0.9, 0.9, input_size=32, knobs={"width": 0.25}, epochs=15),
         "32 px, 15 epochs, no augmentation"),  # VGG has no stem knob
        (experiment_row("mini_resnet", 0.9, 0.9, epochs=45, augmentation="crop_flip_erase"),
         "28 px, 45 epochs, crops, flips and erasing"),
        (experiment_row("my_net", 0.9, 0.9, knobs={"stem": "lowres"}),  # a project network
         "lowres stem, 28 px, 10 epochs, no augmentation"),
    ],
)
def test_our_form_names_the_stem_resolution_epochs_augmentation_and_tta(row: dict[str, Any], text: str) -> None:
    assert forms.our_form_text(forms.our_form(row)) == text


def test_the_ranking_sets_the_sources_form_beside_ours() -> None:
    data = report_data({
        "resnet18": experiment_row("resnet18", 0.93, 0.925, knobs={"stem": "lowres"}, epochs=15,
                                   augmentation="crop_flip", tta="flip"),
        "lenet": experiment_row("lenet", 0.90, 0.89),
        "nin": experiment_row("nin", 0.88, 0.87, input_size=84),
    })
    frame = tables.format_family_ranking(tables.family_ranking(data))
    resnet, lenet, nin = (frame.iloc[i].to_dict() for i in range(3))
    assert resnet["our form"] == "lowres stem, 28 px, 15 epochs, crops and flips, flip TTA"
    assert resnet["published at native resolution"] == (
        "93.97 %: lowres_resnet18 (full width); without shortcuts (lowres_resnet18_noresidual) "
        "93.73 % [pytorch-pretrained-cnns]; theirs: 3x3 stride-1 conv + 3x3/2 max pool stem, 32 px, "
        "up to 100 epochs, no augmentation")
    assert lenet["our form"] == "28 px, 10 epochs, no augmentation"
    assert lenet["published at native resolution"] == (
        "89.10 %: LeNet-5 (about 62k parameters) [katie-codes-io]; theirs: 28 px, epochs not stated, "
        "augmentation not stated")
    assert nin["our form"] == "d2l's stem, 84 px, 10 epochs, no augmentation"
    assert nin["published at native resolution"] == "none published"


def unlike_families(rows: list[dict[str, Any]]) -> list[str]:
    return [note.split(":")[0] for note in tables.form_notes(rows) if note.endswith("not like with like.")]


def test_the_notes_say_not_like_with_like_exactly_where_the_stem_or_resolution_differs() -> None:
    data = report_data({
        # their 3x3/1 conv keeps the max pool, ours (lowres) drops it: the stems differ at equal size
        "resnet18": experiment_row("resnet18", 0.95, 0.95, input_size=32, knobs={"stem": "lowres"}),
        # the same stem as lowres_googlenet, and theirs 32 px
        "googlenet": experiment_row("googlenet", 0.94, 0.94, input_size=32, knobs={"stem": "lowres"}),
        "vgg11": experiment_row("vgg11", 0.93, 0.93, input_size=32),  # no stem knob, same size
        "alexnet": experiment_row("alexnet", 0.92, 0.92, input_size=84),  # d2l's stem, 84 px
        "densenet": experiment_row("densenet", 0.91, 0.95, input_size=32),  # d2l's stem by default
        "lenet": experiment_row("lenet", 0.90, 0.90),  # 28 px as theirs
        "mlp": experiment_row("mlp", 0.89, 0.90, input_size=32),  # theirs 28 px
        "nin": experiment_row("nin", 0.88, 0.88, input_size=84),  # nothing published
    })
    rows = tables.family_ranking(data)
    notes = tables.form_notes(rows)
    assert unlike_families(rows) == ["ResNet-18", "AlexNet", "DenseNet", "MLP"]
    assert ("ResNet-18: ours uses the lowres stem, theirs a 3x3 stride-1 conv + 3x3/2 max pool stem "
            "(both at 32 px): not like with like.") in notes
    assert ("AlexNet: ours uses d2l's stem at 84 px, theirs a 3x3 stride-1 conv stem at 32 px: not "
            "like with like.") in notes
    assert "MLP: ours is at 32 px, theirs at 28 px: not like with like." in notes
    same_stem = report_data({"googlenet": experiment_row("googlenet", 0.94, 0.94, knobs={"stem": "lowres"}),
                             "lenet": experiment_row("lenet", 0.90, 0.90)})
    assert tables.form_notes(tables.family_ranking(same_stem)) == [
        "GoogLeNet: ours is at 28 px, theirs at 32 px (the same stem): not like with like."]
    assert notes[0] in tables.family_ranking_html(data)


def test_a_gap_of_more_than_one_and_a_half_points_is_explained_from_the_plain_accuracy() -> None:
    resnet = {**experiment_row("resnet18", 0.95, 0.9300, knobs={"stem": "lowres", "width": 0.25}, epochs=15,
                               augmentation="crop_flip", tta="flip"),
              "test_acc_without_tta_mean": 0.9200}  # 0.67 points below with TTA, 1.97 without
    data = report_data({
        "resnet18": resnet,
        "vgg11": experiment_row("vgg11", 0.94, 0.9211, input_size=32, epochs=100),  # 1.49 below
        "googlenet": experiment_row("googlenet", 0.93, 0.9193, input_size=32, knobs={"stem": "lowres"},
                                    epochs=100),  # 1.51 below, the same form as far as it is stated
        "lenet": experiment_row("lenet", 0.90, 0.8700),  # 2.10 below; theirs states only 28 px
        "mlp": experiment_row("mlp", 0.89, 0.9500),  # above theirs
    })
    gaps = [note for note in tables.form_notes(tables.family_ranking(data)) if "points below" in note]
    assert gaps == [
        "ResNet-18: 92.00 % here without TTA is 1.97 points below the published 93.97 %; the forms "
        "differ in stem (lowres against 3x3 stride-1 conv + 3x3/2 max pool), resolution (28 against "
        "32 px), epochs (15 against up to 100), augmentation (crops and flips against no "
        "augmentation) and width (ours channels x 0.25), the likely reasons.",
        "GoogLeNet: 91.93 % here is 1.51 points below the published 93.44 %; the forms agree wherever "
        "the source states them, so they do not explain it.",
        "LeNet: 87.00 % here is 2.10 points below the published 89.10 %; the forms agree wherever "
        "the source states them, so they do not explain it.",
    ]


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
