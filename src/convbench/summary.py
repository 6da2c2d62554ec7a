"""Layer tables, parameter counts and FLOPs of the zoo: ``convbench models`` and ``convbench summary``.

``summarize`` is the pure part; the two ``*_main`` functions only parse arguments and print. The
CLI builds networks on PyTorch's meta device: shapes, parameter counts and FLOPs need no real
arithmetic, so even VGG-19 at 224 px is summarized instantly and without allocating its weights.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from convbench._io import positive_int, run_cli
from convbench.models import build, names, resolve_input_size, spec
from convbench.networks import NetworkError
from convbench.user_networks import add_networks_option, load_network_files


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["width=0.25", "batch_norm=false"]`` -> ``{"width": 0.25, "batch_norm": False}``.

    Values are YAML scalars, so numbers, booleans, ``null`` and bare strings come out typed the way
    they would in params.yaml. A pair without ``=`` or with an empty key is a ValueError.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"expected knob=value, got {pair!r}")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"cannot parse the value of {pair!r}: {err}") from None
    return overrides


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (works on meta-device models too)."""
    return sum(p.numel() for p in model.parameters())


def _report_modules(model: nn.Module, depth: int | None) -> list[tuple[str, nn.Module]]:
    """The modules that get rows: leaves, or with ``depth`` the ancestors at that depth.

    ``nn.Identity`` placeholders (a BN slot with ``batch_norm=False``) get no row: they do nothing.
    """
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    chosen: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not name or isinstance(module, nn.Identity):  # placeholders of ablated layers
            continue
        level = name.count(".") + 1
        is_leaf = next(module.children(), None) is None
        if depth is None:
            if is_leaf:
                chosen.append((name, module))
        elif level == depth or (level < depth and is_leaf):
            chosen.append((name, module))
    return chosen


def _shape(output: Any) -> list[int]:
    """Shape of a module's output: the tensor's, or the first tensor's in a tuple/list."""
    if isinstance(output, torch.Tensor):
        return list(output.shape)
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return list(item.shape)
    return []


def summarize(
    model: nn.Module, *, in_channels: int, input_size: int, depth: int | None = None
) -> dict[str, Any]:
    """One forward pass of a single image, recording every reported module's output.

    Rows are leaf modules by default; ``depth=d`` reports each module at depth ``d`` (``b3`` is
    depth 1, ``b3.0`` depth 2) with everything below it folded in, plus shallower leaves. A row's
    ``params`` count its module recursively. A module called more than once in one forward pass
    (a shared pooling layer, say) gets one row per call, in call order, because its output shape
    can differ between calls; its parameters are counted on its first row only, so the rows always
    sum to the model's total (as long as parameters live in modules that run, which holds for the
    whole zoo).

    ``flops`` come from ``torch.utils.flop_counter.FlopCounterMode``, which counts the work of
    convolutions, linear layers and matrix products (two FLOPs per multiply-add) but not of
    activations, normalization, pooling or additions; ``macs`` is ``flops // 2``. The model runs in
    eval mode under ``no_grad`` on the device of its parameters (the meta device works), and is put
    back into its previous mode afterwards.
    """
    rows: list[dict[str, Any]] = []
    counted: set[int] = set()
    handles: list[RemovableHandle] = []

    def record(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            params = 0 if id(module) in counted else count_params(module)
            counted.add(id(module))
            rows.append({
                "name": name,
                "type": type(module).__name__,
                "output_shape": _shape(output),
                "params": params,
            })

        return hook

    for name, module in _report_modules(model, depth):
        handles.append(module.register_forward_hook(record(name)))
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(1, in_channels, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    flops = int(counter.get_total_flops())
    total = count_params(model)
    return {
        "input_shape": list(x.shape),
        "output_shape": _shape(output),
        "params": total,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops": flops,
        "macs": flops // 2,
        "layers": rows,
    }


def _meta_build(name: str, **kwargs: Any) -> nn.Module:
    """``build`` on the meta device: the full architecture without allocating or computing weights."""
    with torch.device("meta"):
        return build(name, **kwargs)


def summarize_network(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    knobs: dict[str, Any] | None = None,
    depth: int | None = None,
) -> dict[str, Any]:
    """``summarize`` of a registered network built on the meta device: what ``convbench summary``
    prints and the report's layer tables show, so the two cannot disagree. ``knobs`` is a dict,
    not keywords, so that no knob name can clash with ``depth``."""
    model = _meta_build(name, in_channels=in_channels, num_classes=num_classes,
                        input_size=input_size, **(knobs or {}))
    return summarize(model, in_channels=in_channels, input_size=input_size, depth=depth)


LAYER_COLUMNS = ("layer", "type", "output shape", "params")


def layer_rows(result: dict[str, Any], times: str = " x ") -> list[dict[str, str]]:
    """The rows of a layer table, as text under ``LAYER_COLUMNS``: one place for both the terminal
    table and the report's. ``times`` joins an output shape's dimensions (the report writes ``×``)."""
    return [
        {"layer": row["name"], "type": row["type"],
         "output shape": times.join(map(str, row["output_shape"])), "params": f"{row['params']:,}"}
        for row in result["layers"]
    ]


def models_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench models",
        description="List every registered network: default and minimum input size, parameters "
        "(1 input channel, 10 classes) and a one-line description.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    add_networks_option(parser)
    return parser


def models_main(argv: list[str]) -> int:
    """``convbench models [--json]``: every registered network with its sizes and parameter count."""
    parser = models_parser()
    return run_cli(parser, argv, _print_models, expected=(NetworkError,))


def _print_models(args: argparse.Namespace) -> None:
    project = load_network_files(args.networks)
    entries = []
    for name in names():
        entry = spec(name)
        entries.append({
            "name": name,
            "default_input_size": entry.default_input_size,
            "min_input_size": entry.min_input_size,
            "min_input_size_by_stem": dict(entry.min_input_size_by_stem),
            "params": count_params(_meta_build(name)),
            "knobs": dict(entry.knobs),
            "summary": entry.summary + (f" ({project[name]})" if name in project else ""),
        })
    if args.json:
        print(json.dumps(entries, indent=2))
        return
    header = ("name", "input", "min", "params", "description")
    table = [
        (e["name"], str(e["default_input_size"]), str(e["min_input_size"]), f"{e['params']:,}",
         e["summary"] + _other_stems(e))
        for e in entries
    ]
    widths = [max(len(row[i]) for row in (header, *table)) for i in range(4)]
    for row in (header, *table):
        print(
            f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:>{widths[3]}}  {row[4]}"
        )


def _other_stems(entry: dict[str, Any]) -> str:
    """`` Other stems (knob stem): lowres from 15 px.`` for a network with a stem knob (the min
    column is its default stem's); empty for one without."""
    others = {stem: size for stem, size in entry["min_input_size_by_stem"].items() if stem != entry["knobs"]["stem"]}
    return (" Other stems (knob stem): " + ", ".join(f"{stem} from {size} px" for stem, size in others.items()) + "."
            if others else "")


def format_table(result: dict[str, Any]) -> str:
    """The aligned text table of a ``summarize`` result, totals underneath."""
    header = LAYER_COLUMNS
    table = [tuple(row[column] for column in LAYER_COLUMNS) for row in layer_rows(result)]
    widths = [max(len(row[i]) for row in (header, *table)) for i in range(4)]
    rule = "-" * (sum(widths) + 6)
    lines = [
        f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:<{widths[2]}}  "
        f"{header[3]:>{widths[3]}}",
        rule,
    ]
    lines += [
        f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {shape:<{widths[2]}}  {params:>{widths[3]}}"
        for name, kind, shape, params in table
    ]
    lines += [
        rule,
        f"input shape: {' x '.join(map(str, result['input_shape']))}",
        f"params:      {result['params']:,} ({result['trainable_params']:,} trainable)",
        f"MACs:        {result['macs']:,}",
        f"FLOPs:       {result['flops']:,}",
    ]
    return "\n".join(lines)


def summary_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench summary",
        description="Layer-by-layer output shapes and parameters of one network, with its total "
        "parameters, MACs and FLOPs for one image.",
    )
    parser.add_argument("name", help="registered network name (see 'convbench models')")
    parser.add_argument("--input-size", type=int, default=None,
                        help="image side in pixels (default: the network's d2l default)")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KNOB=VALUE", help="override a knob; the value is a YAML scalar")
    parser.add_argument("--depth", type=positive_int, default=None,
                        help="fold modules deeper than this into their ancestor")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_networks_option(parser)
    return parser


def summary_main(argv: list[str]) -> int:
    """``convbench summary NAME [...]``: the layer table of one network, or one JSON object."""
    parser = summary_parser()

    def action(args: argparse.Namespace) -> None:
        load_network_files(args.networks)
        try:
            knobs = parse_overrides(args.overrides)
        except ValueError as err:
            parser.error(f"argument --set: {err}")
        input_size = resolve_input_size(args.name, args.input_size, knobs)
        result = summarize_network(
            args.name, in_channels=args.in_channels, num_classes=args.num_classes,
            input_size=input_size, knobs=knobs, depth=args.depth,
        )
        _print_summary(args, knobs, input_size, result)

    return run_cli(parser, argv, action, expected=(NetworkError,))


def _print_summary(args: argparse.Namespace, knobs: dict[str, Any], input_size: int,
                  result: dict[str, Any]) -> None:
    if args.json:
        resolved = {**spec(args.name).knobs, **knobs}
        print(json.dumps({
            "arch": args.name,
            "input_size": input_size,
            "in_channels": args.in_channels,
            "num_classes": args.num_classes,
            "knobs": resolved,
            **result,
        }, indent=2))
    else:
        print(f"{args.name} at {input_size} px, knobs: {knobs or 'defaults'}")
        print(format_table(result))
