"""Are two finished studies' results the same, run by run? For refactors that must not change a bit.

A run is the same when what it holds is: its weights (``model`` and ``best_model``) and its metric
numbers, judged as ``convbench compare`` judges them (``convbench.expected.read_run``). What made
it (the CPU type, threads, training code version, packages) is reported beside, never judged: a
refactor changes the code version by design. Prints one line per run that differs and, per kind of
record that differs, one line; exits 1 if any run differs or is missing.

    python benchmarks/compare_results.py /path/to/before/results /path/to/after/results

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convbench.compare import code_line
from convbench.expected import ExpectedError, read_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    runs = sorted(p.parent.relative_to(args.before) for p in args.before.glob("*/*/model.pt"))
    differences = 0
    records: dict[str, set[str]] = {}
    for run in runs:
        try:
            old, new = read_run(args.before / run), read_run(args.after / run)
        except (ExpectedError, OSError) as err:
            print(f"{run}: {err}")
            differences += 1
            continue
        differing = [what for what in ("weights", "metrics") if old[what] != new[what]]
        if differing:
            print(f"{run}: {' and '.join(differing)} differ")
            differences += 1
        for key in ("cpu", "threads", "packages"):
            if old["made_with"][key] != new["made_with"][key]:
                records.setdefault(key, set()).add(str(run))
        line = code_line([new["made_with"]["code_version"]], [old["made_with"]["code_version"]])
        if line != "code version: the same":
            records.setdefault(line, set()).add(str(run))
    verdict = "identical" if not differences and runs else f"{differences} differ"
    print(f"{len(runs)} runs compared by their weights and metric numbers: {verdict}")
    for what, which in sorted(records.items()):
        label = what if what.startswith("code version") else f"{what} differs"
        print(f"  {label} ({len(which)} runs)")
    return 1 if differences or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
