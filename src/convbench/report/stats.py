"""How sure the report is: paired comparisons of the study's ablations, fold by fold.

The corrected resampled t-test (Nadeau & Bengio 2003), Holm's adjustment over the study's
ablations, and the verdicts that claim no more than the interval supports. The numbers come from
study.json's per-run accuracies; nothing here reads a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from convbench.report.load import ReportError
from convbench.study import Study

CONFIDENCE = 0.95


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
