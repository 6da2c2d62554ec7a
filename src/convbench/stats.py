"""How sure a study is: paired comparisons of its ablations, fold by fold, and what it would take.

The corrected resampled t-test (Nadeau & Bengio 2003), Holm's adjustment over the study's
ablations, the verdicts that claim no more than the interval supports, and, where the data cannot
tell, the smallest difference the study could detect and the runs it would need to detect the one
it saw. The numbers come from the experiments' per-run accuracies; nothing here reads a file.
``convbench aggregate`` writes the results to ``results/ablations.json``; the report reads that file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from convbench.study import Study


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return float(array.mean()), std


def run_key(metrics: dict[str, Any]) -> tuple[int, int, int]:
    """(repeat, fold, seed) of a run's metrics (results from before repeats are repeat 0)."""
    return (int(metrics.get("repeat", 0)), int(metrics["fold"]), int(metrics["seed"]))


def spread(runs: list[dict[str, Any]], values: list[float]) -> dict[str, Any]:
    """The two sources of spread of one metric over an experiment's runs.

    ``fold_std``: over the (repeat, fold) cells, each first averaged over its seeds: how much the
    score moves with the data a model trains and is validated on. ``seed_std``: the standard
    deviation over seeds within a cell, pooled over the cells (the root of the mean within-cell
    variance): how much it moves with the initialization alone; None with one seed.
    """
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    for metrics, value in zip(runs, values):
        repeat, fold, _ = run_key(metrics)
        cells[repeat, fold].append(value)
    _, fold_std = mean_std([float(np.mean(v)) for v in cells.values()])
    within = [float(np.var(v, ddof=1)) for v in cells.values() if len(v) > 1]
    return {"fold_std": fold_std, "seed_std": float(np.sqrt(np.mean(within))) if within else None}

CONFIDENCE = 0.95
POWER = 0.80  # the chance of detecting a real difference of the planned size: the usual 80%


class ComparisonError(ValueError):
    """Two experiments that cannot be compared fold by fold (they were not run on the same folds)."""


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
    dependence between the tests. Written here because scipy (``false_discovery_control``) has only
    the Benjamini-Hochberg/Yekutieli adjustments, and statsmodels' ``multipletests`` would be a
    dependency for these eight lines.
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


def verdict_code(comparison: PairedComparison, p_adjusted: float | None = None) -> str:
    """The verdict in one word, as :func:`verdict` words it: ``better``, ``worse``, ``no clear
    difference``, ``no difference`` or ``cannot tell`` (the value ``dvc metrics diff`` shows)."""
    c = comparison
    if c.n < 2:
        return "cannot tell"
    if c.std == 0:
        return "no difference" if c.mean == 0 else ("better" if c.mean > 0 else "worse")
    if c.ci_low <= 0 <= c.ci_high:
        return "no clear difference"
    if p_adjusted is not None and not math.isnan(p_adjusted) and p_adjusted >= 1 - c.confidence:
        return "no clear difference"
    return "better" if c.mean > 0 else "worse"


def detectable_difference(
    std: float, resamples: int, test_train_ratio: float, *, confidence: float = CONFIDENCE,
    power: float = POWER,
) -> float:
    """The smallest true mean difference (in the units of ``std``) that the corrected test at level
    ``1 - confidence`` detects with probability ``power``, from ``resamples`` paired differences
    whose standard deviation is ``std``.

    The usual power approximation of a t-test, with the corrected resampled test's standard error:
    ``(t_{1-alpha/2} + t_{power}) * sqrt(1/J + n_test/n_train) * s``, both quantiles of Student's
    t with J - 1 degrees of freedom. The correction term does not shrink with J: repeats of K-fold
    cross-validation never push the detectable difference below ``(z_{1-alpha/2} + z_{power}) *
    s / sqrt(K - 1)``; only more folds or less noise do. NaN for fewer than 2 resamples.
    """
    from scipy import stats

    if resamples < 2 or not math.isfinite(std):
        return math.nan
    df = resamples - 1
    quantiles = float(stats.t.ppf(0.5 + confidence / 2, df) + stats.t.ppf(power, df))
    return quantiles * math.sqrt(1 / resamples + test_train_ratio) * std


def repeats_needed(
    difference: float, std: float, folds: int, *, confidence: float = CONFIDENCE, power: float = POWER,
    max_repeats: int = 100,
) -> int | None:
    """How many repeats R of K-fold cross-validation (J = R x K resamples) make ``difference``
    detectable (:func:`detectable_difference`) at the spread ``std`` of the per-fold differences;
    None when no number up to ``max_repeats`` does (the corrected test's floor is above it)."""
    if folds < 2 or not math.isfinite(std) or not math.isfinite(difference) or difference == 0:
        return None
    ratio = 1 / (folds - 1)
    for repeats in range(1, max_repeats + 1):
        if detectable_difference(std, repeats * folds, ratio, confidence=confidence, power=power) <= abs(difference):
            return repeats
    return None


def what_it_would_take(comparison: PairedComparison, folds: int, repeats: int) -> str:
    """For a comparison that cannot tell: the smallest difference this study could detect, and the
    repeats of K-fold (R x K runs per experiment and seed) it would need to detect the one it saw."""
    c = comparison
    if c.n < 2 or c.std == 0:
        return ""
    smallest = detectable_difference(c.std, c.n, c.test_train_ratio, confidence=c.confidence)
    level = f"{100 * (1 - c.confidence):g}% level, {100 * POWER:g}% power"
    line = (f"at this spread (sd {c.std:.2f} points between folds) and {c.n} folds, this study "
            f"detects a difference of {smallest:.2f} points or more ({level})")
    needed = repeats_needed(c.mean, c.std, folds, confidence=c.confidence)
    if c.mean == 0:
        return line + "; the observed mean difference is zero"
    if needed is None:
        return (line + f"; no number of repeats of {folds}-fold cross-validation would detect the "
                f"observed {c.mean:+.2f} points: it needs more folds or less noise")
    if needed <= repeats:
        return line + f"; the observed {c.mean:+.2f} points is not smaller than that, but the test did not reach significance"
    return (line + f"; to detect the observed {c.mean:+.2f} points, if it is real, it would need "
            f"{needed} repeats of {folds}-fold ({needed * folds} runs per experiment)")


ABLATION_METRICS = (("val_acc", "validation (cross-validated)"), ("test_acc", "test"))


def resample_means(row: dict[str, Any], metric: str) -> dict[tuple[int, int], float]:
    """``metric`` per resample (repeat, fold), averaged over the seeds trained on it."""
    cells: dict[tuple[int, int], list[float]] = {}
    for run in row["per_run"]:
        cells.setdefault((run["repeat"], run["fold"]), []).append(run[metric])
    return {cell: float(np.mean(values)) for cell, values in sorted(cells.items())}


def ablation_results(study: Study, study_results: dict[str, Any]) -> list[dict[str, Any]]:
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
        base = study_results["experiments"][ablation.baseline]
        treat = study_results["experiments"][ablation.treatment]
        for key, metric in ABLATION_METRICS:
            base_cells, treat_cells = resample_means(base, key), resample_means(treat, key)
            if base_cells.keys() != treat_cells.keys():
                raise ComparisonError(f"ablation {ablation.name!r}: {ablation.baseline} and "
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
            r["verdict_code"] = verdict_code(r["comparison"], adjusted)
            unclear = r["verdict_code"] in ("no clear difference", "cannot tell")
            r["would_take"] = what_it_would_take(r["comparison"], study.folds, study.repeats) if unclear else ""
    return results


def _number(value: float) -> float | None:
    """A float for JSON: NaN and infinities (undefined) become null."""
    return float(value) if math.isfinite(value) else None


def ablations_document(study: Study, results: list[dict[str, Any]]) -> dict[str, Any]:
    """``results/ablations.json``: per ablation and accuracy, the per-fold differences, mean,
    corrected interval, p, Holm-adjusted p, the verdict, and what it would take."""
    ablations: dict[str, Any] = {}
    for r in results:
        c: PairedComparison = r["comparison"]
        entry = ablations.setdefault(r["ablation"], {"baseline": r["baseline"], "treatment": r["treatment"]})
        key = next(key for key, metric in ABLATION_METRICS if metric == r["metric"])
        smallest = detectable_difference(c.std, c.n, c.test_train_ratio, confidence=c.confidence)
        entry[key] = {
            "verdict": r["verdict_code"],
            "difference": c.mean,
            "ci_low": _number(c.ci_low),
            "ci_high": _number(c.ci_high),
            "p": _number(c.p),
            "p_holm": _number(r["p_holm"]),
            "detectable_difference": _number(smallest),
            "repeats_needed": repeats_needed(c.mean, c.std, study.folds, confidence=c.confidence),
            "differences": list(c.differences),
            "std": c.std,
            "t": _number(c.t),
        }
    return {"confidence": CONFIDENCE, "power": POWER, "folds": study.folds, "repeats": study.repeats,
            "ablations": ablations}


def results_from_document(study: Study, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows :func:`ablation_results` returns, read back from ``results/ablations.json``: the
    numbers as aggregate computed them, the sentences worded from them (and the study's questions)."""
    def undefined(value: float | None, default: float) -> float:
        return default if value is None else float(value)

    results = []
    for name, entry in document["ablations"].items():
        for key, metric in ABLATION_METRICS:
            numbers = entry[key]
            comparison = PairedComparison(
                tuple(numbers["differences"]), numbers["difference"], numbers["std"],
                undefined(numbers["ci_low"], -math.inf), undefined(numbers["ci_high"], math.inf),
                undefined(numbers["t"], math.nan), undefined(numbers["p"], math.nan),
                1 / (document["folds"] - 1), document["confidence"])
            p_holm = undefined(numbers["p_holm"], math.nan)
            unclear = numbers["verdict"] in ("no clear difference", "cannot tell")
            results.append({
                "ablation": name, "question": study.ablations[name].question,
                "baseline": entry["baseline"], "treatment": entry["treatment"], "metric": metric,
                "comparison": comparison, "p_holm": p_holm, "verdict_code": numbers["verdict"],
                "verdict": verdict(comparison, entry["baseline"], entry["treatment"], p_holm),
                "would_take": (what_it_would_take(comparison, document["folds"], document["repeats"])
                               if unclear else ""),
            })
    return results
