"""The study report: one self-contained HTML page that says what the study found, and how sure it is.

Everything the report shows is computed here, by functions the tests call; the papermill template
(``workflow/notebooks/report.ipynb``) only calls them and displays what they return. ``render``
executes the template, keeps the executed notebook and converts it to ``report.html`` with the code
hidden, the figures inline and nothing fetched from the network, so the page opens offline.

The numbers come from ``results/metrics.json`` (what ``convbench aggregate`` wrote) and are only
formatted here, never recomputed; per-fold files add what metrics.json does not summarize (learning
curves, confusion matrices, misclassified images, devices). The best experiment is chosen by
cross-validated validation accuracy; test accuracy is shown, never used to choose.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from convbench import provenance, reference
from convbench._io import atomic_write
from convbench.prepared import Dataset
from convbench.study import Run, Study

TEMPLATE = Path("workflow/notebooks/report.ipynb")  # in the pipeline's directory (the repo root)
FIGURES = ("learning_curves", "pareto", "ablations", "fold_spread", "confusion", "misclassified")
CONFIDENCE = 0.95
MISCLASSIFIED_SHOWN = 40
HISTORY_CURVES = (  # column, label, colour, line style
    ("train_loss", "train loss", "tab:blue", "-"),
    ("val_loss", "val loss", "tab:blue", "--"),
    ("train_acc", "train acc", "tab:orange", "-"),
    ("val_acc", "val acc", "tab:orange", "--"),
)


class ReportError(ValueError):
    """The report cannot be made from what is on disk; the message says what is missing."""


# ------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ReportData:
    """Everything the report reads, loaded once."""

    study: Study
    summary: dict[str, Any]  # results/metrics.json, as written by ``convbench aggregate``
    run_metrics: dict[tuple[str, Run], dict[str, Any]]  # results/<exp>/<run>/metrics.json
    perf: dict[tuple[str, Run], dict[str, Any]]  # results/<exp>/<run>/perf.json
    history: pd.DataFrame  # every history.csv, with experiment, repeat, fold and seed columns
    dataset: Dataset

    def runs_of(self, experiment: str) -> list[dict[str, Any]]:
        """The metrics of every run of ``experiment``."""
        return [self.run_metrics[experiment, run] for run in self.study.runs()]


def _read_json(path: Path, made_by: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist; make it with '{made_by}'") from None
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None


def check_summary(study: Study, summary: dict[str, Any]) -> None:
    """metrics.json must cover every experiment of the study, run by run."""
    experiments = summary.get("experiments", {})
    for name in study.experiments:
        row = experiments.get(name)
        if row is None:
            raise ReportError(
                f"{study.metrics_path} has no experiment {name!r}; "
                "rerun 'convbench aggregate' for this study"
            )
        have = sorted((r["repeat"], r["fold"], r["seed"]) for r in row.get("per_run", []))
        want = sorted((run.repeat, run.fold, run.seed) for run in study.runs())
        if have != want:
            raise ReportError(
                f"{study.metrics_path}: experiment {name!r} has {len(have)} runs, the study asks "
                f"for {len(want)} ({study.repeats} repeats x {study.folds} folds x "
                f"{len(study.seeds)} seeds); rerun the pipeline"
            )


def load_summary(
    study_path: str | Path, selection: str | None = None, results_dir: str | Path | None = None
) -> tuple[Study, dict[str, Any]]:
    """The study and its results/metrics.json, checked to cover every experiment and fold.

    ``results_dir`` replaces the study's own (where its ``convbench aggregate`` wrote).
    """
    from convbench.study import load_study

    study = load_study(study_path, selection)
    if results_dir is not None:
        study = replace(study, results_dir=str(results_dir).rstrip("/"))
    summary = _read_json(Path(study.metrics_path), "convbench aggregate")
    check_summary(study, summary)
    return study, summary


def load_report_data(
    study_path: str | Path,
    selection: str | None = None,
    results_dir: str | Path | None = None,
    data_path: str | Path | None = None,
) -> ReportData:
    """Read the study, results/metrics.json, every run's files and the prepared data.

    ``results_dir`` and ``data_path`` default to the study's own paths. A run file that disagrees
    with metrics.json (a stale aggregate) is refused rather than reported.
    """
    from convbench.prepared import load_prepared

    study, summary = load_summary(study_path, selection, results_dir)
    run_metrics: dict[tuple[str, Run], dict[str, Any]] = {}
    perf: dict[tuple[str, Run], dict[str, Any]] = {}
    histories = []
    for name in study.experiments:
        expected = {(r["repeat"], r["fold"], r["seed"]): r["val_acc"]
                    for r in summary["experiments"][name]["per_run"]}
        for run in study.runs():
            run_dir = Path(study.run_dir(name, run))
            metrics = _read_json(run_dir / "metrics.json", "convbench evaluate")
            value = expected[run.repeat, run.fold, run.seed]
            if metrics["val"]["accuracy"] != value:
                raise ReportError(
                    f"{run_dir / 'metrics.json'} disagrees with {study.metrics_path} "
                    f"(val accuracy {metrics['val']['accuracy']} vs {value}); "
                    "rerun 'convbench aggregate'"
                )
            run_metrics[name, run] = metrics
            perf[name, run] = _read_json(run_dir / "perf.json", "convbench evaluate")
            histories.append(read_history(run_dir / "history.csv").assign(
                experiment=name, repeat=run.repeat, fold=run.fold, seed=run.seed))
    dataset = load_prepared(data_path if data_path is not None else study.prepared_path)
    return ReportData(study, summary, run_metrics, perf, pd.concat(histories, ignore_index=True), dataset)


HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def read_history(path: Path) -> pd.DataFrame:
    """A run's history.csv, refused with the file's name when it is missing, empty or not one."""
    if not path.exists():
        raise ReportError(f"{path} does not exist; make it with 'convbench train'")
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not a history written by convbench train ({err}); train the run "
                          "again") from None
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing or history.empty:
        raise ReportError(f"{path}: expected columns {', '.join(HISTORY_COLUMNS)} and one row per "
                          f"epoch, found {'no rows' if not missing else 'no ' + ', '.join(missing)}; "
                          "train the run again")
    if not all(pd.api.types.is_numeric_dtype(history[c]) for c in HISTORY_COLUMNS):
        raise ReportError(f"{path}: a column of {', '.join(HISTORY_COLUMNS)} holds text, not numbers; "
                          "train the run again")
    return history


# ---------------------------------------------------------------------------------- leaderboard


def percent(value: float) -> str:
    """An accuracy (a fraction) as percent with two decimals: the one rounding the report shows."""
    return f"{100 * value:.2f}"


def mean_std(row: dict[str, Any], metric: str) -> str:
    """``row``'s mean ± std over runs of ``metric`` (e.g. ``val_acc``) in percent, as a table cell."""
    return f"{percent(row[f'{metric}_mean'])}\u00a0±\u00a0{percent(row[f'{metric}_std'])}"


def leaderboard(summary: dict[str, Any]) -> pd.DataFrame:
    """metrics.json's experiments, ranked by mean validation accuracy (ties: fewer MACs first)."""
    board = pd.DataFrame.from_dict(summary["experiments"], orient="index")
    board.index.name = "experiment"
    board = board.sort_values(["val_acc_mean", "macs"], ascending=[False, True], kind="stable")
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def best_experiment(summary: dict[str, Any]) -> str:
    """The experiment with the highest cross-validated (validation) accuracy; never by test."""
    return str(leaderboard(summary).index[0])


def format_leaderboard(board: pd.DataFrame, descriptions: dict[str, str] | None = None) -> pd.DataFrame:
    """The leaderboard as the strings the report shows, every number from metrics.json."""
    descriptions = descriptions or {}
    rows = []
    for name, row in board.iterrows():
        knobs = ", ".join(f"{k}={v}" for k, v in row["knobs"].items()) or "defaults"
        rows.append({
            "#": row["rank"],
            "experiment": name,
            "network": f"{row['arch']} ({knobs})",
            "input (px)": row["input_size"],
            "params": f"{row['params']:,}",
            "MACs": f"{row['macs']:,}",
            "val acc (%)": mean_std(row, "val_acc"),
            "test acc (%)": mean_std(row, "test_acc"),
            "best epoch": f"{row['best_epoch_mean']:.1f}",
            "spread (val): folds / seeds": spread_cell(row),
            "train s / run": f"{row['train_seconds_mean']:.1f}",
            "train img/s": f"{row['examples_per_s_mean']:,.0f}",
            "inference img/s": f"{row['inference_images_per_s_mean']:,.0f}",
            "description": descriptions.get(str(name), ""),
        })
    return pd.DataFrame(rows)


def spread_cell(row: Any) -> str:
    """The standard deviation of validation accuracy over folds and over seeds (points)."""
    seeds = row.get("val_acc_seed_std")
    seed_text = "one seed" if seeds is None or (isinstance(seeds, float) and math.isnan(seeds)) \
        else percent(seeds)
    return f"{percent(row['val_acc_fold_std'])}\u00a0/\u00a0{seed_text}"


def table_html(frame: pd.DataFrame, header: bool = True) -> str:
    """A DataFrame as the report's table (escaped: names and descriptions are text, not markup)."""
    return frame.to_html(index=False, header=header, border=0, classes="convbench-table", escape=True)


# ------------------------------------------------------------------------------- against the book


def against_the_book(data: ReportData) -> list[dict[str, Any]]:
    """Each experiment that has a d2l counterpart, with its published numbers and ours."""
    book = reference.d2l()
    rows = []
    for name, experiment in data.study.experiments.items():
        published = book.counterpart(
            data.study.dataset, experiment.arch, experiment.knobs, experiment.input_size,
            experiment.recipe,
        )
        if published is not None:
            ours = data.summary["experiments"][name]
            rows.append({"experiment": name, "published": published, "ours": ours,
                         "verdict": published.verdict(ours["test_acc_mean"])})
    return rows


def format_against_the_book(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "experiment": row["experiment"],
            "d2l network": row["published"].title,
            "d2l test acc (%), latest build": percent(row["published"].test_acc),
            "d2l range over 20 builds (%)": (
                f"{percent(row['published'].test_acc_low)}\u2013"
                f"{percent(row['published'].test_acc_high)} "
                f"(median {percent(row['published'].test_acc_median)})"
            ),
            "our test acc (%)": mean_std(row["ours"], "test_acc"),
            "our val acc (%)": mean_std(row["ours"], "val_acc"),
            "verdict": row["verdict"],
        }
        for row in rows
    ])


def against_the_book_html(rows: list[dict[str, Any]], study: Study) -> str:
    if not rows:
        return (
            "<p>No experiment of this study has a d2l counterpart: d2l's numbers are for "
            f"{html.escape(reference.d2l().dataset)}, each network at d2l's resolution, with d2l's "
            "recipe (<code>recipe: {preset: d2l}</code>) and default knobs.</p>"
        )
    caption = (
        f"<p>Ours: the mean ± standard deviation over {runs_phrase(study)}, each trained on "
        f"{study.folds - 1}/{study.folds} of the training set and scored once on the official test "
        f"set; d2l's: one model trained on the whole training set. Source: "
        f"{html.escape(reference.d2l().source)}</p>"
    )
    return table_html(format_against_the_book(rows)) + caption


def runs_phrase(study: Study) -> str:
    """``3 fold models`` or ``12 models (2 repeats x 3 folds x 2 seeds)``."""
    if study.repeats == 1 and len(study.seeds) == 1:
        return f"{study.folds} fold models"
    return (f"{len(study.runs())} models ({study.repeats} repeats × {study.folds} folds × "
            f"{len(study.seeds)} seeds)")


# ------------------------------------------------------------------------------ learning curves


def learning_curves(history: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and epoch: mean, min and max over runs of the loss and accuracy columns."""
    columns = [column for column, *_ in HISTORY_CURVES]
    grouped = history.groupby(["experiment", "epoch"], sort=False)[columns]
    return grouped.agg(["mean", "min", "max"])


def _grid(count: int, columns: int, panel: tuple[float, float]) -> tuple[Figure, list[Any]]:
    rows = max(1, math.ceil(count / columns))
    columns = min(columns, max(count, 1))
    fig = Figure(figsize=(panel[0] * columns, panel[1] * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).flatten().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def learning_curves_figure(history: pd.DataFrame, order: Sequence[str] | None = None) -> Figure:
    """d2l's plot of train/val loss and accuracy per epoch, one panel per experiment: the mean
    over runs as a line, their range as a band."""
    curves = learning_curves(history)
    order = list(order) if order is not None else list(dict.fromkeys(history["experiment"]))
    fig, axes = _grid(len(order), 4, (4.0, 2.8))
    for ax, name in zip(axes, order):
        frame = curves.loc[name]
        epochs = frame.index.to_numpy()
        top = 1.05
        for column, label, colour, style in HISTORY_CURVES:
            ax.plot(epochs, frame[(column, "mean")], style, color=colour, label=label,
                    marker="o" if len(epochs) < 3 else None, markersize=3)
            ax.fill_between(epochs, frame[(column, "min")], frame[(column, "max")], color=colour,
                            alpha=0.15 if style == "-" else 0.25, linewidth=0)
            top = max(top, float(frame[(column, "max")].max()))
        ax.set_ylim(0, min(top * 1.05, 3.0))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(epochs) < 10:
            ax.set_xticks(epochs)
    if axes:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=4, fontsize=9, frameon=False)
    return fig


# ------------------------------------------------------------------------------- accuracy / cost


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> np.ndarray:
    """Mask of the points on the Pareto front: no other point costs at most as much and scores at
    least as well while being strictly better in one of the two. Equal points are all on it;
    points with a NaN never are."""
    cost = np.asarray(cost, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    if cost.shape != value.shape or cost.ndim != 1:
        raise ValueError(f"cost and value must be 1-d and of one length, got {cost.shape} and {value.shape}")
    finite = np.isfinite(cost) & np.isfinite(value)
    # dominates[i, j]: point j dominates point i
    no_worse = (cost[None, :] <= cost[:, None]) & (value[None, :] >= value[:, None])
    better = (cost[None, :] < cost[:, None]) | (value[None, :] > value[:, None])
    dominates = no_worse & better & finite[None, :]
    return finite & ~dominates.any(axis=1)


def pareto_figure(board: pd.DataFrame) -> Figure:
    """Validation accuracy (fold mean, ± one std) against MACs and against parameters, with the
    Pareto front of the experiments (most accurate for the cost) drawn and marked."""
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    accuracy = 100 * board["val_acc_mean"].to_numpy(dtype=np.float64)
    spread = 100 * board["val_acc_std"].to_numpy(dtype=np.float64)
    for ax, column, label in zip(axes, ("macs", "params"), ("MACs per image", "parameters")):
        cost = board[column].to_numpy(dtype=np.float64)
        front = pareto_front(cost, accuracy)
        ax.errorbar(cost, accuracy, yerr=spread, fmt="o", color="0.55", ecolor="0.75",
                    markersize=5, capsize=2, label="experiment (± std over folds)")
        ax.scatter(cost[front], accuracy[front], s=60, color="tab:red", zorder=3, label="Pareto front")
        steps = np.argsort(cost[front], kind="stable")
        ax.step(cost[front][steps], accuracy[front][steps], where="post", color="tab:red", alpha=0.6)
        for i, (name, x, y, on_front) in enumerate(zip(board.index, cost, accuracy, front)):
            # experiments of equal cost (one network, other training) alternate right and left
            left = int(np.sum((cost[:i] == x) & (accuracy[:i] >= y))) % 2 == 1
            ax.annotate(name, (x, y), xytext=(-4 if left else 4, 3), textcoords="offset points",
                        ha="right" if left else "left", fontsize=7,
                        color="tab:red" if on_front else "0.3")
        if (cost > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel(f"{label} (log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("validation accuracy (%), mean over folds")
    axes[0].legend(loc="lower right", fontsize=8)
    return fig


# ------------------------------------------------------------------------------------ ablations


@dataclass(frozen=True)
class PairedComparison:
    """Treatment minus baseline, resample by resample (a fold of one repeat), in accuracy points
    (percent), with the corrected resampled t-test (Nadeau & Bengio 2003)."""

    differences: tuple[float, ...]
    mean: float
    std: float  # sample standard deviation of the differences (0 for one fold)
    ci_low: float  # the confidence interval of the mean difference (corrected t)
    ci_high: float
    t: float  # the corrected t statistic; NaN where undefined (one fold, or no spread at all)
    p: float  # its two-sided p value; NaN where undefined
    test_train_ratio: float  # n_test / n_train of each resample: the variance correction
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        return len(self.differences)


def paired_comparison(
    baseline: Sequence[float],
    treatment: Sequence[float],
    *,
    test_train_ratio: float,
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """The corrected resampled t-test of the mean per-fold difference, and its interval.

    Folds pair the two runs (both trained and validated on the same split), but the folds' training
    sets overlap, so their differences are correlated and the plain paired t-test's variance
    ``s²/J`` is too small (Dietterich 1998). Nadeau & Bengio (2003, "Inference for the
    Generalization Error") correct it to ``(1/J + n_test/n_train) s²`` over J resamples, with J - 1
    degrees of freedom; Bouckaert & Frank (2004) recommend it with repeated cross-validation. For
    K-fold cross-validation ``n_test/n_train = 1/(K - 1)``. ``test_train_ratio=0`` gives the plain
    paired t-test.

    No spread at all (every fold differs by the same amount) leaves the t statistic undefined: the
    interval is then the single value, with no p value, instead of a NaN crash.
    """
    from scipy import stats

    baseline_ = np.asarray(baseline, dtype=np.float64)
    treatment_ = np.asarray(treatment, dtype=np.float64)
    if baseline_.shape != treatment_.shape or baseline_.ndim != 1 or len(baseline_) == 0:
        raise ValueError(
            f"need one baseline and one treatment value per fold, got {len(baseline_)} and {len(treatment_)}"
        )
    if not test_train_ratio >= 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    # Accuracies are multiples of 1/n; rounding away float noise keeps equal folds exactly equal.
    differences = np.round(100 * (treatment_ - baseline_), 9)
    n = len(differences)
    mean = float(differences.mean())
    folds = tuple(differences.tolist())
    if n < 2:
        return PairedComparison(folds, mean, 0.0, -math.inf, math.inf, math.nan, math.nan,
                                test_train_ratio, confidence)
    if (differences == differences[0]).all():
        constant = float(differences[0])
        return PairedComparison(folds, constant, 0.0, constant, constant, math.nan, math.nan,
                                test_train_ratio, confidence)
    std = float(differences.std(ddof=1))
    standard_error = math.sqrt((1 / n + test_train_ratio) * std**2)
    t = mean / standard_error
    p = float(2 * stats.t.sf(abs(t), df=n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * standard_error
    return PairedComparison(folds, mean, std, mean - half, mean + half, t, p, test_train_ratio,
                            confidence)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p values (NaN stays NaN, outside the family).

    With m tests sorted by p, the i-th smallest (from 0) becomes ``max over j <= i of
    min(1, (m - j) p_(j))``: the family-wise error stays at the nominal level, whatever the
    dependence between the tests.
    """
    defined = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(defined)):
        running = max(running, min(1.0, (len(defined) - rank) * p))
        adjusted[i] = running
    return adjusted


def format_p(p: float) -> str:
    """A p value for a table cell: ``0.042``, ``< 0.001`` or ``n/a`` (undefined)."""
    if math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_text(p: float) -> str:
    """A p value in a sentence: ``p = 0.042`` or ``p < 0.001``."""
    cell = format_p(p)
    return f"p {cell}" if cell.startswith("<") else f"p = {cell}"


def verdict(
    comparison: PairedComparison, baseline: str, treatment: str, p_adjusted: float | None = None
) -> str:
    """One line that claims no more than the interval (and the family-wise p value) supports:
    "better", "worse" or "no clear difference"."""
    c = comparison
    level = f"{100 * c.confidence:g}%"
    interval = f"{level} CI [{c.ci_low:+.2f}, {c.ci_high:+.2f}] points"
    folds = f"{c.n} folds" if c.n > 1 else "1 fold"
    if c.n < 2:
        return f"cannot tell: a paired comparison needs at least 2 folds, this has {c.n}"
    if c.std == 0:
        if c.mean == 0:
            return f"no difference: {treatment} and {baseline} score the same on all {folds}"
        direction = "better" if c.mean > 0 else "worse"
        return (f"{treatment} {direction} than {baseline} by {c.mean:+.2f} points on every one of "
                f"the {folds} (no spread between folds, so no t-test)")
    if c.ci_low <= 0 <= c.ci_high:
        return (f"no clear difference: the {interval} includes zero "
                f"(mean {c.mean:+.2f}, corrected t-test {p_text(c.p)}, {folds})")
    alpha = 1 - c.confidence
    if p_adjusted is not None and not math.isnan(p_adjusted) and p_adjusted >= alpha:
        return (f"no clear difference once all the ablations are counted: {c.mean:+.2f} points, "
                f"{interval}, but Holm-adjusted {p_text(p_adjusted)} ({folds})")
    direction = "better" if c.mean > 0 else "worse"
    adjusted = "" if p_adjusted is None else f", Holm-adjusted {p_text(p_adjusted)}"
    return (f"{treatment} {direction} than {baseline}: {c.mean:+.2f} points, {interval} "
            f"(corrected t-test {p_text(c.p)}{adjusted}, {folds})")


def run_accuracies(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per experiment and run: validation and test accuracy (fractions), from metrics.json."""
    rows = [{"experiment": name, **run} for name, row in summary["experiments"].items() for run in row["per_run"]]
    return pd.DataFrame(rows, columns=["experiment", "repeat", "fold", "seed", "val_acc", "test_acc"])


ABLATION_METRICS = (("val_acc", "validation (cross-validated)"), ("test_acc", "test"))


def resample_means(row: dict[str, Any], metric: str) -> dict[tuple[int, int], float]:
    """``metric`` per resample (repeat, fold), averaged over the seeds trained on it."""
    cells: dict[tuple[int, int], list[float]] = {}
    for run in row["per_run"]:
        cells.setdefault((run["repeat"], run["fold"]), []).append(run[metric])
    return {cell: float(np.mean(values)) for cell, values in sorted(cells.items())}


def ablation_results(study: Study, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every named ablation, compared on validation and test accuracy, resample by resample.

    A resample is one fold of one repeat (R x K of them); the seeds trained on the same fold are
    averaged first, since they share its data exactly. Each comparison is the corrected resampled
    t-test with K-fold's ``n_test/n_train = 1/(K-1)`` (the models' training sets overlap whichever
    set they are scored on). The ablations of a study are one family: per metric, their p values
    are Holm-adjusted together.
    """
    ratio = 1 / (study.folds - 1)
    results = []
    for ablation in study.ablations.values():
        base = summary["experiments"][ablation.baseline]
        treat = summary["experiments"][ablation.treatment]
        for key, metric in ABLATION_METRICS:
            base_cells, treat_cells = resample_means(base, key), resample_means(treat, key)
            if base_cells.keys() != treat_cells.keys():
                raise ReportError(f"ablation {ablation.name!r}: {ablation.baseline} and "
                                  f"{ablation.treatment} were not run on the same folds")
            results.append({
                "ablation": ablation.name,
                "question": ablation.question,
                "baseline": ablation.baseline,
                "treatment": ablation.treatment,
                "metric": metric,
                "comparison": paired_comparison(list(base_cells.values()), list(treat_cells.values()),
                                                test_train_ratio=ratio),
            })
    for _, metric in ABLATION_METRICS:
        family = [r for r in results if r["metric"] == metric]
        for r, adjusted in zip(family, holm([r["comparison"].p for r in family]), strict=True):
            r["p_holm"] = adjusted
            r["verdict"] = verdict(r["comparison"], r["baseline"], r["treatment"], adjusted)
    return results


def format_ablations(results: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in results:
        c: PairedComparison = r["comparison"]
        rows.append({
            "ablation": r["ablation"],
            "treatment − baseline": f"{r['treatment']} − {r['baseline']}",
            "accuracy": r["metric"],
            "Δ per fold (points)": ", ".join(f"{d:+.2f}" for d in c.differences),
            "mean Δ": f"{c.mean:+.2f}",
            f"{100 * c.confidence:g}% CI (corrected)": f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]",
            "p (corrected t)": format_p(c.p),
            "p (Holm)": format_p(r["p_holm"]),
        })
    return pd.DataFrame(rows)


def ablations_html(results: list[dict[str, Any]]) -> str:
    """Each ablation's question and verdicts (validation first), then the numbers in a table."""
    if not results:
        return "<p>This study names no ablations.</p>"
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_name.setdefault(r["ablation"], []).append(r)
    items = []
    for name, rows in by_name.items():
        verdicts = "".join(
            f"<br>{html.escape(r['metric'])}: <span class='verdict'>{html.escape(r['verdict'])}</span>"
            for r in rows
        )
        question = html.escape(rows[0]["question"] or f"{rows[0]['treatment']} vs {rows[0]['baseline']}")
        items.append(f"<li><b>{html.escape(name)}</b>: {question}{verdicts}</li>")
    return f"<ul class='verdicts'>{''.join(items)}</ul>" + table_html(format_ablations(results))


def ablations_figure(results: list[dict[str, Any]]) -> Figure:
    """Differences per fold (dots; each repeat's folds) with the mean and its confidence interval
    (bar), per ablation."""
    names = list(dict.fromkeys(r["ablation"] for r in results))
    fig = Figure(figsize=(10, 1.0 + 0.75 * max(len(names), 1)), layout="constrained")
    ax = fig.subplots()
    if not names:
        ax.text(0.5, 0.5, "this study names no ablations", ha="center", va="center")
        ax.set_axis_off()
        return fig
    styles = {ABLATION_METRICS[0][1]: ("tab:blue", -0.15), ABLATION_METRICS[1][1]: ("tab:orange", 0.15)}
    for r in results:
        colour, offset = styles[r["metric"]]
        y = names.index(r["ablation"]) + offset
        c: PairedComparison = r["comparison"]
        label = r["metric"] if r["ablation"] == names[0] else None
        ax.scatter(c.differences, [y] * c.n, color=colour, alpha=0.6, s=22, label=label)
        if math.isfinite(c.ci_low) and math.isfinite(c.ci_high):
            ax.errorbar([c.mean], [y], xerr=[[c.mean - c.ci_low], [c.ci_high - c.mean]], fmt="|",
                        color=colour, markersize=12, capsize=4, linewidth=1.5)
    ax.axvline(0, color="0.3", linewidth=1)
    pairs = {r["ablation"]: f"{r['treatment']} − {r['baseline']}" for r in results}
    ax.set_yticks(range(len(names)), [f"{name}\n{pairs[name]}" for name in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"accuracy difference, treatment − baseline (points); bars: mean and "
                  f"{100 * CONFIDENCE:g}% CI")
    ax.grid(alpha=0.3, axis="x")
    fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------------- fold spread


def fold_spread_figure(summary: dict[str, Any]) -> Figure:
    """Each run's validation and test accuracy per experiment, best (by validation) on top."""
    order = list(leaderboard(summary).index)
    folds = run_accuracies(summary)
    fig = Figure(figsize=(10, 1.2 + 0.38 * len(order)), layout="constrained")
    ax = fig.subplots()
    for column, colour, offset, label in (("val_acc", "tab:blue", -0.12, "validation"),
                                          ("test_acc", "tab:orange", 0.12, "test")):
        for i, name in enumerate(order):
            values = 100 * folds.loc[folds["experiment"] == name, column].to_numpy()
            ax.scatter(values, np.full(len(values), i + offset), color=colour, s=18, alpha=0.7,
                       label=label if i == 0 else None)
            ax.plot([values.mean()] * 2, [i + offset - 0.15, i + offset + 0.15], color=colour, linewidth=2)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel("accuracy (%) per run (fold model); vertical tick: mean over runs")
    ax.grid(alpha=0.3, axis="x")
    fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------------- best model


def summed_confusion(data: ReportData, experiment: str) -> np.ndarray:
    """The test confusion matrices (rows: true, columns: predicted) of all runs' models, summed."""
    return sum(np.asarray(m["test"]["confusion_matrix"], dtype=np.int64) for m in data.runs_of(experiment))


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """Counts in the cells; colour is the fraction of each true class (the row)."""
    size = len(classes)
    side = min(max(4.5, 0.4 * size + 1.5), 14)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    if size <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                        color="white" if fractions[i, j] > 0.5 else "black")
    long_names = max(map(len, classes)) > 2
    ax.set_xticks(range(size), classes, fontsize=8, rotation=45 if long_names else 0,
                  ha="right" if long_names else "center")
    ax.set_yticks(range(size), classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    return fig


def misclassified(data: ReportData, experiment: str) -> pd.DataFrame:
    """Test images the experiment's models got wrong: one row per image, with how many of the
    runs' models got it wrong and their most common wrong answer. Most often wrong first."""
    rows = [
        {"model": i, **wrong}
        for i, metrics in enumerate(data.runs_of(experiment))
        for wrong in metrics["test"]["misclassified"]
    ]
    frame = pd.DataFrame(rows, columns=["model", "index", "true", "predicted"])
    if frame.empty:
        return pd.DataFrame(columns=["index", "true", "predicted", "models_wrong"])
    grouped = frame.groupby("index").agg(
        true=("true", "first"),
        predicted=("predicted", lambda p: p.value_counts().sort_index().idxmax()),
        models_wrong=("model", "nunique"),
    ).reset_index()
    return grouped.sort_values(["models_wrong", "index"], ascending=[False, True], kind="stable",
                               ignore_index=True)


def misclassified_caption(data: ReportData, experiment: str, shown: int) -> str:
    """What the grid shows, and whether evaluation's cap on kept images makes its counts partial
    (an HTML paragraph)."""
    from convbench.evaluation import MISCLASSIFIED_KEPT

    tests = [m["test"] for m in data.runs_of(experiment)]
    wrong = [int(np.sum(t["confusion_matrix"]) - np.trace(t["confusion_matrix"])) for t in tests]
    text = (f"{shown} of the test images {experiment}'s {len(tests)} models get wrong "
            f"({', '.join(map(str, wrong))} per model), those most models get wrong first. "
            "Title: true class, most common prediction (models wrong).")
    if any(len(t["misclassified"]) >= MISCLASSIFIED_KEPT for t in tests):
        text += (f" Evaluation keeps each model's first {MISCLASSIFIED_KEPT} misclassified "
                 "images (by test index); the grid and its counts cover those only.")
    return f"<p>{html.escape(text)}</p>"


def misclassified_figure(
    dataset: Dataset, wrong: pd.DataFrame, models: int, limit: int = MISCLASSIFIED_SHOWN
) -> Figure:
    """A grid of misclassified test images titled with their true and predicted class names."""
    shown = wrong.head(limit)
    columns = 10
    fig, axes = _grid(max(len(shown), 1), columns, (1.35, 1.6))
    if shown.empty:
        axes[0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, row in zip(axes, shown.itertuples()):
        image = dataset.test_images[row.index]  # C x H x W, uint8
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(np.moveaxis(image, 0, -1), interpolation="nearest")
        ax.set_title(f"true {dataset.classes[row.true]}\npred {dataset.classes[row.predicted]} "
                     f"({row.models_wrong}/{models})", fontsize=7)
        ax.set_axis_off()
    return fig


# ------------------------------------------------------------------------------- network tables


def layer_table(study: Study, experiment: str, in_channels: int, num_classes: int) -> dict[str, Any]:
    """``convbench summary`` of one experiment's network, built on the meta device (no weights)."""
    import torch

    from convbench.models import build
    from convbench.summary import summarize

    exp = study.experiments[experiment]
    with torch.device("meta"):
        model = build(exp.arch, in_channels=in_channels, num_classes=num_classes,
                      input_size=exp.input_size, **exp.knobs)
    return summarize(model, in_channels=in_channels, input_size=exp.input_size)


def layer_tables_html(study: Study, in_channels: int, num_classes: int) -> str:
    """One collapsed <details> per experiment: its layers, output shapes and parameters."""
    blocks = []
    for name, exp in study.experiments.items():
        result = layer_table(study, name, in_channels, num_classes)
        frame = pd.DataFrame([
            {"layer": row["name"], "type": row["type"],
             "output shape": " × ".join(map(str, row["output_shape"])), "params": f"{row['params']:,}"}
            for row in result["layers"]
        ])
        knobs = ", ".join(f"{k}={v}" for k, v in exp.knobs.items()) or "defaults"
        head = (f"<b>{html.escape(name)}</b>: {html.escape(exp.arch)} ({html.escape(knobs)}), "
                f"input {in_channels} × {exp.input_size} × {exp.input_size}, "
                f"{result['params']:,} params, {result['macs']:,} MACs, {len(result['layers'])} layers")
        blocks.append(f"<details><summary>{head}</summary>{table_html(frame)}</details>")
    return "\n".join(blocks)


# ----------------------------------------------------------------------------------- study card


def _settings(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def recipe_exceptions(
    recipes: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The recipe most experiments share (each setting's most common value) and, per experiment,
    the settings where it departs from that."""
    keys = list(dict.fromkeys(k for recipe in recipes.values() for k in recipe))
    common = {}
    for key in keys:
        values = [json.dumps(recipe.get(key), sort_keys=True) for recipe in recipes.values()]
        common[key] = json.loads(max(dict.fromkeys(values), key=values.count))
    exceptions = {
        name: diff for name, recipe in recipes.items()
        if (diff := {k: recipe.get(k) for k in keys if recipe.get(k) != common[k]})
    }
    return common, exceptions


def study_card(data: ReportData) -> pd.DataFrame:
    """What was run, on what, with what: the facts a reader needs to trust or redo the numbers."""
    study, summary, dataset = data.study, data.summary, data.dataset
    card = summary.get("study", {})
    common, exceptions = recipe_exceptions(
        {name: data.runs_of(name)[0]["recipe"] for name in study.experiments}
    )
    training_devices = sorted({d for p in data.perf.values() for d in p["training"].get("devices", [])})
    inference_devices = sorted({p["inference"]["device"] for p in data.perf.values()})
    seconds = sum(p["training"]["seconds"] for p in data.perf.values())
    inference_seconds = sum(
        len(dataset.test_labels) / p["inference"]["images_per_s"] for p in data.perf.values()
        if p["inference"].get("images_per_s")
    )
    mismatch = "" if card.get("data_sha256") == dataset.sha256 else \
        f" (the models were trained on {card.get('data_sha256')}: the data file has changed since)"
    size = f"{dataset.in_channels} × {dataset.image_size} × {dataset.image_size}"
    rows = [
        ("study", f"{study.name}: {study.description}".rstrip(": ")),
        ("data set", f"{dataset.name}: {len(dataset.train_labels):,} train / {len(dataset.test_labels):,} "
                     f"test images of {size}"),
        ("classes", f"{dataset.num_classes}: {', '.join(dataset.classes)}"),
        ("data checksum (sha256)", f"{dataset.sha256}{mismatch}"),
        ("cross-validation", cross_validation_text(study, card)),
        ("experiments", f"{len(study.experiments)} ({len(study.jobs())} training jobs), "
                        f"{len(study.ablations)} named ablations"),
        ("recipe", _settings(common)),
        *([("recipe exceptions", "; ".join(f"{n}: {_settings(d)}" for n, d in exceptions.items()))]
          if exceptions else []),
        ("code version(s)", "; ".join(
            f"{provenance.describe(v['code_version'])} ({v['runs']} runs)" for v in card.get("code_versions", [])
        ) or str(card.get("code_version", "?"))),
        ("packages", _settings(card.get("packages", {}))),
        ("training device(s)", ", ".join(training_devices)),
        ("inference device(s)", ", ".join(inference_devices)),
        ("compute time", f"{seconds:,.1f} s of training (sum over all {len(data.perf)} jobs' epochs) "
                         f"+ {inference_seconds:,.1f} s of test-set inference"),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


def cross_validation_text(study: Study, card: dict[str, Any]) -> str:
    repeats = (f"{study.repeats} repeats of " if study.repeats > 1 else "")
    seeds = (f"; each fold trained with seeds {', '.join(map(str, study.seeds))}"
             if len(study.seeds) > 1 else f"; training seed {study.seeds[0]}")
    split_seeds = (f"split seeds {study.seed}–{study.split_seed(study.repeats - 1)}" if study.repeats > 1
                   else f"split seed {study.seed}, split {card.get('split_id', '?')}")
    return f"{repeats}{study.folds} stratified folds of the train part ({split_seeds}){seeds}"


def header_html(data: ReportData) -> str:
    study = data.study
    best = best_experiment(data.summary)
    row = data.summary["experiments"][best]
    return (
        f"<h1>convbench report: {html.escape(study.name)}</h1>"
        f"<p>{html.escape(study.description)}</p>"
        f"<p>{len(study.experiments)} experiments on <b>{html.escape(data.dataset.name)}</b>, "
        f"{cross_validation_text(study, data.summary.get('study', {}))}. Best by cross-validated "
        f"validation accuracy: <b>{html.escape(best)}</b>, {percent(row['val_acc_mean'])} ± "
        f"{percent(row['val_acc_std'])} % (test {percent(row['test_acc_mean'])} ± "
        f"{percent(row['test_acc_std'])} %).</p>"
    )


# -------------------------------------------------------------------------------------- figures


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata, so equal figures give equal files)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def save_png(fig: Figure, figures_dir: str | Path, name: str) -> bytes:
    """Write ``figures_dir/name`` (the file a Snakemake ``report()`` flag points at) and return
    the bytes, which the notebook displays: the page and the file show the same image."""
    png = figure_png(fig)
    path = Path(figures_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: file.write(png))
    return png


# -------------------------------------------------------------------------------------- render

# nbconvert's lab template, less everything it would fetch from a CDN (require.js, MathJax,
# mermaid, the widget manager): the report must open offline.
HTML_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<style type="text/css">
main { max-width: 1280px; margin: 0 auto; }
table.convbench-table { font-size: 12px; margin-bottom: 1em; }
.jp-RenderedHTMLCommon table.convbench-table td,
.jp-RenderedHTMLCommon table.convbench-table th { text-align: left; vertical-align: top; }
table.convbench-table td:first-child { white-space: nowrap; }
details { margin: 0.3em 0; }
details summary { cursor: pointer; }
ul.verdicts li { margin-bottom: 0.5em; }
span.verdict { font-style: italic; }
</style>
{% endblock extra_css %}
"""
# What a browser would fetch: src= / href= / url( / @import pointing off the page.
EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)\s*(?:https?:)?//""", re.IGNORECASE
)
STYLE_BLOCK = re.compile(r"<style[^>]*>.*?</style>", re.DOTALL | re.IGNORECASE)
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


def external_references(page: str) -> list[str]:
    """The places in an HTML page that would make a browser reach for the network."""
    return [page[max(m.start() - 20, 0): m.end() + 60] for m in EXTERNAL_REFERENCE.finditer(page)]


def notebook_to_html(notebook_path: Path, title: str) -> str:
    """The executed notebook as one offline HTML page: outputs only, figures inline."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    notebook = nbformat.read(notebook_path, as_version=4)
    notebook.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        template_file="convbench_report.html.j2",
        extra_loaders=[jinja2.DictLoader({"convbench_report.html.j2": HTML_TEMPLATE})],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags={"parameters", "injected-parameters"}), enabled=True
    )
    page, _ = exporter.from_notebook_node(notebook)
    # The theme's CSS comments cite web pages; they fetch nothing, but a page without any URL is
    # easier to check.
    page = STYLE_BLOCK.sub(lambda block: CSS_COMMENT.sub("", block.group(0)), page)
    found = external_references(page)
    if found:
        raise ReportError(f"the HTML would fetch from the network: {found[0]!r}")
    return page


def default_kernel() -> str:
    """The kernel named "python3", provided it runs this interpreter (jupyter_client runs a bare
    ``python`` as ``sys.executable``); another interpreter's kernel would import another convbench."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise ReportError(
            f"no Jupyter kernel 'python3'; install one with '{sys.executable} -m ipykernel install "
            "--sys-prefix' or name one with --kernel"
        ) from None
    executable = spec.argv[0] if spec.argv else ""
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if executable not in bare and os.path.abspath(executable) != os.path.abspath(sys.executable):
        raise ReportError(
            f"the Jupyter kernel 'python3' runs {executable}, not this interpreter ({sys.executable}); "
            f"install one with '{sys.executable} -m ipykernel install --sys-prefix' or name one with --kernel"
        )
    return "python3"


def default_template() -> Path:
    """The pipeline's own template, the one Snakemake and DVC track, when run where the pipeline
    runs; otherwise the one beside this source tree."""
    if TEMPLATE.exists():
        return TEMPLATE
    beside = Path(__file__).resolve().parents[2] / TEMPLATE
    if not beside.exists():
        raise ReportError(f"no report template: neither {TEMPLATE} nor {beside} exists; give --template")
    return beside


def render(
    study_path: str | Path,
    out_dir: str | Path,
    kernel_name: str | None = None,
    *,
    selection: str | None = None,
    results_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    template: str | Path | None = None,
) -> Path:
    """Execute the report template with papermill and convert it to ``out_dir/report.html``.

    Keeps the executed notebook at ``out_dir/report.ipynb`` and the figures in ``out_dir/figures``.
    Paths are taken relative to the current directory, where the kernel runs too (the repo root in
    the pipeline). ``template`` defaults to :func:`default_template`. Returns the HTML path.
    """
    import papermill

    study, _ = load_summary(study_path, selection, results_dir)  # fail here, not in a kernel
    template = Path(template) if template is not None else default_template()
    kernel = kernel_name or default_kernel()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / "report.ipynb"
    # A new file, never one written over in place: with DVC's cache the old output may be a link
    # to the bytes in the cache.
    executed.unlink(missing_ok=True)
    parameters = {
        "study_path": str(study_path),
        "study_selection": selection,
        "results_dir": study.results_dir,
        "data_path": str(data_path) if data_path is not None else None,
        "figures_dir": str(out_dir / "figures"),
    }
    quiet = logging.getLogger("papermill")  # it warns that black is not there to format parameters
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        papermill.execute_notebook(
            str(template), str(executed), parameters=parameters, kernel_name=kernel,
            cwd=str(Path.cwd()), progress_bar=False, log_output=False,
            # the kernel's start-up chatter (a local TCP kernel without encryption) is not news
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    finally:
        quiet.setLevel(level)
    page = notebook_to_html(executed, f"convbench report: {study.name}")
    html_path = out_dir / "report.html"
    atomic_write(html_path, lambda file: file.write(page.encode("utf-8")))
    return html_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench report",
        description="Render the study's report: execute the papermill template "
        "(workflow/notebooks/report.ipynb), keep the executed notebook and write a self-contained "
        "report.html (code hidden, figures inline, nothing fetched from the network).",
    )
    parser.add_argument("--study", type=Path, default=Path("params.yaml"),
                        help="the study file (default: params.yaml)")
    parser.add_argument("--select", default=None, metavar="NAME", help="select a bundled study by name")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where report.html, report.ipynb and figures/ go "
                             "(default: the study's reports_dir)")
    parser.add_argument("--kernel", default=None, metavar="NAME",
                        help="Jupyter kernel to execute the template "
                             "(default: 'python3', checked to run this interpreter)")
    parser.add_argument("--template", type=Path, default=None,
                        help=f"the papermill template (default: {TEMPLATE} if it exists, "
                             "else the one of this source tree)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import yaml
    from papermill.exceptions import PapermillExecutionError

    from convbench.study import load_study

    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    out_dir = args.out_dir
    try:
        out_dir = out_dir or Path(load_study(args.study, args.select).reports_dir)
        html_path = render(args.study, out_dir, args.kernel, selection=args.select, template=args.template)
    except PapermillExecutionError as err:
        print(f"convbench report: error: the report notebook failed in cell {err.exec_count}: "
              f"{err.ename}: {' '.join(str(err.evalue).split())} (see {out_dir / 'report.ipynb'})",
              file=sys.stderr)
        return 1
    except (OSError, yaml.YAMLError, ValueError, KeyError) as err:  # ReportError, StudyError too
        message = " ".join(str(err).split())
        print(f"convbench report: error: {message}", file=sys.stderr)
        return 1
    print(f"wrote {html_path} ({time.perf_counter() - started:.1f} s)")
    return 0
