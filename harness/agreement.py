"""Agreement among reviewers and between reviewers and the automatic metrics.

Cohen's kappa (scikit-learn; quadratic weights for the ordinal 1–5 scales) for two reviewers,
Krippendorff's alpha (the `krippendorff` package; ordinal or nominal) for any number, win rates with
bootstrap intervals over examples, and Spearman's rank correlation (scipy) between a metric and the
human ratings of the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.ratings import DIMENSIONS, Preference, Score, item_wins, paired_with_ratings
from harness.stats import mean_draws, percentile_interval


@dataclass(frozen=True)
class Agreement:
    what: str          # a rating dimension, or "preference"
    reviewers: int
    items: int         # items rated by at least two reviewers
    statistic: str     # "Cohen's kappa (quadratic)", "Krippendorff's alpha (ordinal)", …
    value: float


def _matrix(rows: list[tuple[str, str, float]]) -> tuple[list[str], np.ndarray]:
    """(reviewers, reviewers × items matrix with NaN where a reviewer did not rate the item)."""
    reviewers = sorted({r for r, _, _ in rows})
    items = sorted({i for _, i, _ in rows})
    out = np.full((len(reviewers), len(items)), np.nan)
    for r, i, v in rows:
        out[reviewers.index(r), items.index(i)] = v
    return reviewers, out


def _agreement(what: str, rows: list[tuple[str, str, float]], ordinal: bool, alpha: bool = False) -> Agreement | None:
    reviewers, m = _matrix(rows)
    shared = (~np.isnan(m)).sum(axis=0) >= 2
    m = m[:, shared]
    # Only reviewers who rated an item someone else rated too take part.
    active = ~np.isnan(m).all(axis=1)
    reviewers, m = [r for r, a in zip(reviewers, active, strict=True) if a], m[active]
    if len(reviewers) < 2 or m.shape[1] < 2:
        return None
    if len(reviewers) == 2 and not alpha:
        from sklearn.metrics import cohen_kappa_score

        both = ~np.isnan(m).any(axis=0)
        a, b = m[0, both].astype(int), m[1, both].astype(int)
        if len(set(a) | set(b)) < 2:
            return Agreement(what, 2, int(both.sum()), "Cohen's kappa", float("nan"))
        kappa = cohen_kappa_score(a, b, weights="quadratic" if ordinal else None)
        return Agreement(what, 2, int(both.sum()), "Cohen's kappa" + (" (quadratic)" if ordinal else ""),
                         float(kappa))
    import krippendorff

    level = "ordinal" if ordinal else "nominal"
    # Every rating the same: agreement is undefined (the package refuses a one-value domain), not perfect.
    value = (krippendorff.alpha(reliability_data=m, level_of_measurement=level)
             if len(np.unique(m[~np.isnan(m)])) > 1 else float("nan"))
    return Agreement(what, len(reviewers), int(shared.sum()), f"Krippendorff's alpha ({level})", float(value))


def score_agreement(scores: list[Score], alpha: bool = False) -> list[Agreement]:
    """Per rating dimension, over (example, candidate) items: Cohen's kappa for two reviewers, else (or with
    `alpha`) Krippendorff's alpha, which takes any design of overlapping reviewers."""
    out = []
    for dim in DIMENSIONS:
        rows = [(s.reviewer, f"{s.task}/{s.example_id}/{s.candidate}", float(getattr(s, dim))) for s in scores]
        found = _agreement(dim, rows, ordinal=True, alpha=alpha)
        if found:
            out.append(found)
    return out


def preference_agreement(preferences: list[Preference], alpha: bool = False) -> Agreement | None:
    codes = {"A": 0.0, "B": 1.0, "tie": 2.0}
    rows = [(p.reviewer, f"{p.task}/{p.example_id}/{p.candidate_a}/{p.candidate_b}", codes[p.preferred])
            for p in preferences]
    return _agreement("preference", rows, ordinal=False, alpha=alpha)


@dataclass(frozen=True)
class WinRate:
    candidate: str
    items: int
    value: float
    ci_low: float
    ci_high: float


def win_rates(preferences: list[Preference], confidence: float = 0.95, resamples: int = 2000,
              seed: int = 0) -> list[WinRate]:
    """Each candidate's share of blind comparisons won (ties half), with a bootstrap interval over examples."""
    names = sorted({p.candidate_a for p in preferences} | {p.candidate_b for p in preferences})
    out = []
    for name in names:
        values = item_wins(preferences, name)
        low, high = percentile_interval(mean_draws(values, resamples, seed), confidence)
        out.append(WinRate(name, len(values), float(values.mean()), low, high))
    return out


@dataclass(frozen=True)
class MetricCorrelation:
    metric: str
    items: int
    spearman: float
    p_value: float


def metric_correlations(scores: list[Score], automatic: dict[str, dict[tuple[str, str, str], float]]
                        ) -> list[MetricCorrelation]:
    """Spearman's rho between each automatic metric and the mean human rating of the same outputs.
    `automatic` maps metric -> (task, example_id, candidate) -> value."""
    from scipy.stats import spearmanr

    human: dict[tuple[str, str, str], list[float]] = {}
    for s in scores:
        human.setdefault((s.task, s.example_id, s.candidate), []).append(s.mean)
    out = []
    for metric, values in automatic.items():
        keys = [k for k in human if k in values and not np.isnan(values[k])]
        if len(keys) < 3:
            continue
        x = [values[k] for k in keys]
        y = [float(np.mean(human[k])) for k in keys]
        if len(set(x)) < 2 or len(set(y)) < 2:
            continue
        rho, p = spearmanr(x, y)
        out.append(MetricCorrelation(metric, len(keys), float(rho), float(p)))
    return out


@dataclass(frozen=True)
class JudgeAgreement:
    """How far an LLM judge agrees with the reviewers on the same answers."""

    judge: str
    items: int
    spearman: float  # rank correlation of the judge's score and the reviewers' mean rating
    kappa: float  # Cohen's kappa: quadratic-weighted on the 1–5 scale (rounded mean rating); plain for pass/fail
    agreement: float  # the manifest's `<judge>_agreement`: within one point (pass/fail: the same side of 3)


def judge_agreement(judge: str, scale: str, scores: list[Score], judged: dict[tuple[str, str, str], float]
                    ) -> JudgeAgreement | None:
    """`judged` maps (task, example_id, candidate) to the judge's score; None below three shared items. The pairs
    are the gate's (`paired_with_ratings`), so the page shows the figure the manifest decides on."""
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    from harness.metrics.rubric_judge import agrees

    x, y = paired_with_ratings(scores, judged)
    if len(x) < 3:
        return None
    rho = float(spearmanr(x, y)[0]) if len(set(x)) > 1 and len(set(y)) > 1 else float("nan")
    if scale == "pass_fail":
        kappa = cohen_kappa_score(x >= 0.5, y >= 3)
    else:
        kappa = cohen_kappa_score(np.rint(x).astype(int), np.rint(y).astype(int), weights="quadratic",
                                  labels=[1, 2, 3, 4, 5])
    share = float(np.mean([agrees(a, b, scale) for a, b in zip(x, y, strict=True)]))
    return JudgeAgreement(judge, len(x), rho, float(kappa), share)
