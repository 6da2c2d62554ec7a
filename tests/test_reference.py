"""d2l's published numbers: one versioned file, consistent with the recipe preset and the model
zoo, matched to exactly the experiments that train as d2l does, and shown in the report."""

from __future__ import annotations

import copy
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


# --------------------------------------------------------------- native.yaml: the source's form


def test_every_published_native_result_names_the_form_its_source_trained_in() -> None:
    native = reference.native()
    for arch, result in native.families.items():
        assert (result.form is None) == (result.test_acc is None), arch
    resnet, densenet = native.families["resnet18"].form, native.families["densenet"].form
    for form in (resnet, densenet):  # pytorch-pretrained-cnns keeps the max pool: our lowres_pool stem
        assert form.stem == "3x3 stride-1 conv + 3x3/2 max pool" and form.stem_knob == "lowres_pool"
        assert (form.input_px, form.epochs, form.epochs_up_to, form.augmentation) == (32, 100, True, "none")
    assert native.families["googlenet"].form.stem_knob == "lowres"
    assert native.families["alexnet"].form.stem_knob == "lowres"
    assert native.families["vgg11"].form.stem == "n/a"
    assert native.families["mlp"].form.epochs is None  # zalando's table does not say
    lenet = native.families["lenet"].form
    assert (lenet.input_px, lenet.epochs, lenet.augmentation) == (28, None, None)
    assert native.under_100k.form.epochs == 30


def changed_form(arch: str, **changes: object) -> dict[str, object]:
    """native.yaml's form of ``arch`` with ``changes``."""
    return {**reference.native_yaml()["families"][arch]["form"], **changes}


@pytest.mark.parametrize(
    ("arch", "form", "message"),
    [
        ("resnet18", None, r"native\.yaml: resnet18: form: missing"),
        ("nin", changed_form("vgg11"), r"native\.yaml: nin: form: given without a result"),
        ("googlenet", {"stem": "x", "input_px": 32}, r"native\.yaml: googlenet: form: needs exactly"),
        ("densenet", "32 px", r"native\.yaml: densenet: form: must be a mapping"),
        ("alexnet", changed_form("alexnet", input_px=32.5),
         r"native\.yaml: alexnet: form\.input_px: must be a positive integer"),
        ("vgg11", changed_form("vgg11", epochs="up to 100"),
         r"native\.yaml: vgg11: form\.epochs: must be a positive integer"),
        ("vgg11", changed_form("vgg11", epochs=None),
         r"native\.yaml: vgg11: form\.epochs_up_to: .*true only with epochs"),
        ("resnet18", changed_form("resnet18", stem_knob="cifar"),
         r"native\.yaml: resnet18: form\.stem_knob: must be one of"),
        ("mlp", changed_form("mlp", augmentation=""),
         r"native\.yaml: mlp: form\.augmentation: must be text or null"),
    ],
)
def test_a_bad_form_is_refused_naming_the_file_and_the_family(arch: str, form: object, message: str) -> None:
    raw = copy.deepcopy(reference.native_yaml())
    raw["families"][arch]["form"] = form
    with pytest.raises(ValueError, match=message):
        reference.parse_native(raw)
    reference.parse_native(reference.native_yaml())  # the file itself passes
