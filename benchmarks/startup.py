"""Start-up of each `convbench <stage>` command: the seconds a job pays before its own work.

For every stage, times a fresh interpreter that imports what the command imports (its entry module
through `convbench.cli`, as the console script does) and, for the commands that take a study, also
loads and checks params.yaml. The commands that train (`run`, `train`) also make an optimizer, as
their jobs do before the first step: torch's optimizers import torch._dynamo when they are made.
Reports the median of --repeat runs and which heavy libraries each command loads. A script, not a
test: run it on an otherwise idle machine.

    python benchmarks/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from convbench.cli import COMMANDS
from convbench.provenance import STAGES

HEAVY = ("torch", "torch._dynamo", "torchvision", "pandas", "matplotlib", "scipy", "sklearn", "jsonschema")


TRAINING_COMMANDS = ("run", "train")


def child_code(module: str, study: bool, trains: bool = False) -> str:
    lines = ["import sys, importlib", "import convbench.cli", f"importlib.import_module({module!r})"]
    if study:
        lines.append("from convbench.study import load_study; load_study('params.yaml')")
    if trains:
        lines.append("import torch; torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)")
    lines.append(f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    return "; ".join(lines)


def measure(module: str, study: bool, repeat: int, trains: bool = False) -> tuple[float, str]:
    times, loaded = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", child_code(module, study, trains)],
                              capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        loaded = done.stdout.strip()
    return statistics.median(times), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median shown)")
    args = parser.parse_args()
    baseline, _ = measure("json", False, args.repeat)
    print(f"python itself: {baseline:.2f} s\n")
    print(f"| command | start-up (s) | heavy libraries loaded |\n|---|---|---|")
    for command in (*STAGES, "train", "evaluate", "study"):  # every one checks the study first
        seconds, loaded = measure(COMMANDS[command].module, True, args.repeat,
                                  trains=command in TRAINING_COMMANDS)
        print(f"| `convbench {command}` | {seconds:.2f} | {loaded or 'none'} |")


if __name__ == "__main__":
    main()
