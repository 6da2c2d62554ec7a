"""Are two finished studies' results the same, run by run? For refactors that must not change a bit.

Compares every run's ``model.pt`` (the weights byte for byte, the optimizer state, the history and
everything recorded with them) and ``metrics.json`` between two results directories, ignoring only
the fields that name the code or the machine (``code_version``, ``cpu``): a refactor changes the
code version by design. Prints one line per difference and a summary; exits 1 if anything differs.

    python benchmarks/compare_results.py /path/to/before/results /path/to/after/results

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

IGNORED = ("code_version", "cpu")


def without_ignored(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_ignored(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [without_ignored(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    runs = sorted(p.parent.relative_to(args.before) for p in args.before.glob("*/*/model.pt"))
    differences = 0
    for run in runs:
        for name in ("model.pt", "metrics.json"):
            old, new = args.before / run / name, args.after / run / name
            if not new.exists():
                print(f"{run}/{name}: missing in {args.after}")
                differences += 1
                continue
            if name == "model.pt":
                load = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
            else:
                load = lambda path: json.loads(path.read_text())  # noqa: E731
            if not same(without_ignored(load(old)), without_ignored(load(new))):
                print(f"{run}/{name}: differs")
                differences += 1
    print(f"{len(runs)} runs, {2 * len(runs)} files compared (ignoring {', '.join(IGNORED)}): "
          f"{differences} differ")
    return 1 if differences or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
