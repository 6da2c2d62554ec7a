"""The report: built from a tiny real study (the real stages on the bundled digits), then checked
for its numbers, its statistics, its self-containedness and, where Chromium is installed, how a
browser renders it offline."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import scipy.stats
import yaml

from convbench import stats
from convbench.report import card, cli, figures, load, render, tables
from convbench.study import load_study

EXPERIMENTS = ("lenet_relu", "mlp")
FOLDS = 2
REPEATS = 2
SEEDS = [0, 1]
RUNS = REPEATS * FOLDS * len(SEEDS)
TINY_STUDY = {
    "study": "tiny_report",
    "description": "two small networks, 2 x 2-fold cross-validation, two seeds, one epoch",
    "dataset": "digits",
    "folds": FOLDS,
    "repeats": REPEATS,
    "seed": 0,
    "seeds": SEEDS,
    "threads": 1,
    "results_dir": "results",
    "reports_dir": "reports",
    "recipe": {"lr": 0.1, "batch_size": 64, "epochs": 1, "warmup_epochs": 0},
    "experiments": {
        "lenet_relu": {"arch": "lenet", "input_size": 12, "knobs": {"activation": "relu", "pool": "max"},
                       "description": "LeNet with <ReLU> & max pooling"},
        "mlp": {"arch": "mlp", "input_size": 8, "recipe": {"weight_decay": 0.0}},
    },
    "ablations": {"convolutions": {"baseline": "mlp", "treatment": "lenet_relu",
                                   "question": "Does LeNet beat the MLP?"}},
}


@pytest.fixture(scope="session")
def tiny_study(
    tmp_path_factory: pytest.TempPathFactory, digits_npz: Path, convbench: Callable[[list[str]], int]
) -> Path:
    """A study directory laid out as the pipeline lays it out, made by the real stages (in this
    process), with its report rendered by ``convbench report``. Read only."""
    root = tmp_path_factory.mktemp("report_study")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    (root / "data/prepared").mkdir(parents=True)
    shutil.copy(digits_npz, root / "data/prepared/digits.npz")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        # the commands DVC runs: every repeat's split, then each experiment's runs
        assert convbench(["split", "--study", "params.yaml"]) == 0
        for exp in EXPERIMENTS:
            assert convbench(["train", "--study", "params.yaml", "--experiment", exp]) == 0
            assert convbench(["evaluate", "--study", "params.yaml", "--experiment", exp]) == 0
            assert convbench(["aggregate", "--study", "params.yaml", "--experiment", exp,
                              "--out", f"results/_experiments/{exp}.json",
                              "--curves-out", f"results/_curves/{exp}"]) == 0
        assert convbench(["aggregate", "--study", "params.yaml", "--out", "results/study.json"]) == 0
        assert convbench(["report", "--study", "params.yaml"]) == 0
    return root


@pytest.fixture(scope="session")
def page(tiny_study: Path) -> str:
    return (tiny_study / "reports/report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def metrics(tiny_study: Path) -> dict[str, Any]:
    return json.loads((tiny_study / "results/study.json").read_text())


# ------------------------------------------------------------------------------ the rendered report


def test_report_writes_html_notebook_and_named_figures(tiny_study: Path) -> None:
    reports = tiny_study / "reports"
    assert (reports / "report.html").stat().st_size > 0
    notebook = json.loads((reports / "report.ipynb").read_text())
    assert any("injected-parameters" in cell["metadata"].get("tags", []) for cell in notebook["cells"])
    for name in figures.FIGURES:
        png = (reports / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), name


def test_every_experiment_and_its_leaderboard_numbers_appear(page: str, metrics: dict[str, Any]) -> None:
    assert set(metrics["experiments"]) == set(EXPERIMENTS)
    for name, row in metrics["experiments"].items():
        assert f">{name}<" in page
        for key in ("val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std"):
            assert f"{100 * row[key]:.2f}" in page, (name, key)
        assert f"{row['params']:,}" in page
        assert f"{row['macs']:,}" in page


def test_leaderboard_shows_exactly_the_metrics_json_values(metrics: dict[str, Any]) -> None:
    shown = tables.format_leaderboard(tables.leaderboard(metrics)).set_index("experiment")
    for name, row in metrics["experiments"].items():
        assert shown.loc[name, "val acc (%)"] == (
            f"{100 * row['val_acc_mean']:.2f}\u00a0±\u00a0{100 * row['val_acc_std']:.2f}"
        )
        assert shown.loc[name, "test acc (%)"] == (
            f"{100 * row['test_acc_mean']:.2f}\u00a0±\u00a0{100 * row['test_acc_std']:.2f}"
        )
    ranked = sorted(metrics["experiments"], key=lambda n: -metrics["experiments"][n]["val_acc_mean"])
    assert list(shown.index) == ranked


def test_report_has_ablation_verdicts_layer_tables_and_study_card(
    page: str, metrics: dict[str, Any], tiny_study: Path
) -> None:
    assert "Does LeNet beat the MLP?" in page
    assert "LeNet with &lt;ReLU&gt; &amp; max pooling" in page  # descriptions are escaped text
    assert page.count("<details>") == len(EXPERIMENTS)
    study_card = metrics["study"]
    assert study_card["data_sha256"] in page
    assert "1,347 train / 450 test" in page
    assert f"torch={study_card['packages']['torch']}" in page


def test_layer_tables_are_what_convbench_summary_prints(
    page: str, convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert convbench(["summary", "lenet", "--input-size", "12", "--set", "activation=relu",
                      "--set", "pool=max", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    block = re.search(r"<details><summary><b>lenet_relu</b>.*?</details>", page, re.DOTALL)
    assert block, "no layer table for lenet_relu"
    cell = r"\s*<td>(.*?)</td>"
    shown = re.findall(rf"<tr>{cell * 4}\s*</tr>", block.group(0))
    expected = [(row["name"], row["type"], " × ".join(map(str, row["output_shape"])), f"{row['params']:,}")
                for row in summary["layers"]]
    assert shown == expected
    assert f"{summary['params']:,} params, {summary['macs']:,} MACs, {len(expected)} layers" in block.group(0)


def test_ablation_numbers_match_an_independent_corrected_t_test(
    tiny_study: Path, page: str, metrics: dict[str, Any]
) -> None:
    """Recomputed here from the per-run metrics files, by the formula, without the report's code:
    J = R x K resamples (each the mean over its seeds), variance (1/J + n_test/n_train) s²."""
    def fold_accuracies(experiment: str, part: str) -> list[float]:
        def score(r: int, k: int, s: int) -> float:
            path = tiny_study / f"results/{experiment}/r{r}-fold{k}-seed{s}/metrics.json"
            return json.loads(path.read_text())[part]["accuracy"]

        return [sum(score(r, k, s) for s in SEEDS) / len(SEEDS) for r in range(REPEATS) for k in range(FOLDS)]

    study = load_study(tiny_study / "params.yaml")
    results = {r["metric"]: r for r in stats.ablation_results(study, metrics)}
    J = REPEATS * FOLDS
    for part, metric in (("val", "validation (cross-validated)"), ("test", "test")):
        base, treat = fold_accuracies("mlp", part), fold_accuracies("lenet_relu", part)
        d = [100 * (t - b) for b, t in zip(base, treat)]
        mean = sum(d) / J
        variance = sum((x - mean) ** 2 for x in d) / (J - 1)
        standard_error = math.sqrt((1 / J + 1 / (FOLDS - 1)) * variance)  # n_test/n_train
        c = results[metric]["comparison"]
        assert c.mean == pytest.approx(mean)
        if variance == 0:
            assert math.isnan(c.p)
            continue
        t = mean / standard_error
        p = 2 * scipy.stats.t.sf(abs(t), df=J - 1)
        assert (c.t, c.p) == pytest.approx((t, p))
        assert results[metric]["p_holm"] == pytest.approx(p)  # one ablation: Holm changes nothing
        assert f"<td>{stats.format_p(p)}</td>" in page


def test_html_is_self_contained(page: str) -> None:
    assert not re.search(r"https?://", page)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref\s*=", page, re.IGNORECASE)
    images = re.findall(r"<img[^>]*\bsrc=\"([^\"]*)\"", page)
    assert len(images) == len(figures.FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert render.external_references(page) == []


def test_external_references_are_found() -> None:
    page = ('<script src="https://cdn.example/require.js"></script><img src="//cdn.example/a.png">'
            '<style>@import url(http://fonts.example/f.css);</style><a href="#top">top</a>')
    assert len(render.external_references(page)) == 3


def test_best_experiment_is_chosen_by_validation_not_test() -> None:
    def row(val: float, test: float) -> dict[str, Any]:
        return {"val_acc_mean": val, "test_acc_mean": test, "macs": 1}

    results = {"experiments": {"a": row(0.90, 0.99), "b": row(0.95, 0.80)}}
    assert tables.best_experiment(results) == "b"


def test_summed_confusion_counts_every_test_image_once_per_run(
    tiny_study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_study)
    data = load.load_report_data("params.yaml")
    matrix = figures.summed_confusion(data, "lenet_relu")
    assert matrix.sum() == RUNS * len(data.dataset.test_labels)
    assert (matrix.sum(axis=1) == RUNS * np.bincount(data.dataset.test_labels, minlength=10)).all()
    wrong = figures.misclassified(data, "lenet_relu")
    assert (wrong["true"] != wrong["predicted"]).all()
    assert wrong["models_wrong"].between(1, RUNS).all()
    assert len(data.history) == RUNS * len(EXPERIMENTS)  # one epoch per run: every run's curve


def test_every_run_counts_and_both_spreads_are_shown(page: str, metrics: dict[str, Any]) -> None:
    for name, row in metrics["experiments"].items():
        assert (row["runs"], row["repeats"], row["folds"], row["seeds"]) == (RUNS, REPEATS, FOLDS, 2)
        assert len(row["per_run"]) == RUNS
        assert tables.spread_cell(row) in page
        assert row["val_acc_seed_std"] is not None
    assert "2 repeats of 2 stratified folds" in page and "seeds 0, 1" in page
    assert f"{len(EXPERIMENTS)} ({len(EXPERIMENTS) * RUNS} training runs)" in page


def test_stale_aggregate_is_refused(
    tiny_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "study"
    shutil.copytree(tiny_study, copy, ignore=shutil.ignore_patterns("reports"))
    results = json.loads((copy / "results/study.json").read_text())
    results["experiments"]["mlp"]["per_run"][1]["val_acc"] += 0.01
    (copy / "results/study.json").write_text(json.dumps(results))
    monkeypatch.chdir(copy)
    # the means no longer follow from the per-run values (convbench.consistency)
    with pytest.raises(load.ReportError, match=r"results/study.json: val_acc_mean is .*, but its \d+ "
                                               r"runs' val_acc values give"):
        load.load_report_data("params.yaml")


def without_perf(tiny_study: Path, copy: Path, experiments: tuple[str, ...],
                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the study whose ``experiments`` lost their perf.json and history.csv (as a clone
    that pulled the study through DVC, which neither tracks nor shares them: .dvcignore), its
    results files as they were; the test then runs in it."""
    shutil.copytree(tiny_study, copy, ignore=shutil.ignore_patterns("reports"))
    monkeypatch.chdir(copy)
    for name in experiments:
        for path in [*Path(f"results/{name}").glob("*/perf.json"),
                     *Path(f"results/{name}").glob("*/history.csv")]:
            model = json.loads((path.parent / "metrics.json").read_text())["model_sha256"]
            Path(f"results/_timings/{model}.json").unlink(missing_ok=True)  # nor the store of them
            path.unlink()


TIMING_COLUMNS = ("train s / run", "train img/s", "inference img/s")
TIMING_KEYS = ("seconds", "per_s")  # no key of a results file holds a wall-clock measurement


def keys_of(document: Any) -> set[str]:
    """Every key of a JSON document, at any depth."""
    if isinstance(document, dict):
        return set(document) | {k for value in document.values() for k in keys_of(value)}
    if isinstance(document, list):
        return {k for value in document for k in keys_of(value)}
    return set()


def test_the_results_files_hold_no_timing(tiny_study: Path) -> None:
    """Timings differ between bit-identical runs: they stay in the runs' perf.json and history.csv
    (untracked by DVC), so an experiment's and the study's results files have none."""
    paths = [tiny_study / "results/study.json", *(tiny_study / "results/_experiments").glob("*.json")]
    assert len(paths) == 1 + len(EXPERIMENTS)
    for path in paths:
        keys = keys_of(json.loads(path.read_text()))
        assert "val_acc_mean" in keys and not [k for k in keys if any(t in k for t in TIMING_KEYS)], path


def test_the_measured_columns_are_the_means_of_the_runs_perf_json(
    tiny_study: Path, page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_study)
    data = load.load_report_data("params.yaml")
    assert len(data.perf) == len(EXPERIMENTS) * RUNS
    board = tables.format_leaderboard(tables.leaderboard(data.results), perf=data.perf)
    board = board.set_index("experiment")
    for name in EXPERIMENTS:
        perf = [json.loads(path.read_text()) for path in (tiny_study / "results" / name).glob("*/perf.json")]
        assert len(perf) == RUNS
        expected = {
            "train s / run": f"{np.mean([p['training']['seconds'] for p in perf]):.1f}",
            "train img/s": f"{np.mean([p['training']['examples_per_s'] for p in perf]):,.0f}",
            "inference img/s": f"{np.mean([p['inference']['images_per_s'] for p in perf]):,.0f}",
        }
        assert {column: board.loc[name, column] for column in TIMING_COLUMNS} == expected
        row = re.search(rf"<tr>\s*<td>\d+</td>\s*<td>{name}</td>(.*?)</tr>", page, re.DOTALL)
        assert re.findall(r"<td>(.*?)</td>", row.group(1))[-4:-1] == list(expected.values())


@pytest.fixture(scope="module")
def rendered_without_perf(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the study whose every run lost its perf.json and history.csv, with its report
    rendered by ``convbench report`` there. Read only: tests that change it work on a copy."""
    copy = tmp_path_factory.mktemp("without_perf") / "study"
    with pytest.MonkeyPatch.context() as patch:
        without_perf(tiny_study, copy, EXPERIMENTS, patch)
        assert cli.main(["--study", "params.yaml"]) == 0
    return copy


def test_a_study_without_perf_json_is_reported_with_placeholders(rendered_without_perf: Path) -> None:
    page = (rendered_without_perf / "reports/report.html").read_text(encoding="utf-8")
    for name in EXPERIMENTS:
        row = re.search(rf"<tr>\s*<td>\d+</td>\s*<td>{name}</td>(.*?)</tr>", page, re.DOTALL)
        assert row, f"no leaderboard row for {name}"
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells[-4:-1] == ["n/a"] * len(TIMING_COLUMNS)  # then the description
    card_rows = dict(re.findall(r"<tr>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*</tr>", page))
    assert card_rows["training device(s)"] == card_rows["inference device(s)"] == "n/a"
    assert card_rows["compute time"] == f"n/a: none of the {len(EXPERIMENTS) * RUNS} jobs has a perf.json"


def test_runs_without_perf_json_are_left_out_of_the_timings(
    tiny_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_perf(tiny_study, tmp_path / "study", ("mlp",), monkeypatch)
    data = load.load_report_data("params.yaml")
    assert len(data.perf) == RUNS and {name for name, _ in data.perf} == {"lenet_relu"}
    board = tables.format_leaderboard(tables.leaderboard(data.results), perf=data.perf).set_index("experiment")
    assert [board.loc["mlp", column] for column in TIMING_COLUMNS] == ["n/a"] * len(TIMING_COLUMNS)
    lenet = [p for (name, _), p in data.perf.items() if name == "lenet_relu"]
    assert board.loc["lenet_relu", "train s / run"] == \
        f"{np.mean([p['training']['seconds'] for p in lenet]):.1f}"
    assert board.loc["lenet_relu", "inference img/s"] == \
        f"{np.mean([p['inference']['images_per_s'] for p in lenet]):,.0f}"
    compute = dict(card.study_card(data).values.tolist())["compute time"]
    seconds = sum(p["training"]["seconds"] for p in data.perf.values())
    assert compute.startswith(f"{seconds:,.1f} s of training (sum over the epochs of the {RUNS} of "
                              f"{len(EXPERIMENTS) * RUNS} jobs with a perf.json) + ")


def test_curves_are_remade_without_a_history_and_an_edited_curve_is_refused(
    rendered_without_perf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    convbench: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str],
) -> None:
    """A clone that pulled the study has no history.csv (DVC does not share it): its results and
    report stand (the report rendered, its curves from results/_curves), and the curves are remade
    from what each run's metrics.json carries (the curve its checkpoint recorded), byte for byte.
    A hand-edited curve is refused by the report."""
    copy = tmp_path / "study"
    shutil.copytree(rendered_without_perf, copy, ignore=shutil.ignore_patterns("reports"))
    monkeypatch.chdir(copy)
    before = {p.name: p.read_bytes() for p in Path("results/_curves/mlp").iterdir()}
    shutil.rmtree("results/_curves/mlp")
    assert convbench(["aggregate", "--study", "params.yaml", "--experiment", "mlp",
                      "--out", "results/_experiments/mlp.json", "--curves-out", "results/_curves/mlp"]) == 0
    assert {p.name: p.read_bytes() for p in Path("results/_curves/mlp").iterdir()} == before
    curve = Path("results/_curves/mlp/r0-fold0-seed0.csv")
    lines = curve.read_text().splitlines()
    fields = lines[1].split(",")
    fields[4] = "0.999"  # val_acc of epoch 1
    curve.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    capsys.readouterr()
    assert cli.main(["--study", "params.yaml"]) == 1
    message = " ".join(capsys.readouterr().err.split())
    assert "results/_curves/mlp/r0-fold0-seed0.csv: epoch 1 val_acc is 0.999, but the run's checkpoint recorded" in message
    assert "--curves-out results/_curves/mlp" in message


def test_the_study_card_says_when_runs_came_from_different_cpu_types(
    tiny_study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run records the CPU it was trained on (model and torch's instruction set): results are
    bit-identical only on one CPU type, so the card warns when a study mixes them."""
    from dataclasses import replace

    from convbench.device import describe_cpu

    monkeypatch.chdir(tiny_study)
    data = load.load_report_data("params.yaml")
    here = describe_cpu()
    assert here["model"] and here["capability"]  # e.g. "AMD EPYC", "AVX512"
    assert {json.dumps(m["cpu"]) for m in data.run_metrics.values()} == {json.dumps(here)}
    rows = dict(card.study_card(data).values.tolist())
    assert rows["CPU type(s)"] == f"{here['model']} ({here['capability']}), all {len(data.run_metrics)} runs"
    assert "WARNING" not in rows["CPU type(s)"]
    other = {"model": "Intel(R) Xeon(R) Platinum 8481C", "architecture": "x86_64", "capability": "AVX512"}
    mixed = {key: {**metrics, "cpu": other} if key[0] == "mlp" else metrics
             for key, metrics in data.run_metrics.items()}
    line = dict(card.study_card(replace(data, run_metrics=mixed)).values.tolist())["CPU type(s)"]
    assert line.startswith("WARNING: the runs came from 2 CPU types")
    assert f"{here['model']} ({here['capability']}): {RUNS} runs" in line
    assert f"Intel(R) Xeon(R) Platinum 8481C (AVX512): {RUNS} runs" in line
    assert "bit-identical only on one CPU type with one thread count" in line


def test_the_study_card_shows_each_runs_device_its_fallback_and_tf32(
    tiny_study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run records the device it asked for and used, why `auto` fell back to the CPU, and
    whether TF32 was on; the card counts them, a fallback first."""
    from dataclasses import replace

    monkeypatch.chdir(tiny_study)
    data = load.load_report_data("params.yaml")
    recorded = [m["device"] for m in data.run_metrics.values()]
    assert all(d["used"].startswith("cpu:") and d["tf32"] is False for d in recorded)
    rows = dict(card.study_card(data).values.tolist())
    total = len(data.run_metrics)
    if recorded[0]["fallback"]:  # no usable GPU here: auto fell back, and the card leads with it
        assert rows["device per run"].startswith(f"{total} of {total} runs fell back to the CPU (device auto). ")
        assert f"(asked auto; fell back to the CPU: {recorded[0]['fallback']}): {total} runs" in rows["device per run"]
    assert rows["TF32"] == (f"off in all {total} runs that record it: fp32 convolutions and matrix "
                            "products in full fp32 (recipe tf32: false, or a CPU)")
    gpu = {"asked": "cuda", "used": "cuda:NVIDIA H100 80GB HBM3", "fallback": None, "tf32": True}
    mixed = {key: {**metrics, "device": gpu} if key[0] == "mlp" else
             {**metrics, "device": {**metrics["device"], "fallback": "no GPU"}}
             for key, metrics in data.run_metrics.items()}
    rows = dict(card.study_card(replace(data, run_metrics=mixed)).values.tolist())
    lenet_runs = total - RUNS
    assert rows["device per run"] == (
        f"{lenet_runs} of {total} runs fell back to the CPU (device auto). "
        f"{recorded[0]['used']} (asked auto; fell back to the CPU: no GPU): {lenet_runs} runs; "
        f"cuda:NVIDIA H100 80GB HBM3 (asked cuda): {RUNS} runs")
    assert rows["TF32"] == f"on in {RUNS} of {total} runs (recipe tf32: true, on a GPU): not full fp32"
    old = {key: {k: v for k, v in metrics.items() if k != "device"} for key, metrics in data.run_metrics.items()}
    rows = dict(card.study_card(replace(data, run_metrics=old)).values.tolist())
    assert rows["device per run"] == f"not recorded: {total} runs"
    assert rows["TF32"].endswith(f"; not recorded in {total} runs")


# ------------------------------------------------------------------------------------------- CLI


def test_cli_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--study", "missing.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("convbench report: error: ") and err.count("\n") == 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_STUDY))
    assert cli.main(["--study", "params.yaml"]) == 1
    err = capsys.readouterr().err
    assert err == ("convbench report: error: results/study.json does not exist; "
                   "make it with 'convbench aggregate'\n")
    assert not (tmp_path / "reports").exists()


def test_default_kernel_runs_this_interpreter() -> None:
    assert render.default_kernel() == "python3"


# ------------------------------------------------------------------------------------ statistics


def test_without_correction_it_is_the_paired_t_test() -> None:
    baseline, treatment = [0.80, 0.82, 0.81], [0.85, 0.87, 0.865]
    c = stats.paired_comparison(baseline, treatment, test_train_ratio=0)
    assert c.differences == pytest.approx((5.0, 5.0, 5.5))
    reference = scipy.stats.ttest_rel(treatment, baseline)
    assert (c.t, c.p) == pytest.approx((reference.statistic, reference.pvalue))
    low, high = reference.confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == pytest.approx((100 * low, 100 * high))


def test_corrected_resampled_t_test_on_known_numbers() -> None:
    # Differences 1, 2, 3 points over J = 3 folds of 3-fold CV (n_test/n_train = 1/2):
    # mean 2, s^2 = 1, variance of the mean (1/3 + 1/2) * 1 = 5/6, t = 2 / sqrt(5/6), 2 df.
    c = stats.paired_comparison([0.5, 0.5, 0.5], [0.51, 0.52, 0.53], test_train_ratio=1 / 2)
    t = 2 / math.sqrt(5 / 6)
    assert c.t == pytest.approx(t) == pytest.approx(2.190890)
    # the two-sided p of Student's t with 2 df has a closed form: 1 - t / sqrt(2 + t^2)
    assert c.p == pytest.approx(1 - t / math.sqrt(2 + t**2))
    half = 4.302652729911275 * math.sqrt(5 / 6)  # t_{0.975, 2} from tables
    assert (c.ci_low, c.ci_high) == pytest.approx((2 - half, 2 + half))
    plain = stats.paired_comparison([0.5, 0.5, 0.5], [0.51, 0.52, 0.53], test_train_ratio=0)
    assert plain.p < c.p and plain.ci_high - plain.ci_low < c.ci_high - c.ci_low


def test_clear_positive_effect() -> None:
    baseline, treatment = [0.80, 0.82, 0.81, 0.80, 0.815], [0.85, 0.87, 0.865, 0.85, 0.86]
    c = stats.paired_comparison(baseline, treatment, test_train_ratio=1 / 4)
    line = stats.verdict(c, "base", "treat")
    assert line.startswith(f"treat better than base: +5.00 points, 95% CI [{c.ci_low:+.2f}, ")
    assert "corrected t-test" in line and "nan" not in line


def test_holm_adjustment_on_known_numbers() -> None:
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.06, 0.04)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = stats.holm([math.nan, 0.02, 0.04])  # an undefined p is outside the family
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.04, 0.04])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_a_significant_effect_that_does_not_survive_holm_is_no_clear_difference() -> None:
    c = stats.paired_comparison([0.80, 0.82, 0.81, 0.80, 0.815], [0.85, 0.87, 0.865, 0.85, 0.86],
                                 test_train_ratio=1 / 4)
    assert c.ci_low > 0
    line = stats.verdict(c, "base", "treat", p_adjusted=0.2)
    assert line.startswith("no clear difference once all the ablations are counted: +5.00 points")
    assert "Holm-adjusted p = 0.200" in line


def test_clear_negative_effect() -> None:
    c = stats.paired_comparison([0.90, 0.91, 0.92, 0.93], [0.80, 0.82, 0.81, 0.84],
                                 test_train_ratio=1 / 3)
    assert c.ci_high < 0
    assert stats.verdict(c, "base", "treat").startswith("treat worse than base: -9.75 points, 95% CI [")


def test_interval_crossing_zero_does_not_claim_an_effect() -> None:
    c = stats.paired_comparison([0.80, 0.81, 0.82], [0.82, 0.80, 0.825], test_train_ratio=1 / 2)
    assert c.ci_low < 0 < c.ci_high
    line = stats.verdict(c, "base", "treat")
    interval = f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
    assert line.startswith(f"no clear difference: the 95% CI {interval} points includes zero")
    assert "better" not in line and "worse" not in line


def test_equal_folds_give_no_difference_without_nan() -> None:
    c = stats.paired_comparison([0.8, 0.9, 0.7], [0.8, 0.9, 0.7], test_train_ratio=1 / 2)
    assert (c.mean, c.std, c.ci_low, c.ci_high) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(c.p) and stats.format_p(c.p) == "n/a"
    assert stats.verdict(c, "base", "treat") == "no difference: treat and base score the same on all 3 folds"


def test_constant_difference_is_reported_without_a_t_test() -> None:
    # Accuracies whose float differences are not bit-equal: rounding keeps the spread at zero.
    c = stats.paired_comparison([0.1, 0.2, 0.3], [0.11, 0.21, 0.31], test_train_ratio=1 / 2)
    assert c.std == 0 and c.ci_low == c.ci_high == pytest.approx(1.0)
    line = stats.verdict(c, "base", "treat")
    assert line == ("treat better than base by +1.00 points on every one of the 3 folds "
                    "(no spread between folds, so no t-test)")


def test_one_fold_cannot_tell() -> None:
    c = stats.paired_comparison([0.8], [0.9], test_train_ratio=0)
    assert stats.verdict(c, "base", "treat").startswith("cannot tell")


def test_paired_comparison_refuses_unpaired_folds() -> None:
    with pytest.raises(ValueError, match="one baseline and one treatment value per fold"):
        stats.paired_comparison([0.8, 0.9], [0.9], test_train_ratio=0)


def test_recipe_card_shows_the_common_recipe_and_each_exception() -> None:
    common, exceptions = card.recipe_exceptions({
        "a": {"lr": 0.05, "weight_decay": 5e-4},
        "b": {"lr": 0.05, "weight_decay": 0.0},
        "c": {"lr": 0.01, "weight_decay": 5e-4},
        "d": {"lr": 0.05, "weight_decay": 5e-4},
    })
    assert common == {"lr": 0.05, "weight_decay": 5e-4}
    assert exceptions == {"b": {"weight_decay": 0.0}, "c": {"lr": 0.01}}


# ---------------------------------------------------------------------------------------- Pareto


def test_pareto_front_on_hand_made_points() -> None:
    cost = [1, 2, 3, 4, 2, 5, math.nan]
    accuracy = [50, 60, 55, 70, 60, 70, 99]
    # (3, 55) loses to (2, 60); (5, 70) to (4, 70); the two (2, 60) are equal, neither beats the
    # other; a point without a cost is never on the front.
    assert figures.pareto_front(cost, accuracy).tolist() == [True, True, False, True, True, False, False]


def test_pareto_front_edge_cases() -> None:
    assert figures.pareto_front([], []).tolist() == []
    assert figures.pareto_front([3], [1]).tolist() == [True]
    with pytest.raises(ValueError):
        figures.pareto_front([1, 2], [1])


# -------------------------------------------------------------------------------- in a browser

CHECK_SCRIPT = """<script>
window.convbenchErrors = [];
window.addEventListener("error",
  e => window.convbenchErrors.push(String(e.message || e.target.src || e.type)), true);
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(image => !(image.complete && image.naturalWidth > 0)).length;
  const marker = document.createElement("pre");
  marker.id = "convbench-check";
  marker.textContent = `images=${images.length} broken=${broken} errors=${window.convbenchErrors.length} ` +
    window.convbenchErrors.join("|");
  document.body.appendChild(marker);
});
</script>"""


def test_report_renders_offline_in_chromium(page: str, tiny_study: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    checked = tiny_study / "reports" / "report.checked.html"  # beside the report, as a user opens it
    checked.write_text(page.replace("<head>", "<head>" + CHECK_SCRIPT, 1), encoding="utf-8")
    try:
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
             checked.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        checked.unlink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    marker = re.search(r'id="convbench-check">([^<]*)<', proc.stdout)
    assert marker, proc.stdout[-2000:]
    assert marker.group(1).strip() == f"images={len(figures.FIGURES)} broken=0 errors=0"
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []



@pytest.mark.parametrize("bug", [KeyError("experiments"), ValueError("a bug's ValueError"),
                                 RuntimeError("CUDA error: an illegal memory access")],
                         ids=["KeyError", "ValueError", "RuntimeError"])
def test_a_bug_inside_report_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raiser: Callable[[Exception], Callable[..., Any]],
    bug: Exception,
) -> None:
    """Only what a user can cause and fix is one line; a ValueError or KeyError from the report code
    is a bug, not the user's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_STUDY))
    monkeypatch.setattr("convbench.report.cli.render", raiser(bug))
    with pytest.raises(type(bug)) as raised:
        cli.main(["--study", "params.yaml"])
    assert raised.value is bug


# ------------------------------------------------------------ the files convbench aggregate writes


def test_ablations_json_holds_each_comparison_as_the_statistics_compute_it(
    tiny_study: Path
) -> None:
    results_dir = tiny_study / "results"
    document = json.loads((results_dir / "ablations.json").read_text())
    study = load_study(tiny_study / "params.yaml")
    study_results = json.loads((results_dir / "study.json").read_text())
    expected = {(r["ablation"], r["metric"]): r for r in stats.ablation_results(study, study_results)}
    assert set(document["ablations"]) == set(study.ablations)
    assert (document["folds"], document["repeats"]) == (study.folds, study.repeats)
    for name, entry in document["ablations"].items():
        for key, metric in stats.ABLATION_METRICS:
            want, got = expected[name, metric], entry[key]
            c = want["comparison"]
            assert got["differences"] == list(c.differences)
            assert got["difference"] == c.mean
            assert got["verdict"] == want["verdict_code"]
            for field, value in (("ci_low", c.ci_low), ("ci_high", c.ci_high), ("p", c.p),
                                 ("p_holm", want["p_holm"])):
                assert got[field] == (value if math.isfinite(value) else None), field
    # read back, the report's rows are the same comparisons
    back = {(r["ablation"], r["metric"]): r for r in stats.results_from_document(study, document)}
    assert back.keys() == expected.keys()
    for key, row in back.items():
        assert row["comparison"].differences == expected[key]["comparison"].differences
        assert row["verdict"] == expected[key]["verdict"]
        assert row["would_take"] == expected[key]["would_take"]


def test_scores_json_holds_only_results(tiny_study: Path) -> None:
    """What DVC shows as metrics: accuracies, size and cost, nothing that differs between two
    bit-identical runs (hashes, versions, timings, paths)."""
    results_dir = tiny_study / "results"
    scores = json.loads((results_dir / "scores.json").read_text())
    study_results = json.loads((results_dir / "study.json").read_text())
    assert set(scores["experiments"]) == set(study_results["experiments"])
    for name, row in scores["experiments"].items():
        assert set(row) == {"val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std", "params", "macs"}
        assert all(row[key] == study_results["experiments"][name][key] for key in row)

    def leaves(node: Any) -> list[Any]:
        return [leaf for value in node.values() for leaf in leaves(value)] if isinstance(node, dict) else [node]

    ablations = json.loads((results_dir / "ablations.json").read_text())
    for leaf in leaves(scores) + leaves(ablations):
        assert not (isinstance(leaf, str) and len(leaf) >= 40 and all(c in "0123456789abcdef" for c in leaf))


def test_the_report_shows_ablations_json_and_refuses_an_edited_one(
    tiny_study: Path, tmp_path: Path, convbench: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report shows what aggregate decided (ablations.json's numbers), but only while they
    follow from the per-run accuracies: a hand-edited verdict or p is refused, naming the key, and
    so is an ablations.json of another study."""
    page = (tiny_study / "reports/report.html").read_text(encoding="utf-8")
    entry = json.loads((tiny_study / "results/ablations.json").read_text())["ablations"]["convolutions"]["val_acc"]
    assert f"{entry['difference']:+.2f}" in page
    copy = tmp_path / "study"
    shutil.copytree(tiny_study, copy, ignore=shutil.ignore_patterns("reports"))
    path = copy / "results/ablations.json"
    original = json.loads(path.read_text())
    for key, value in (("verdict", "better" if entry["verdict"] != "better" else "worse"), ("p_holm", 0.0001),
                       ("differences", [0.5] * len(entry["differences"]))):
        document = json.loads(json.dumps(original))
        document["ablations"]["convolutions"]["val_acc"][key] = value
        path.write_text(json.dumps(document))
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(copy)
            assert convbench(["report", "--study", "params.yaml"]) == 1
        err = capsys.readouterr().err
        assert f"results/ablations.json: ablations.convolutions.val_acc.{key}" in err, err
        assert "the per-run accuracies in results/study.json give" in err
        assert "convbench aggregate --study params.yaml --out results/study.json" in err
        assert not (copy / "reports/report.html").exists()
    original["ablations"]["renamed"] = original["ablations"].pop("convolutions")
    path.write_text(json.dumps(original))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(copy)
        assert convbench(["report", "--study", "params.yaml"]) == 1
        assert convbench(["aggregate", "--study", "params.yaml", "--out", "results/study.json"]) == 0  # the fix
        load.load_report_data("params.yaml")  # the report's checks, all of them, now pass


# ------------------------------------------------------------------------------------ findings


def test_the_report_opens_with_the_findings_from_ablations_json(
    page: str, metrics: dict[str, Any], tiny_study: Path
) -> None:
    """Before the leaderboard: the winner by validation accuracy, then each ablation's validation
    verdict with its effect and interval, as ablations.json holds them."""
    findings = page.index('id="Findings"')
    assert findings < page.index('id="Leaderboard"')
    opening = page[findings:page.index('id="Leaderboard"')]
    best = max(metrics["experiments"], key=lambda n: metrics["experiments"][n]["val_acc_mean"])
    row = metrics["experiments"][best]
    assert (f"Winner: {best}, {100 * row['val_acc_mean']:.2f} ± {100 * row['val_acc_std']:.2f} % "
            f"validation accuracy") in opening
    document = json.loads((tiny_study / "results/ablations.json").read_text())
    for name, entry in document["ablations"].items():
        numbers = entry["val_acc"]
        line = next(li for li in re.findall(r"<li>(.*?)</li>", opening) if li.startswith(f"{name}:"))
        assert f"{numbers['difference']:+.2f} points" in line
        if numbers["ci_low"] is not None:
            assert f"95% CI [{numbers['ci_low']:+.2f}, {numbers['ci_high']:+.2f}]" in line
        assert stats.p_text(numbers["p_holm"] if numbers["p_holm"] is not None else math.nan) in line
        assert numbers["verdict"] in line
        if numbers["verdict"] not in ("better", "worse"):
            assert "(not a finding)" in line


def test_a_finding_is_stated_only_for_better_or_worse() -> None:
    comparison = stats.paired_comparison([0.90, 0.91, 0.92, 0.90, 0.91], [0.95, 0.96, 0.96, 0.95, 0.97],
                                         test_train_ratio=0.25)
    results = {"experiments": {
        "big": {"val_acc_mean": 0.96, "val_acc_std": 0.01, "test_acc_mean": 0.95, "macs": 10},
        "small": {"val_acc_mean": 0.91, "val_acc_std": 0.01, "test_acc_mean": 0.90, "macs": 1}}}
    from convbench.study import parse_study

    study = parse_study({"study": "s", "dataset": "digits", "folds": 5, "experiments": {
        "big": {"arch": "mlp", "input_size": 8}, "small": {"arch": "mlp", "input_size": 8}}})
    row = {"ablation": "size", "baseline": "small", "treatment": "big", "metric": tables.FINDING_METRIC,
           "comparison": comparison}
    clear = tables.finding_lines(results, [{**row, "p_holm": 0.004, "verdict_code": "better"}], study)
    assert clear[0].startswith("Winner: big, 96.00 ± 1.00 % validation accuracy")
    assert clear[0].endswith("ahead of small (91.00 %)")
    assert clear[1] == (f"size: big better than small, {comparison.mean:+.2f} points, 95% CI "
                        f"[{comparison.ci_low:+.2f}, {comparison.ci_high:+.2f}], Holm-adjusted p = 0.004 (5 folds)")
    unclear = tables.finding_lines(results, [{**row, "p_holm": 0.2, "verdict_code": "no clear difference"}], study)
    assert unclear[1].startswith("size: no clear difference between big and small (not a finding)")


# ------------------------------------------------------------------------------ accuracy and cost


def test_the_pareto_figures_labels_overlap_nothing_and_stay_inside() -> None:
    """The default study's crowd: five LeNets of one size within a few points, three MLPs of one
    size, a ResNet-18 pair; every label is placed where it overlaps no other label."""
    import pandas as pd
    from matplotlib.text import Text

    rows = {
        "lenet": (0.919, 6e4, 6e3), "lenet_relu_max": (0.952, 6e4, 6e3), "lenet_bn": (0.978, 6.1e4, 6.2e3),
        "lenet_bn_off": (0.917, 6e4, 6e3), "lenet_relu_max_default_init": (0.950, 6e4, 6e3),
        "mlp_plain": (0.975, 3e4, 3e4), "mlp_dropout": (0.974, 3e4, 3e4), "mlp_weight_decay": (0.973, 3e4, 3e4),
        "resnet18": (0.985, 3e6, 7e5), "resnet18_plain": (0.952, 3e6, 7e5), "densenet": (0.986, 4e6, 2e5),
        "vgg11_bn": (0.981, 2.4e6, 6e5), "alexnet": (0.941, 5e6, 2e6), "nin_bn": (0.975, 4e6, 1.2e5),
        "googlenet_bn": (0.961, 3e6, 3e5), "mini_inception": (0.977, 2e6, 3e5), "mini_resnet": (0.984, 9e5, 2e5),
    }
    board = pd.DataFrame({"val_acc_mean": [v[0] for v in rows.values()],
                          "val_acc_std": [0.01] * len(rows), "macs": [v[1] for v in rows.values()],
                          "params": [v[2] for v in rows.values()]}, index=list(rows))
    fig = figures.pareto_figure(board)
    figures.figure_png(fig)  # drawn as the report draws it
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text() in rows]
        assert sorted(t.get_text() for t in labels) == sorted(rows)
        boxes = [Text.get_window_extent(t, renderer) for t in labels]
        frame = ax.get_window_extent(renderer)
        for i, box in enumerate(boxes):
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            for j in range(i):
                assert not box.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
