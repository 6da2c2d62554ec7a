"""The model zoo: every registered network is built, run forward and backward, and ablated.

Tests parametrize over ``names()``, so a newly registered network is covered at once. Structure
and parameter counts are checked on the meta device (no weights allocated); real forward passes
run at small sizes, and only the 224 px networks' full-size forward is marked slow.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from convbench import networks, reference
from convbench.models import build, names, spec
from convbench.models._layers import ACTIVATIONS
from convbench.models import _registry
from convbench.models._registry import register
from convbench.models.resnet import Residual
from convbench.study import StudyError, load_study

ALL_NETWORKS = {
    "lenet", "lenet_bn", "mlp", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "nin",
    "googlenet", "resnet18", "resnet34", "densenet", "mini_inception", "mini_resnet",
}

# Published parameter counts at 1 input channel, 10 classes, each file citing its source: d2l's
# (src/convbench/reference/d2l.yaml) and the others' (tests/reference_params.yaml).
REFERENCE_PARAMS = yaml.safe_load((Path(__file__).with_name("reference_params.yaml")).read_text())
PUBLISHED_PARAMS = {
    (result.arch, tuple(sorted(result.knobs.items()))): result.params
    for result in reference.d2l().results.values()
} | {
    (entry["arch"], tuple(sorted(entry["knobs"].items()))): entry["params"]
    for entry in REFERENCE_PARAMS["networks"]
}

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def meta_build(name: str, **kwargs: object) -> nn.Module:
    """The architecture without weights: enough for structure, shapes and parameter counts."""
    with torch.device("meta"):
        return build(name, **kwargs)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def modules_of(model: nn.Module, kind: type | tuple[type, ...]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def small_size(name: str) -> int:
    """A cheap input size that still leaves every stage a few pixels: the minimum, or 32."""
    return max(spec(name).min_input_size, 32)


def with_knob(knob: str) -> list[str]:
    return [name for name in names() if knob in spec(name).knobs]


def default_size_param(name: str):
    slow = spec(name).default_input_size >= 224  # AlexNet, NiN, VGG: seconds on 2 CPU cores
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


# ------------------------------------------------------------------------------- the registry


def test_names_include_the_whole_zoo() -> None:
    assert ALL_NETWORKS <= set(names())


def test_names_are_sorted_whatever_the_registration_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a registry of its own, filled out of order: the zoo's order cannot hide an unsorted list."""
    monkeypatch.setattr(_registry, "_REGISTRY", {})

    def builder(*, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
        return nn.Identity()

    for name in ("zeta_net", "alpha_net", "mid_net"):
        register(name, default_input_size=8, min_input_size=1)(builder)
    assert list(_registry._REGISTRY) == ["zeta_net", "alpha_net", "mid_net"]
    assert names() == ["alpha_net", "mid_net", "zeta_net"]


def test_registry_refuses_a_duplicate_name() -> None:
    def builder(*, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register("lenet", default_input_size=28, min_input_size=1)(builder)
    assert spec("lenet").builder is not builder


def documented_knobs(name: str) -> set[str]:
    """The ``knob`` names a builder's docstring marks up, with those of a network it refers to
    ("Knobs as for ``lenet``")."""
    doc = spec(name).builder.__doc__ or ""
    marked = set(re.findall(r"``(\w+)``", doc))
    for other in re.findall(r"Knobs as for ``(\w+)``", doc):
        marked |= documented_knobs(other)
    return marked


@pytest.mark.parametrize("name", names())
def test_every_network_documents_its_knobs(name: str) -> None:
    entry = spec(name)
    assert "activation" in entry.knobs
    assert entry.summary
    undocumented = set(entry.knobs) - {"init"} - documented_knobs(name)
    assert not undocumented, f"{name}: knob(s) {sorted(undocumented)} undocumented"
    assert 1 <= entry.min_input_size <= entry.default_input_size


@pytest.mark.parametrize(("name", "knobs"), list(PUBLISHED_PARAMS), ids=lambda v: str(v))
def test_parameter_counts_match_their_sources(name: str, knobs: tuple[tuple[str, object], ...]) -> None:
    assert count(meta_build(name, **dict(knobs))) == PUBLISHED_PARAMS[(name, knobs)]


@pytest.mark.parametrize("name", names())
def test_unknown_knob_names_the_network_and_the_accepted_knobs(name: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        build(name, no_such_knob=1)
    # each part read whole: a knob name that is only part of a word, or a list with a knob
    # missing or too many, fails
    parts = re.fullmatch(r"network '(\w+)' does not accept knob\(s\) (.+); it accepts: (.+)",
                         str(excinfo.value))
    assert parts, str(excinfo.value)
    assert parts[1] == name
    assert parts[2].split(", ") == ["no_such_knob"]
    assert parts[3].split(", ") == sorted(spec(name).knobs)


# ----------------------------------------------------------------------- forward and backward


@pytest.mark.parametrize("name", [default_size_param(name) for name in names()])
def test_output_shape_at_the_default_size(name: str) -> None:
    size = spec(name).default_input_size
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", names())
def test_backward_gives_finite_gradients_for_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    size = small_size(name)
    model = build(name, input_size=size).train()
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: {param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: {param_name} has a non-finite gradient"


@pytest.mark.parametrize("name", names())
def test_three_channels_and_a_hundred_classes(name: str) -> None:
    size = spec(name).min_input_size
    model = build(name, in_channels=3, num_classes=100, input_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 100)


@pytest.mark.parametrize("name", names())
def test_below_the_minimum_size_is_refused(name: str) -> None:
    minimum = spec(name).min_input_size
    with pytest.raises(ValueError, match=rf">= {minimum}\b"):
        build(name, input_size=minimum - 1)


@pytest.mark.parametrize("name", names())
def test_the_minimum_size_runs(name: str) -> None:
    size = spec(name).min_input_size
    model = build(name, input_size=size)
    assert model.train()(torch.randn(2, 1, size, size)).shape == (2, 10)
    with torch.no_grad():  # eval mode, one image: the summary's setting
        assert model.eval()(torch.randn(1, 1, size, size)).shape == (1, 10)
    # one pixel more changes every rounding; the meta device checks the shapes for free
    bigger = meta_build(name, input_size=size + 1)
    assert bigger(torch.empty(2, 1, size + 1, size + 1, device="meta")).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", names())
def test_every_size_above_the_minimum_builds_and_runs(name: str) -> None:
    minimum = spec(name).min_input_size
    for size in range(minimum, minimum + 33):  # every remainder modulo the deepest stride, 32
        model = meta_build(name, input_size=size)
        out = model(torch.empty(2, 1, size, size, device="meta"))
        assert out.shape == (2, 10), f"{name} at {size} px"


# ------------------------------------------------------------------------------------- knobs


@pytest.mark.parametrize("name", with_knob("activation"))
def test_activation_knob_swaps_every_activation(name: str) -> None:
    default = spec(name).knobs["activation"]
    other = "tanh" if default != "tanh" else "relu"
    before = meta_build(name)
    after = meta_build(name, activation=other)
    assert modules_of(before, ACTIVATIONS[default])
    assert not modules_of(before, ACTIVATIONS[other])
    assert len(modules_of(after, ACTIVATIONS[other])) == len(modules_of(before, ACTIVATIONS[default]))
    assert not modules_of(after, ACTIVATIONS[default])


@pytest.mark.parametrize("name", with_knob("pool"))
def test_pool_knob_switches_between_max_and_average(name: str) -> None:
    as_max, as_avg = meta_build(name, pool="max"), meta_build(name, pool="avg")
    switched = len(modules_of(as_max, nn.MaxPool2d)) - len(modules_of(as_avg, nn.MaxPool2d))
    assert switched > 0
    assert len(modules_of(as_avg, nn.AvgPool2d)) - len(modules_of(as_max, nn.AvgPool2d)) == switched


@pytest.mark.parametrize("name", with_knob("batch_norm"))
def test_batch_norm_knob_adds_or_removes_every_bn(name: str) -> None:
    assert modules_of(meta_build(name, batch_norm=True), BATCH_NORMS)
    assert not modules_of(meta_build(name, batch_norm=False), BATCH_NORMS)


@pytest.mark.parametrize("name", with_knob("dropout"))
def test_dropout_knob_sets_every_dropout(name: str) -> None:
    drops = modules_of(meta_build(name, dropout=0.3), nn.Dropout)
    assert drops and all(d.p == 0.3 for d in drops)
    assert not [d for d in modules_of(meta_build(name, dropout=0.0), nn.Dropout) if d.p > 0]


def test_mlp_dropout_defaults_to_d2l_pair() -> None:
    assert [d.p for d in modules_of(meta_build("mlp"), nn.Dropout)] == [0.2, 0.5]


@pytest.mark.parametrize("name", with_knob("width"))
def test_width_knob_scales_the_channels(name: str) -> None:
    def first_width(model: nn.Module) -> int:
        layer = modules_of(model, (nn.Conv2d, nn.Linear))[0]
        return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features

    full, half = meta_build(name), meta_build(name, width=0.5)
    assert first_width(half) == first_width(full) // 2
    assert count(half) < count(full)


@pytest.mark.parametrize("name", with_knob("width"))
def test_width_must_be_a_positive_number(name: str) -> None:
    for width in (0, -1.0, "wide"):
        with pytest.raises(ValueError, match="width"):
            meta_build(name, width=width)


def test_vgg_width_leaves_the_classifier_alone() -> None:
    hidden = [m.out_features for m in modules_of(meta_build("vgg11", width=0.25), nn.Linear)]
    assert hidden == [4096, 4096, 10]


@pytest.mark.parametrize("name", with_knob("hidden"))
def test_hidden_knob_sizes_the_two_hidden_linear_layers(name: str) -> None:
    widths = [m.out_features for m in modules_of(meta_build(name, hidden=256), nn.Linear)]
    assert widths == [256, 256, 10]
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="hidden"):
            meta_build(name, hidden=bad)


@pytest.mark.parametrize("name", with_knob("shortcut"))
def test_plain_network_drops_the_additions(name: str) -> None:
    residual, plain = meta_build(name), meta_build(name, shortcut=False)
    if name == "mini_resnet":  # identity shortcuts only: the same weights
        assert count(plain) == count(residual)
    else:  # the 1x1 projections go too
        assert count(plain) < count(residual)


def test_plain_resnet18_has_no_projections() -> None:
    residual, plain = meta_build("resnet18"), meta_build("resnet18", shortcut=False)
    one_by_one = [m for m in modules_of(residual, nn.Conv2d) if m.kernel_size == (1, 1)]
    assert len(one_by_one) == 3  # one per stage after the first
    assert not [m for m in modules_of(plain, nn.Conv2d) if m.kernel_size == (1, 1)]


@pytest.mark.parametrize("stride", [1, 2])
def test_residual_block_differs_from_its_plain_twin(stride: int) -> None:
    torch.manual_seed(0)
    options = {"activation": "relu", "batch_norm": True}
    residual = Residual(8, 16 if stride == 2 else 8, stride, shortcut=True, **options).eval()
    plain = Residual(8, 16 if stride == 2 else 8, stride, shortcut=False, **options).eval()
    missing, unexpected = plain.load_state_dict(residual.state_dict(), strict=False)
    assert not missing and set(unexpected) <= {"conv3.weight", "conv3.bias"}
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        assert not torch.allclose(residual(x), plain(x))
        expected = torch.relu(plain.bn2(plain.conv2(plain.act1(plain.bn1(plain.conv1(x))))))
        assert torch.allclose(plain(x), expected)


def test_mini_resnet_shortcut_is_the_only_difference() -> None:
    torch.manual_seed(0)
    residual = build("mini_resnet").eval()
    plain = build("mini_resnet", shortcut=False).eval()
    plain.load_state_dict(residual.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(residual(x), plain(x))



def test_mini_resnet_width_scales_both_stages() -> None:
    """width=1.5 with batch norm: 24 and 48 channels. By hand: conv1 1*24*25+24, bn 2*24, block
    2*(24*24*9+24) + 2*2*24, conv2 24*48*25+48, bn 2*48, block 2*(48*48*9+48) + 2*2*48, fc
    48*4*4*10+10 = 89578 (the chapter study's network under 100k parameters)."""
    wide = build("mini_resnet", batch_norm=True, width=1.5)
    assert (wide.conv1.out_channels, wide.conv2.out_channels) == (24, 48)
    assert sum(p.numel() for p in wide.parameters()) == 89_578
    assert wide(torch.randn(2, 1, 28, 28)).shape == (2, 10)

# ------------------------------------------------------------------------------------- stems

STEMMED = {"resnet18", "resnet34", "densenet", "googlenet", "alexnet", "nin"}


def entering_first_block(model: nn.Module, name: str) -> nn.Module:
    """The module right after the stem: the first stage, dense block or Inception group, or for
    AlexNet and NiN (whose stem is their first convolution) the first pooling."""
    return {"resnet18": lambda: model.b2, "resnet34": lambda: model.b2,
            "densenet": lambda: model.blocks[0], "googlenet": lambda: model.b3,
            "alexnet": lambda: modules_of(model.features, (nn.MaxPool2d, nn.AvgPool2d))[0],
            "nin": lambda: model.net[1]}[name]()


def input_sides(model: nn.Module, modules: list[nn.Module], size: int) -> list[int]:
    """The side of the map each of ``modules`` receives when ``model`` sees one ``size`` px image."""
    sides: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda _, args: sides.append(args[0].shape[-1])) for m in modules]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return sides


def test_the_stem_knob_is_on_the_families_with_a_stem() -> None:
    """VGG has no stem to change (its docstring says why); the others default to d2l's."""
    assert set(with_knob("stem")) == STEMMED
    for name in STEMMED:
        assert spec(name).knobs["stem"] == "d2l"


@pytest.mark.parametrize("stem", networks.STEMS)
@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("name", sorted(STEMMED))
def test_every_stem_at_28_and_32_px(name: str, stem: str, size: int) -> None:
    """Every stem a network builds gives 10 logits where it can run; d2l's 11x11/4 stems (AlexNet,
    NiN, 65 and 67 px) and DenseNet's (29 px) are refused below their minimum instead."""
    if stem not in spec(name).min_input_size_by_stem:
        pytest.skip(f"{name} has no {stem} stem (test_a_network_without_the_pooled_stem_refuses_it)")
    minimum = spec(name).min_input_size_by_stem[stem]
    if size < minimum:
        with pytest.raises(ValueError, match=rf"with stem '{stem}' needs input_size >= {minimum}, got {size}"):
            build(name, stem=stem, input_size=size)
        return
    model = build(name, stem=stem, input_size=size, width=0.25).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("name", sorted(STEMMED))
def test_the_lowres_stem_keeps_the_input_size(name: str, size: int) -> None:
    model = build(name, stem="lowres", input_size=size, width=0.25)
    assert input_sides(model, [entering_first_block(model, name)], size) == [size]
    if size >= spec(name).min_input_size:  # d2l's stems shrink the image first
        d2l = build(name, input_size=size, width=0.25)
        assert input_sides(d2l, [entering_first_block(d2l, name)], size)[0] < size


def test_lowres_resnet_stages_see_28_14_7_and_4_px() -> None:
    model = build("resnet18", stem="lowres", input_size=28, width=0.25)
    assert input_sides(model, [model.b2, model.b3, model.b4, model.b5], 28) == [28, 28, 14, 7]
    assert input_sides(model, [model.head], 28) == [4]
    d2l = build("resnet18", input_size=28, width=0.25)  # d2l's stem: 7 px at once, 1 px at the end
    assert input_sides(d2l, [d2l.b2, d2l.head], 28) == [7, 1]


def test_lowres_pool_resnet_stages_see_14_7_4_and_2_px() -> None:
    """pytorch-pretrained-cnns' form: the lowres convolution, then d2l's 3x3/2 max-pool."""
    model = build("resnet18", stem="lowres_pool", input_size=28, width=0.25)
    assert input_sides(model, [model.b2, model.b3, model.b4, model.b5, model.head], 28) == [14, 14, 7, 4, 2]
    assert isinstance(model.b1[-1], nn.MaxPool2d)
    assert input_sides(model, [model.head], 32) == [2]


def test_lowres_pool_densenet_blocks_see_14_7_3_and_1_px() -> None:
    model = build("densenet", stem="lowres_pool", input_size=28, width=0.25)
    blocks = [m for m in model.blocks if type(m).__name__ == "DenseBlock"]
    assert input_sides(model, blocks, 28) == [14, 7, 3, 1]
    assert input_sides(model, blocks, 32) == [16, 8, 4, 2]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "densenet"])
def test_the_lowres_pool_stem_has_the_lowres_parameters(name: str) -> None:
    """A max-pool has no weights: the same counts as lowres (LOWRES_PARAMS, by hand)."""
    assert count(meta_build(name, stem="lowres_pool", input_size=28)) == LOWRES_PARAMS[name]


@pytest.mark.parametrize("name", ["googlenet", "nin", "alexnet"])
def test_a_network_without_the_pooled_stem_refuses_it(name: str, tmp_path: Path) -> None:
    assert "lowres_pool" not in spec(name).min_input_size_by_stem
    message = rf"network '{name}' has no stem 'lowres_pool'; its stems: d2l, lowres"
    with pytest.raises(ValueError, match=message):
        build(name, stem="lowres_pool", input_size=96)
    with pytest.raises(networks.NetworkError, match=message):
        networks.check_knobs(name, {"stem": "lowres_pool"})
    with pytest.raises(StudyError, match=rf"experiments\.net\.knobs: {message}"):
        load_study(write_study(tmp_path, {"arch": name, "knobs": {"stem": "lowres_pool"}, "input_size": 96}))


def test_lowres_googlenet_inception_groups_see_28_14_and_7_px() -> None:
    model = build("googlenet", stem="lowres", input_size=28, width=0.25)
    assert input_sides(model, [model.b3, model.b4, model.b5], 28) == [28, 14, 7]
    assert isinstance(model.b2, nn.Identity)


def test_lowres_densenet_blocks_see_28_14_7_and_3_px() -> None:
    model = build("densenet", stem="lowres", input_size=28, width=0.25)
    blocks = [m for m in model.blocks if type(m).__name__ == "DenseBlock"]
    assert input_sides(model, blocks, 28) == [28, 14, 7, 3]


# The lowres counts by hand, at 1 input channel and 10 classes. Where only the stem's weights
# change, from the d2l count (published: tests test_parameter_counts_match_their_sources) minus
# d2l's stem convolution(s) plus the lowres one (weights k*k*in*out + out biases; BN unchanged):
LOWRES_PARAMS = {
    # 11,178,378 - (7*7*1*64 + 64) + (3*3*1*64 + 64) = 11,178,378 - 3,200 + 640
    "resnet18": 11_175_818,
    # today's 21,290,250 - 3,200 + 640 (resnet34 has no published count)
    "resnet34": 21_287_690,
    # 758,226 - 3,200 + 640
    "densenet": 755_666,
    # 5,977,530 - [(7*7*1*64 + 64) + (1*1*64*64 + 64) + (3*3*64*192 + 192)] + (3*3*1*192 + 192)
    # = 5,977,530 - (3,200 + 4,160 + 110,784) + 1,920
    "googlenet": 5_861_306,
    # 1,992,166 - (11*11*1*96 + 96) + (5*5*1*96 + 96) = 1,992,166 - 11,712 + 2,496
    "nin": 1_982_950,
    # AlexNet's classifier depends on the input size; at 28 px, layer by layer: convs
    # 3*3*1*96+96 = 960, 5*5*96*256+256 = 614,656, 3*3*256*384+384 = 885,120,
    # 3*3*384*384+384 = 1,327,488, 3*3*384*256+256 = 884,992; linears (256*2*2)*4096+4096 =
    # 4,198,400, 4096*4096+4096 = 16,781,312, 4096*10+10 = 40,970; sum 24,733,898
    "alexnet": 24_733_898,
}


@pytest.mark.parametrize("name", sorted(STEMMED))
def test_lowres_parameter_counts_by_hand(name: str) -> None:
    assert count(meta_build(name, stem="lowres", input_size=28)) == LOWRES_PARAMS[name]
    if name != "alexnet":  # the others' classifiers do not depend on the input size
        assert count(meta_build(name, input_size=96)) - count(meta_build(name, stem="lowres", input_size=96)) \
            == count(meta_build(name)) - LOWRES_PARAMS[name]


@pytest.mark.parametrize("name", sorted(STEMMED))
def test_an_unknown_stem_is_refused_with_the_choices(name: str) -> None:
    for bad in ("foo", "LOWRES", 1, None):
        with pytest.raises(ValueError, match=rf"^stem must be one of \['d2l', 'lowres', 'lowres_pool'\], got {re.escape(repr(bad))}$"):
            build(name, stem=bad)


@pytest.mark.parametrize("name", sorted(STEMMED))
def test_each_stems_minimum_runs_and_one_less_is_refused(name: str) -> None:
    for stem, minimum in spec(name).min_input_size_by_stem.items():
        assert networks.min_input_size(name, {"stem": stem}) == minimum
        with pytest.raises(ValueError, match=rf"network '{name}' with stem '{stem}' needs input_size >= {minimum}\b"):
            build(name, stem=stem, input_size=minimum - 1)
        model = meta_build(name, stem=stem, input_size=minimum)
        assert model(torch.empty(2, 1, minimum, minimum, device="meta")).shape == (2, 10)
    assert spec(name).min_input_size == spec(name).min_input_size_by_stem["d2l"]
    if name in ("alexnet", "nin", "densenet"):  # d2l's stems are what needs the large images
        assert spec(name).min_input_size_by_stem["lowres"] < spec(name).min_input_size_by_stem["d2l"]


def test_the_catalogue_knows_the_stem_without_torch() -> None:
    """convbench.networks (no torch) has the knob, its default and each stem's minimum size."""
    for name in STEMMED:
        entry = networks.network(name)
        assert entry.knobs["stem"] == "d2l"
        assert entry.min_input_size_by_stem == spec(name).min_input_size_by_stem
        assert networks.min_input_size(name) == entry.min_input_size_by_stem["d2l"]
    assert networks.min_input_size("densenet", {"stem": "lowres"}) == 8
    assert networks.min_input_size("alexnet", {"stem": "lowres"}) == 15
    assert networks.min_input_size("densenet", {"stem": "lowres_pool"}) == 15
    assert networks.network("resnet18").min_input_size_by_stem == {"d2l": 1, "lowres": 1, "lowres_pool": 1}
    assert "stem" not in networks.network("vgg11").knobs
    assert networks.network("vgg11").min_input_size_by_stem == {}
    networks.check_knobs("resnet18", {"stem": "lowres"})
    with pytest.raises(networks.NetworkError, match=r"stem must be one of \['d2l', 'lowres', 'lowres_pool'\], got 'foo'"):
        networks.check_knobs("resnet18", {"stem": "foo"})


def write_study(tmp_path: Path, experiment: dict) -> Path:
    path = tmp_path / "stems.yaml"
    path.write_text(yaml.safe_dump({"study": "stems", "dataset": "fashion_mnist", "folds": 3,
                                    "experiments": {"net": experiment}}))
    return path


def test_the_study_check_accepts_a_lowres_stem_at_28_px(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, {"arch": "densenet", "knobs": {"stem": "lowres"}, "input_size": 28}))
    assert study.experiments["net"].knobs == {"stem": "lowres"}
    assert study.experiments["net"].input_size == 28


def test_the_study_check_refuses_an_unknown_stem(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"experiments\.net\.knobs: stem must be one of \['d2l', 'lowres', 'lowres_pool'\], got 'foo'"):
        load_study(write_study(tmp_path, {"arch": "resnet18", "knobs": {"stem": "foo"}, "input_size": 28}))
    with pytest.raises(StudyError, match=r"experiments\.net\.knobs: network 'vgg11' does not accept knob\(s\) stem"):
        load_study(write_study(tmp_path, {"arch": "vgg11", "knobs": {"stem": "lowres"}, "input_size": 32}))


@pytest.mark.parametrize(("arch", "stem", "size", "minimum"), [
    ("densenet", None, 28, 29), ("densenet", "d2l", 28, 29), ("densenet", "lowres", 7, 8),
    ("densenet", "lowres_pool", 14, 15),
    ("alexnet", "d2l", 28, 65), ("alexnet", "lowres", 14, 15), ("nin", "d2l", 66, 67), ("nin", "lowres", 14, 15),
])
def test_the_study_check_refuses_a_size_below_the_stems_minimum(
    tmp_path: Path, arch: str, stem: str | None, size: int, minimum: int
) -> None:
    """The error names the experiment, the network, the stem and the smallest size."""
    experiment = {"arch": arch, "input_size": size} | ({"knobs": {"stem": stem}} if stem else {})
    expected = (rf"experiments\.net\.input_size: network '{arch}' with stem '{stem or 'd2l'}' needs "
                rf"input_size >= {minimum}, got {size}$")
    with pytest.raises(StudyError, match=expected):
        load_study(write_study(tmp_path, experiment))


# -------------------------------------------------------------------------------------- init

INIT_NETWORKS = ["lenet", "mlp", "mini_inception", "resnet18"]


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    return modules_of(model, (nn.Conv2d, nn.Linear))


@pytest.mark.parametrize("name", INIT_NETWORKS)
def test_xavier_init_stays_within_the_xavier_bound(name: str) -> None:
    torch.manual_seed(0)
    default = build(name)
    torch.manual_seed(0)
    xavier = build(name, init="xavier")
    for before, layer in zip(weighted_layers(default), weighted_layers(xavier), strict=True):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound + 1e-6
        assert not torch.equal(layer.weight, before.weight)


@pytest.mark.parametrize("name", INIT_NETWORKS)
def test_kaiming_init_has_the_he_standard_deviation(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, init="kaiming")
    checked = 0
    for layer in weighted_layers(model):
        if layer.weight.numel() < 2000:  # too few samples for a tight estimate
            continue
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        expected = math.sqrt(2.0 / fan_in)
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.1)
        if layer.bias is not None:
            assert not layer.bias.any()
        checked += 1
    assert checked > 0


def test_unknown_init_is_refused() -> None:
    with pytest.raises(ValueError, match="init"):
        build("lenet", init="orthogonal")


def modules_deterministic_mode_refuses_on_cuda() -> tuple[type[nn.Module], ...]:
    """The module classes the installed torch documents as raising a RuntimeError in deterministic
    mode (``torch.use_deterministic_algorithms``: "will throw ... when mode=True"), read from its
    docstring so a torch upgrade that changes the list changes this test."""
    doc = torch.use_deterministic_algorithms.__doc__ or ""
    throws = doc[doc.index("will throw a\n    :class:`RuntimeError` when ``mode=True``"):]
    names = re.findall(r":class:`torch\.nn\.(\w+)`", throws)
    assert "AdaptiveAvgPool2d" in names, "torch's docstring changed its form: read it again"
    return tuple(getattr(nn, name) for name in names)


@pytest.mark.parametrize("name", names())
def test_no_network_uses_a_module_that_deterministic_mode_refuses_on_a_gpu(name: str) -> None:
    """`deterministic: true` on a GPU would stop at the first backward of such a module (global
    pooling goes through _layers.GlobalAvgPool instead of AdaptiveAvgPool2d)."""
    refused = modules_deterministic_mode_refuses_on_cuda()
    model = meta_build(name)
    found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, refused)})
    assert not found, f"{name} uses {found}, which torch's deterministic mode refuses on CUDA"


def test_global_average_pooling_is_adaptive_average_pooling_to_one_pixel() -> None:
    from convbench.models._layers import GlobalAvgPool

    x = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    torch.testing.assert_close(GlobalAvgPool()(x), nn.AdaptiveAvgPool2d(1)(x))
    GlobalAvgPool()(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 25))
