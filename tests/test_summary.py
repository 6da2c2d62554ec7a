"""``summarize`` and the ``convbench models`` / ``convbench summary`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from convbench import cli, reference
from convbench.models import build, names, spec
from convbench.summary import parse_overrides, summarize

LAYER_KEYS = {"name", "type", "output_shape", "params"}
# Published parameter counts, each with its source: d2l's, and tests/reference_params.yaml's.
BOOK = reference.d2l().results
FULL_VGG11 = next(entry["params"] for entry in yaml.safe_load(
    Path(__file__).with_name("reference_params.yaml").read_text())["networks"] if entry["arch"] == "vgg11")


def meta_build(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return build(name, **kwargs)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------- summarize


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("depth", [None, 1, 2])
def test_rows_add_up_to_the_model(name: str, depth: int | None) -> None:
    size = spec(name).default_input_size
    model = meta_build(name)
    result = summarize(model, in_channels=1, input_size=size, depth=depth)
    total = sum(p.numel() for p in model.parameters())
    assert result["params"] == result["trainable_params"] == total
    assert sum(row["params"] for row in result["layers"]) == total
    assert result["layers"][-1]["output_shape"] == result["output_shape"] == [1, 10]
    assert result["input_shape"] == [1, 1, size, size]
    assert result["macs"] > 0 and result["macs"] == result["flops"] // 2
    for row in result["layers"]:
        assert set(row) == LAYER_KEYS
        if depth is not None:
            assert row["name"].count(".") < depth


def test_lenet_macs_match_a_hand_count() -> None:
    conv1 = 28 * 28 * 6 * 25  # 6 maps of 28x28 (padding 2), 5x5 kernels on 1 channel
    conv2 = 10 * 10 * 16 * 6 * 25  # 16 maps of 10x10, 5x5 kernels on 6 channels
    linear = 400 * 120 + 120 * 84 + 84 * 10
    result = summarize(build("lenet"), in_channels=1, input_size=28)
    assert result["macs"] == conv1 + conv2 + linear == 416_520
    assert result["flops"] == 2 * result["macs"]


def test_leaf_rows_follow_the_forward_pass() -> None:
    result = summarize(build("lenet"), in_channels=1, input_size=28)
    rows = [(row["name"], row["type"], row["output_shape"]) for row in result["layers"]]
    assert rows[0] == ("features.0", "Conv2d", [1, 6, 28, 28])
    assert rows[3] == ("features.3", "Conv2d", [1, 16, 10, 10])
    assert rows[-1] == ("classifier.4", "Linear", [1, 10])


def test_depth_folds_modules_into_their_ancestors() -> None:
    model = meta_build("googlenet")
    top = summarize(model, in_channels=1, input_size=96, depth=1)["layers"]
    assert [row["name"] for row in top] == ["b1", "b2", "b3", "b4", "b5", "fc"]
    assert top[2]["output_shape"] == [1, 480, 6, 6]
    second = summarize(model, in_channels=1, input_size=96, depth=2)["layers"]
    assert ("b3.0", "Inception") in [(row["name"], row["type"]) for row in second]
    with pytest.raises(ValueError, match="depth"):
        summarize(model, in_channels=1, input_size=96, depth=0)


def test_a_shared_module_gets_a_row_per_call_and_its_parameters_once() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.shared(self.shared(x.flatten(1))))

    result = summarize(Twice(), in_channels=1, input_size=2)
    assert [(row["name"], row["params"]) for row in result["layers"]] == [
        ("shared", 20), ("shared", 0), ("out", 10)
    ]
    assert result["macs"] == 16 + 16 + 8


def test_shared_pool_of_the_course_nets_appears_at_both_calls() -> None:
    rows = summarize(build("mini_resnet"), in_channels=1, input_size=28)["layers"]
    assert [row["output_shape"] for row in rows if row["name"] == "mp"] == [
        [1, 16, 12, 12], [1, 32, 4, 4]
    ]
    assert not [row for row in rows if row["type"] == "Identity"]  # BN placeholders hidden


@pytest.mark.parametrize("name", ["lenet_bn", "mini_inception", "googlenet", "densenet"])
def test_meta_device_gives_the_same_summary_as_the_cpu(name: str) -> None:
    size = spec(name).min_input_size
    on_cpu = summarize(build(name, input_size=size), in_channels=1, input_size=size)
    on_meta = summarize(meta_build(name, input_size=size), in_channels=1, input_size=size)
    assert on_meta == on_cpu


def test_summarize_restores_the_training_mode() -> None:
    model = build("lenet_bn").train()
    summarize(model, in_channels=1, input_size=28)
    assert model.training and all(m.training for m in model.modules())


# ---------------------------------------------------------------------------- parse_overrides


def test_overrides_are_yaml_scalars() -> None:
    parsed = parse_overrides(["width=0.25", "batch_norm=false", "activation=relu", "dropout=0"])
    assert parsed == {"width": 0.25, "batch_norm": False, "activation": "relu", "dropout": 0}
    assert isinstance(parsed["width"], float) and isinstance(parsed["batch_norm"], bool)
    assert parse_overrides(["dropout=null", "name=a=b"]) == {"dropout": None, "name": "a=b"}
    assert parse_overrides([]) == {}


@pytest.mark.parametrize("pair", ["width", "=0.25"])
def test_an_override_without_a_knob_is_refused(pair: str) -> None:
    with pytest.raises(ValueError, match="knob=value"):
        parse_overrides([pair])


# ------------------------------------------------------------------------------------- the CLI


def test_models_lists_every_network(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0
    for name in names():
        assert name in out
    vgg11 = next(line for line in out.splitlines() if line.split()[0] == "vgg11")
    assert f"{FULL_VGG11:,}" in vgg11.split()
    assert "stem" not in vgg11  # no stem knob
    densenet = next(line for line in out.splitlines() if line.split()[0] == "densenet")
    assert densenet.split()[2] == "29"  # the default (d2l) stem's minimum, and the others beside it
    assert densenet.endswith("Other stems (knob stem): lowres from 8 px, lowres_pool from 15 px.")


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    entries = json.loads(out)
    assert [entry["name"] for entry in entries] == names()
    by_name = {entry["name"]: entry for entry in entries}
    assert by_name["googlenet"]["params"] == BOOK["googlenet"].params
    assert by_name["vgg11"]["knobs"]["width"] == 1.0
    assert by_name["mlp"]["knobs"]["dropout"] is None
    for entry in entries:
        assert {"name", "default_input_size", "min_input_size", "params", "knobs"} <= set(entry)
        assert entry["min_input_size"] == spec(entry["name"]).min_input_size
        assert entry["min_input_size_by_stem"] == spec(entry["name"]).min_input_size_by_stem
        assert "init" not in entry["knobs"]  # a recipe setting, not a knob


def test_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", "lenet")
    assert code == 0
    assert "features.0" in out and "Conv2d" in out and "1 x 6 x 28 x 28" in out
    assert f"{BOOK['lenet'].params:,}" in out and "416,520" in out  # params, MACs
    assert "1 x 1 x 28 x 28" in out  # input shape


def test_summary_json_acceptance_vgg11_quarter_width(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", "vgg11", "--set", "width=0.25", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["params"] == BOOK["vgg11_small"].params
    assert result["arch"] == "vgg11" and result["input_size"] == 224
    assert result["in_channels"] == 1 and result["num_classes"] == 10
    assert result["knobs"]["width"] == 0.25 and result["knobs"]["dropout"] == 0.5
    assert result["macs"] == result["flops"] // 2 > 0
    assert result["layers"] and set(result["layers"][0]) == LAYER_KEYS


def test_summary_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "summary", "resnet18", "--input-size", "64", "--in-channels", "3",
        "--num-classes", "100", "--set", "batch_norm=false", "--depth", "1", "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["input_size"] == 64 and result["input_shape"] == [1, 3, 64, 64]
    assert result["output_shape"] == [1, 100] and result["knobs"]["batch_norm"] is False
    assert [row["name"] for row in result["layers"]] == ["b1", "b2", "b3", "b4", "b5", "head"]
    assert not [row for row in result["layers"] if "BatchNorm" in row["type"]]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["summary", "resnet99"], 1, "convbench summary: error: unknown network 'resnet99'"),
        (["summary", "vgg11", "--set", "depth=3"], 1, "does not accept knob(s) depth"),
        (["summary", "vgg11", "--input-size", "31"], 1, "needs input_size >= 32"),
        (["summary", "vgg11", "--set", "width=wide"], 1, "width must be a number"),
        (["summary", "vgg11", "--set", "dropout=[1]"], 1, "dropout must be in [0, 1), got [1]"),
        (["summary", "lenet", "--set", "activation=swish"], 1, "activation must be one of"),
        (["summary", "lenet", "--set", "activation=[relu]"], 1, "activation must be one of"),
        (["summary", "vgg11", "--set", "width"], 2, "argument --set: expected knob=value"),
        (["summary", "lenet", "--depth", "0"], 2, "argument --depth: must be a positive integer"),
        (["summary"], 2, "required: name"),
        (["models", "--bogus"], 2, "unrecognized arguments"),
    ],
)
def test_errors_are_one_line_exit_1_for_a_value_and_2_for_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    """The convention of every command: a value the network refuses is exit 1, a usage error 2."""
    exit_code, out, err = run(capsys, *argv)
    assert exit_code == code
    assert message in err
    assert "Traceback" not in err and not out


def test_a_bug_inside_summary_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, raiser) -> None:
    """Only NetworkError is the user's: a plain ValueError from the code is not turned into a line."""
    bug = ValueError("operands could not be broadcast together")
    monkeypatch.setattr("convbench.summary.summarize_network", raiser(bug))
    with pytest.raises(ValueError) as raised:
        cli.main(["summary", "lenet"])
    assert raised.value is bug
