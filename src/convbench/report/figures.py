"""The report's figures, and the PNG files the notebook shows and Snakemake's report() links.

Each figure is a matplotlib ``Figure`` made from what the report loaded (no pyplot, no global
state); :func:`save_png` writes it without a timestamp, so equal figures give equal files.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from convbench._io import atomic_write
from convbench.prepare import Dataset
from convbench.report.load import ReportData
from convbench.stats import ABLATION_METRICS, CONFIDENCE, PairedComparison
from convbench.report.tables import leaderboard
from convbench.study import REPORT_FIGURES

FIGURES = REPORT_FIGURES
MISCLASSIFIED_SHOWN = 40
HISTORY_CURVES = (  # column, label, colour, line style
    ("train_loss", "train loss", "tab:blue", "-"),
    ("val_loss", "val loss", "tab:blue", "--"),
    ("train_acc", "train acc", "tab:orange", "-"),
    ("val_acc", "val acc", "tab:orange", "--"),
)


# ------------------------------------------------------------------------------------ PNG files


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
        if (cost > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel(f"{label} (log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("validation accuracy (%), mean over folds")
    axes[0].legend(loc="lower right", fontsize=8)
    # Labels last, on the final layout: each goes to the first place near its point where it
    # overlaps no other label, no point and not the legend (experiments of one network often sit
    # within a point of each other).
    FigureCanvasAgg(fig).draw()
    fig.set_layout_engine("none")
    for ax, column in zip(axes, ("macs", "params")):
        cost = board[column].to_numpy(dtype=np.float64)
        front = pareto_front(cost, accuracy)
        place_labels(ax, list(board.index), cost, accuracy,
                     ["tab:red" if on_front else "0.3" for on_front in front])
    return fig


# Where a label may go, in points from its point: beside it first, then above or below, then
# further out (with a leader line).
_LABEL_OFFSETS = [(dx, dy) for ring in (1, 2, 3, 4, 6, 8)
                  for dx, dy in ((5, -3), (-5, -3), (5, 3 + 4 * ring), (-5, 3 + 4 * ring),
                                 (5, -9 - 4 * ring), (-5, -9 - 4 * ring),
                                 (5 + 12 * ring, -3), (-5 - 12 * ring, -3))]


def place_labels(ax: Any, names: Sequence[str], xs: np.ndarray, ys: np.ndarray,
                 colors: Sequence[str], fontsize: float = 7) -> list[Any]:
    """Annotate each point (x, y) of ``ax`` with its name where the label's box overlaps no other
    label, no marker and not the legend, trying the offsets of ``_LABEL_OFFSETS`` in turn (from the
    highest point down, so the crowded top of a leaderboard is placed first); a label set away from
    its point gets a thin leader line. Deterministic: the same figure every time."""
    renderer = ax.figure.canvas.get_renderer()
    taken = []  # display-space boxes: markers, the legend, then every placed label
    for x, y in zip(xs, ys):
        if np.isfinite(x) and np.isfinite(y):
            px, py = ax.transData.transform((x, y))
            taken.append(Bbox.from_extents(px - 3, py - 3, px + 3, py + 3))
    if ax.get_legend() is not None:
        taken.append(ax.get_legend().get_window_extent(renderer))
    frame = ax.get_window_extent(renderer)
    points = ax.figure.dpi / 72
    labels = []
    for i in sorted(range(len(names)), key=lambda i: (-ys[i], xs[i])):
        if not (np.isfinite(xs[i]) and np.isfinite(ys[i])):
            continue
        for dx, dy in _LABEL_OFFSETS:
            label = ax.annotate(names[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                                ha="left" if dx > 0 else "right", va="bottom", fontsize=fontsize,
                                color=colors[i])
            label.update_positions(renderer)  # an offset label's place is worked out when drawn
            box = Text.get_window_extent(label, renderer)
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                      and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(other) for other in taken):
                break
            label.remove()
        else:  # nowhere free: beside the point, as before
            dx, dy = _LABEL_OFFSETS[0]
            label = ax.annotate(names[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                                ha="left", va="bottom", fontsize=fontsize, color=colors[i])
        if abs(dx) > 6 or abs(dy) > 8:
            label.remove()
            label = ax.annotate(names[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                                ha="left" if dx > 0 else "right", va="bottom", fontsize=fontsize,
                                color=colors[i], arrowprops={"arrowstyle": "-", "color": "0.7",
                                                             "lw": 0.5, "shrinkA": 0, "shrinkB": 2 * points})
        label.update_positions(renderer)
        taken.append(Text.get_window_extent(label, renderer))
        labels.append(label)
    return labels


# ------------------------------------------------------------------------------------ ablations


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


def run_accuracies(results: dict[str, Any]) -> pd.DataFrame:
    """One row per experiment and run: validation and test accuracy (fractions), from study.json."""
    rows = [{"experiment": name, **run} for name, row in results["experiments"].items() for run in row["per_run"]]
    return pd.DataFrame(rows, columns=["experiment", "repeat", "fold", "seed", "val_acc", "test_acc"])


def fold_spread_figure(results: dict[str, Any]) -> Figure:
    """Each run's validation and test accuracy per experiment, best (by validation) on top."""
    order = list(leaderboard(results).index)
    folds = run_accuracies(results)
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
    from convbench.evaluate import MISCLASSIFIED_KEPT

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
