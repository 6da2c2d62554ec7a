"""benchmarks/estimate_check.py: an estimate beside the Snakemake timings of finished runs, the
median over several runs, and a failing exit where an experiment is off by more than the tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark


def load_check():
    return load_benchmark("estimate_check")


def write_estimate(path: Path, seconds: dict[str, float]) -> Path:
    path.write_text(json.dumps({
        "name": "digits", "results_dir": "results",
        "estimate": {"device": "cpu:test:1 threads",
                     "experiments": {name: {"seconds": s} for name, s in seconds.items()}},
    }))
    return path


def write_run(root: Path, seconds: dict[str, float]) -> Path:
    """A finished study's Snakemake benchmark files, as `benchmark:` writes them."""
    bench = root / "logs/digits/benchmark/run"
    bench.mkdir(parents=True)
    for name, s in seconds.items():
        (bench / f"{name}.tsv").write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:{int(s):02d}\t700.0\n")
    return root


def test_one_run_within_the_tolerance_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check = load_check()
    estimate = write_estimate(tmp_path / "estimate.json", {"lenet": 10.0, "alexnet": 30.0})
    run = write_run(tmp_path / "a", {"lenet": 12.0, "alexnet": 25.0})
    assert check.main([str(estimate), "--root", str(run)]) == 0
    out = capsys.readouterr().out
    assert "lenet                                10.0       12.0     -17%" in out
    assert "alexnet                              30.0       25.0     +20%" in out
    assert "total (one job at a time)            40.0       37.0      +8%" in out


def test_an_experiment_off_by_more_than_the_tolerance_fails_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check = load_check()
    estimate = write_estimate(tmp_path / "estimate.json", {"lenet": 10.0, "alexnet": 30.0})
    run = write_run(tmp_path / "a", {"lenet": 19.0, "alexnet": 30.0})
    assert check.main([str(estimate), "--root", str(run)]) == 1
    out = capsys.readouterr().out
    assert "-47%  OFF" in out and "1 experiment(s) off by more than 30%: lenet" in out


def test_several_runs_compare_with_their_median(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One run's stalled start-up (19 s for a 10 s job) does not decide the check on its own."""
    check = load_check()
    estimate = write_estimate(tmp_path / "estimate.json", {"lenet": 10.0})
    runs = [write_run(tmp_path / name, {"lenet": s}) for name, s in (("a", 19.0), ("b", 10.5), ("c", 11.0))]
    assert check.main([str(estimate), *(arg for run in runs for arg in ("--root", str(run)))]) == 0
    out = capsys.readouterr().out
    assert "(median)" in out and "11.0      -9%   19.0 / 10.5 / 11.0" in out
