"""d2l's published numbers: one versioned file, consistent with the recipe preset and the model
zoo, matched to exactly the experiments that train as d2l does, and shown in the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from convbench import reference
from convbench.report import load, tables
from convbench.recipe import D2L_SETTINGS
from convbench.study import load_study

ROOT = Path(__file__).resolve().parents[1]
BOOK = reference.d2l()


def test_the_file_agrees_with_the_d2l_preset() -> None:
    assert BOOK.dataset == "fashion_mnist" and BOOK.epochs == 10
    for result in BOOK.results.values():
        assert (result.lr, result.batch_size, result.input_size) == D2L_SETTINGS[result.arch]
        assert result.test_acc_low <= result.test_acc_median <= result.test_acc_high
        assert result.test_acc_low <= result.test_acc <= result.test_acc_high
    assert "20 published builds" in BOOK.source


def test_counterparts_in_the_seeds_study_are_d2l_networks_at_d2l_settings() -> None:
    study = load_study(ROOT / "params.yaml", "fashion_mnist_d2l")
    matched = {
        name: result.key
        for name, e in study.experiments.items()
        if (result := BOOK.counterpart(study.dataset, e.arch, e.knobs, e.input_size, e.recipe))
    }
    assert matched == {
        "lenet": "lenet", "lenet_bn": "lenet_bn", "alexnet": "alexnet",
        "vgg11_small": "vgg11_small", "nin": "nin", "googlenet": "googlenet",
        "resnet18": "resnet18", "densenet": "densenet",
    }


def test_no_counterpart_for_another_recipe_size_knob_or_dataset() -> None:
    cpu = load_study(ROOT / "params.yaml", "fashion_mnist_cpu")
    d2l_lenet = cpu.experiment("lenet_d2l")
    assert BOOK.counterpart("fashion_mnist", "lenet", {}, 28, d2l_lenet.recipe).key == "lenet"
    modern = cpu.experiment("lenet")  # the same network, the modern recipe
    assert BOOK.counterpart("fashion_mnist", "lenet", {}, 28, modern.recipe) is None
    assert BOOK.counterpart("fashion_mnist", "lenet", {}, 32, d2l_lenet.recipe) is None
    assert BOOK.counterpart("fashion_mnist", "lenet", {"activation": "relu"}, 28,
                            d2l_lenet.recipe) is None
    assert BOOK.counterpart("mnist", "lenet", {}, 28, d2l_lenet.recipe) is None
    digits = load_study(ROOT / "params.yaml")
    assert not [e for e in digits.experiments.values()
                if BOOK.counterpart(digits.dataset, e.arch, e.knobs, e.input_size, e.recipe)]


@pytest.mark.parametrize(
    ("accuracy", "verdict"),
    [(0.778, "below d2l's range"), (0.779, "inside d2l's range"), (0.824, "inside d2l's range"),
     (0.8241, "above d2l's range")],
)
def test_verdict_against_the_range(accuracy: float, verdict: str) -> None:
    assert BOOK.results["lenet"].verdict(accuracy) == verdict


def test_report_section_sets_our_fold_means_beside_the_book() -> None:
    study = load_study(ROOT / "params.yaml", "fashion_mnist_cpu")
    results = {"experiments": {
        name: {"val_acc_mean": 0.80, "val_acc_std": 0.01, "test_acc_mean": 0.7901,
               "test_acc_std": 0.0123}
        for name in study.experiments
    }}
    data = load.ReportData(study=study, results=results, run_metrics={}, perf={},
                           history=None, dataset=None)  # the section reads neither
    rows = tables.against_the_book(data)
    assert [row["experiment"] for row in rows] == ["lenet_d2l", "lenet_bn_d2l"]
    table = tables.format_against_the_book(rows)
    lenet = table.iloc[0].to_dict()
    assert lenet["d2l test acc (%), latest build"] == "77.90"
    assert lenet["d2l range over 20 builds (%)"] == "77.90\u201382.40 (median 80.80)"
    assert lenet["our test acc (%)"] == "79.01\u00a0±\u00a01.23"
    assert lenet["verdict"] == "inside d2l's range"
    assert table.iloc[1]["verdict"] == "inside d2l's range"  # LeNet + BN: 0.590-0.885
    page = tables.against_the_book_html(rows, study)
    assert "LeNet + BatchNorm" in page and "3 fold models" in page and "2/3 of the training" in page


def test_report_section_says_when_nothing_matches() -> None:
    study = load_study(ROOT / "params.yaml")
    assert "No experiment of this study has a d2l counterpart" in tables.against_the_book_html([], study)
