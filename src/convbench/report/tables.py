"""The report's tables: the leaderboard, against the book, the ablations and the networks' layers.

Every result comes from study.json (or, for the layer tables, from ``convbench summary``'s
rows) and is only formatted here, never recomputed. The leaderboard's measured columns (time and
speed) are the one exception: they are means of the runs' perf.json, which no results file holds,
because wall-clock timings differ between two bit-identical runs. The best experiment is chosen by
cross-validated validation accuracy; test accuracy is shown, never used to choose.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from convbench import reference
from convbench.report import forms
from convbench.report.load import ReportData
from convbench.stats import PairedComparison, format_p, p_text
from convbench.study import Study


# ---------------------------------------------------------------------------------- leaderboard


MISSING = "n/a"  # a measurement no run has: perf.json is a by-product, absent after a dvc pull

# The leaderboard's measured columns: (column, perf.json section, key, format).
MEASURED_COLUMNS = (
    ("train s / run", "training", "seconds", ".1f"),
    ("train img/s", "training", "examples_per_s", ",.0f"),
    ("inference img/s", "inference", "images_per_s", ",.0f"),
)


def measured(value: float | None, spec: str) -> str:
    """A mean of perf.json's measurements as a cell, or MISSING where no run has one."""
    return MISSING if value is None or math.isnan(value) else format(value, spec)


def measured_means(perf: dict[tuple[str, Any], dict[str, Any]], experiment: str) -> dict[str, float | None]:
    """Each measured column's mean over the runs of ``experiment`` that have a perf.json (the
    report's ``ReportData.perf``); None where none has the value."""
    means: dict[str, float | None] = {}
    for column, section, key, _ in MEASURED_COLUMNS:
        values = [p[section][key] for (name, _run), p in perf.items()
                  if name == experiment and p.get(section, {}).get(key) is not None]
        means[column] = sum(values) / len(values) if values else None
    return means


def percent(value: float) -> str:
    """An accuracy (a fraction) as percent with two decimals: the one rounding the report shows."""
    return f"{100 * value:.2f}"


def mean_std(row: dict[str, Any], metric: str) -> str:
    """``row``'s mean ± std over runs of ``metric`` (e.g. ``val_acc``) in percent, as a table cell."""
    return f"{percent(row[f'{metric}_mean'])}\u00a0±\u00a0{percent(row[f'{metric}_std'])}"


def scored_cell(row: Any, metric: str, unit: str = "") -> str:
    """``mean_std`` (then ``unit``), marked where the runs were trained in another precision than
    fp32 (``in bf16``) and where they were scored with test-time augmentation, with what the same
    weights score without it."""
    recipe = row.get("recipe")
    recipe = recipe if isinstance(recipe, dict) else {}
    precision = recipe.get("precision", "fp32")
    text = mean_std(row, metric) + unit + ("" if precision == "fp32" else f" in {precision}")
    tta = recipe.get("tta", "none")
    if tta == "none":
        return text
    plain = row.get(f"{metric}_without_tta_mean")
    known = plain is not None and not (isinstance(plain, float) and math.isnan(plain))
    return f"{text} with {tta} TTA" + (f" ({percent(plain)}{unit} without)" if known else "")


def leaderboard(results: dict[str, Any]) -> pd.DataFrame:
    """study.json's experiments, ranked by mean validation accuracy (ties: fewer MACs first)."""
    board = pd.DataFrame.from_dict(results["experiments"], orient="index")
    board.index.name = "experiment"
    board = board.sort_values(["val_acc_mean", "macs"], ascending=[False, True], kind="stable")
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def best_experiment(results: dict[str, Any]) -> str:
    """The experiment with the highest cross-validated (validation) accuracy; never by test."""
    return str(leaderboard(results).index[0])


def format_leaderboard(
    board: pd.DataFrame,
    descriptions: dict[str, str] | None = None,
    perf: dict[tuple[str, Any], dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """The leaderboard as the strings the report shows: every result from study.json, the measured
    columns from the runs' perf.json (``perf``, as ``ReportData.perf``; MISSING without it)."""
    descriptions = descriptions or {}
    rows = []
    for name, row in board.iterrows():
        means = measured_means(perf or {}, str(name))
        knobs = ", ".join(f"{k}={v}" for k, v in row["knobs"].items()) or "defaults"
        rows.append({
            "#": row["rank"],
            "experiment": name,
            "network": f"{row['arch']} ({knobs})",
            "input (px)": row["input_size"],
            "params": f"{row['params']:,}",
            "MACs": f"{row['macs']:,}",
            "val acc (%)": scored_cell(row, "val_acc"),
            "test acc (%)": scored_cell(row, "test_acc"),
            "best epoch": f"{row['best_epoch_mean']:.1f}",
            "spread (val): folds / seeds": spread_cell(row),
            **{column: measured(means[column], spec) for column, _, _, spec in MEASURED_COLUMNS},
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
            ours = data.results["experiments"][name]
            rows.append({"experiment": name, "published": published, "ours": ours,
                         "verdict": published.verdict(ours["test_acc_mean"])})
    return rows


def format_against_the_book(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """d2l's latest build and its range over 20 builds beside our mean ± std: the range, not one
    noisy build, is the yardstick."""
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
            "our test acc (%)": scored_cell(row["ours"], "test_acc"),
            "our val acc (%)": scored_cell(row["ours"], "val_acc"),
            "verdict": row["verdict"],
        }
        for row in rows
    ])


def against_the_book_html(rows: list[dict[str, Any]], study: Study) -> str:
    """The section's table and what each side measured, or, when nothing matches, what an
    experiment needs to have a d2l counterpart."""
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


# ------------------------------------------------------------------------- the chapter's answer


def family_ranking(data: ReportData) -> list[dict[str, Any]]:
    """One row per family (network name) of the study, its best experiment by cross-validated
    (validation) accuracy, ranked by it, each with d2l's result for the family (at d2l's resolution
    and recipe) and a published one at native resolution, where there are any."""
    book = reference.d2l_by_arch() if data.study.dataset == reference.d2l().dataset else {}
    native = reference.native()
    natives = native.families if data.study.dataset == native.dataset else {}
    board = leaderboard(data.results)
    rows: dict[str, dict[str, Any]] = {}
    for name, row in board.iterrows():  # best first: a family's first experiment is its best
        arch = str(row["arch"])
        if arch not in rows:
            rows[arch] = {"family": natives[arch].family if arch in natives else arch, "arch": arch,
                          "experiment": str(name), "ours": row, "d2l": book.get(arch),
                          "native": natives.get(arch)}
    ranked = list(rows.values())
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return ranked


def format_family_ranking(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The ranking as the report shows it: d2l's column is marked as a different setting, and the
    published result names the form its source trained in, beside ours."""
    def d2l_cell(result: reference.BookResult | None) -> str:
        if result is None:
            return MISSING
        return (f"{percent(result.test_acc_low)}\u2013{percent(result.test_acc_high)} (median "
                f"{percent(result.test_acc_median)}) at {result.input_size} px, d2l's recipe")

    def native_cell(result: reference.NativeResult | None) -> str:
        if result is None or result.test_acc is None:
            return "none published" if result is not None else MISSING
        theirs = f"; theirs: {forms.their_form_text(result.form)}" if result.form is not None else ""
        return f"{percent(result.test_acc)} %: {result.network} [{result.source}]{theirs}"

    return pd.DataFrame([
        {
            "#": row["rank"],
            "family": row["family"],
            "best experiment": row["experiment"],
            "input (px)": row["ours"]["input_size"],
            "params": f"{row['ours']['params']:,}",
            "val acc (%)": scored_cell(row["ours"], "val_acc"),
            "test acc (%)": scored_cell(row["ours"], "test_acc"),
            "d2l, 20 builds (different setting)": d2l_cell(row["d2l"]),
            "our form": forms.our_form_text(forms.our_form(row["ours"])),
            "published at native resolution": native_cell(row["native"]),
        }
        for row in rows
    ])


def ordering_text(rows: list[dict[str, Any]], theirs: str) -> str:
    """Where our ranking of the families agrees with a reference's (``theirs``: "d2l" by its median
    over 20 builds, "native" by the published result), pair by pair."""
    def value(row: dict[str, Any]) -> float | None:
        if theirs == "d2l":
            return row["d2l"].test_acc_median if row["d2l"] is not None else None
        return row["native"].test_acc if row["native"] is not None else None

    shared = [row for row in rows if value(row) is not None]  # in our order, best first
    name = "d2l's (median of 20 builds)" if theirs == "d2l" else "the published native-resolution results'"
    if len(shared) < 2:
        return f"Fewer than two families have {name} numbers: no ordering to compare."
    agree, disagree = 0, []
    for i, upper in enumerate(shared):
        for lower in shared[i + 1:]:
            if value(upper) > value(lower):
                agree += 1
            elif value(upper) < value(lower):
                disagree.append(f"{upper['family']} above {lower['family']} here, below in theirs")
            else:
                disagree.append(f"{upper['family']} and {lower['family']} tie in theirs")
    pairs = agree + len(disagree)
    ours = " > ".join(row["family"] for row in shared)
    theirs_order = " > ".join(row["family"] for row in sorted(shared, key=lambda r: -value(r)))
    text = (f"Against {name} ordering, over the {len(shared)} families both rank: ours "
            f"{ours}; theirs {theirs_order}. They agree on {agree} of {pairs} pairs")
    return text + (": " + "; ".join(disagree) + "." if disagree else ".")


def plain_test_acc(row: Any) -> tuple[float, bool]:
    """The mean test accuracy without test-time augmentation where the row has it (True), else
    the scored one: what a published result, scored without it, is set beside."""
    plain = row.get("test_acc_without_tta_mean")
    if plain is not None and not (isinstance(plain, float) and math.isnan(plain)):
        return float(plain), True
    return float(row["test_acc_mean"]), False


def form_notes(rows: list[dict[str, Any]], within: float = 1.5) -> list[str]:
    """For each family with a published native-resolution result, in ranking order: one sentence
    when our stem or resolution differs from the source's, and one when our plain test accuracy is
    more than ``within`` points below the published one, naming how the forms differ (nothing
    when it is within ``within`` points)."""
    notes = []
    for row in rows:
        native = row["native"]
        if native is None or native.test_acc is None or native.form is None:
            continue
        ours = forms.our_form(row["ours"])
        unlike = forms.unlike_sentence(row["family"], ours, native.form)
        notes += [unlike] if unlike else []
        accuracy, without_tta = plain_test_acc(row["ours"])
        gap = round(float(percent(native.test_acc)) - float(percent(accuracy)), 2)  # as shown
        if gap <= within:
            continue
        reasons = forms.differences(ours, native.form)
        listed = ", ".join(reasons[:-1]) + " and " + reasons[-1] if len(reasons) > 1 else "".join(reasons)
        why = (f"the forms differ in {listed}, the likely reasons" if reasons
               else "the forms agree wherever the source states them, so they do not explain it")
        notes.append(f"{row['family']}: {percent(accuracy)} % here{' without TTA' if without_tta else ''} "
                     f"is {gap:.2f} points below the published {percent(native.test_acc)} %; {why}.")
    return notes


def smallest_line(results: dict[str, Any], limit: int = 100_000) -> str | None:
    """The best experiment (by validation accuracy) under ``limit`` parameters beside the best
    published result we know under 100k (native.yaml), or None if the study has none."""
    board = leaderboard(results)
    small = board[board["params"] < limit]
    if small.empty:
        return None
    name, row = str(small.index[0]), small.iloc[0]
    known = reference.native().under_100k
    return (f"Under {limit:,} parameters: {name} ({row['params']:,} params), validation "
            f"{scored_cell(row, 'val_acc', ' %')}, test {scored_cell(row, 'test_acc', ' %')}; the best published "
            f"result we know: {percent(known.test_acc)} % ({known.network}) [{known.source}].")


def family_ranking_html(data: ReportData) -> str:
    """The families ranked, each reference's source, and where the orderings agree."""
    rows = family_ranking(data)
    if len(rows) < 2:
        return "<p>This study trains fewer than two families: nothing to rank.</p>"
    native = reference.native()
    cited = {row["native"].source: row["native"].source_text for row in rows
             if row["native"] is not None and row["native"].source}
    notes = []
    if any(row["d2l"] is not None for row in rows):
        notes.append(ordering_text(rows, "d2l"))
    if cited:
        notes.append(ordering_text(rows, "native"))
        notes += form_notes(rows)
    small = smallest_line(data.results) if data.study.dataset == native.dataset else None
    if small is not None:
        notes.append(small)
        cited[native.under_100k.source] = native.under_100k.source_text
    sources = "".join(f"<li>[{html.escape(str(key))}] {html.escape(str(text))}</li>"
                      for key, text in sorted(cited.items()))
    caption = (f"<p>Ours: each family's best experiment by validation accuracy, the mean ± standard "
               f"deviation over {runs_phrase(data.study)}. d2l's: one model per build trained on the "
               f"whole training set at d2l's resolution with <code>train_ch6</code>, a different setting "
               f"from ours unless the input size and recipe match. Each published result names its "
               f"source's form (stem, resolution, epochs, augmentation) beside ours; the notes above "
               f"say where they are not like with like. Source: "
               f"{html.escape(reference.d2l().source)}</p><ul>{sources}</ul>")
    return (table_html(format_family_ranking(rows)) + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
            + caption)


def runs_phrase(study: Study, experiment: str | None = None) -> str:
    """``3 fold models`` or ``12 models (2 repeats x 3 folds x 2 seeds)``: ``experiment``'s runs,
    or (None) every experiment's when all train the same seeds."""
    seed_sets = {e.seeds for e in study.experiments.values()} if experiment is None \
        else {study.experiment(experiment).seeds}
    if len(seed_sets) > 1:
        return f"each experiment's {study.repeats * study.folds} folds × its training seeds"
    seeds = seed_sets.pop()
    if study.repeats == 1 and len(seeds) == 1:
        return f"{study.folds} fold models"
    return (f"{len(study.runs_with_seeds(seeds))} models ({study.repeats} repeats × {study.folds} folds × "
            f"{len(seeds)} seeds)")


# ------------------------------------------------------------------------------------ ablations


def format_ablations(results: list[dict[str, Any]]) -> pd.DataFrame:
    """The numbers behind each verdict, one row per ablation and metric, per-fold differences
    included, so a reader can redo the test."""
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
            + (f"<br><span class='would-take'>What it would take: {html.escape(r['would_take'])}</span>"
               if r.get("would_take") else "")
            for r in rows
        )
        question = html.escape(rows[0]["question"] or f"{rows[0]['treatment']} vs {rows[0]['baseline']}")
        items.append(f"<li><b>{html.escape(name)}</b>: {question}{verdicts}</li>")
    return f"<ul class='verdicts'>{''.join(items)}</ul>" + table_html(format_ablations(results))


# ------------------------------------------------------------------------------------- findings


FINDING_METRIC = "validation (cross-validated)"  # the accuracy the findings state, as they rank


def finding_lines(results: dict[str, Any], ablations: list[dict[str, Any]], study: Study) -> list[str]:
    """The report's answers in plain text, before any table: the winner (best cross-validated
    accuracy), then each ablation's verdict on validation accuracy with its effect and interval.
    Only "better" and "worse" are findings; the rest says so."""
    board = leaderboard(results)
    best = str(board.index[0])
    row = board.loc[best]
    lines = [f"Winner: {best}, {percent(row['val_acc_mean'])} ± {percent(row['val_acc_std'])} % "
             f"validation accuracy over {runs_phrase(study, best)} (test {percent(row['test_acc_mean'])} %)"
             + (f", ahead of {board.index[1]} ({percent(board.iloc[1]['val_acc_mean'])} %)" if len(board) > 1 else "")]
    for r in ablations:
        if r["metric"] != FINDING_METRIC:
            continue
        c: PairedComparison = r["comparison"]
        code = r["verdict_code"]
        if code in ("better", "worse"):
            what = f"{r['treatment']} {code} than {r['baseline']}"
        else:
            what = f"{code} between {r['treatment']} and {r['baseline']} (not a finding)"
        interval = (f", {100 * c.confidence:g}% CI [{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
                    if math.isfinite(c.ci_low) and math.isfinite(c.ci_high) else "")
        seeds = len(study.experiment(r["treatment"]).seeds)  # both sides train the same (convbench.study)
        per_fold = f", each the mean of {seeds} seeds" if seeds > 1 else ""
        lines.append(f"{r['ablation']}: {what}, {c.mean:+.2f} points{interval}, Holm-adjusted "
                     f"{p_text(r['p_holm'])} ({c.n} folds{per_fold})")
    return lines


def findings_html(results: dict[str, Any], ablations: list[dict[str, Any]], study: Study) -> str:
    """:func:`finding_lines` as the report's opening list, the winner first."""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in finding_lines(results, ablations, study))
    return f"<ul class='findings'>{items}</ul>"


# ------------------------------------------------------------------------------- network tables


def layer_tables_html(study: Study, in_channels: int, num_classes: int) -> str:
    """One collapsed <details> per experiment: its layers, output shapes and parameters, the rows
    ``convbench summary`` prints (networks built on the meta device: no weights)."""
    from convbench.summary import layer_rows, summarize_network  # imports torch: only when drawn

    blocks = []
    for name, exp in study.experiments.items():
        result = summarize_network(exp.arch, in_channels=in_channels, num_classes=num_classes,
                                   input_size=exp.input_size, knobs=exp.knobs)
        frame = pd.DataFrame(layer_rows(result, times=" × "))
        knobs = ", ".join(f"{k}={v}" for k, v in exp.knobs.items()) or "defaults"
        head = (f"<b>{html.escape(name)}</b>: {html.escape(exp.arch)} ({html.escape(knobs)}), "
                f"input {in_channels} × {exp.input_size} × {exp.input_size}, "
                f"{result['params']:,} params, {result['macs']:,} MACs, {len(result['layers'])} layers")
        blocks.append(f"<details><summary>{head}</summary>{table_html(frame)}</details>")
    return "\n".join(blocks)
