"""Statistics over seeds, from :mod:`scipy.stats`. Values keep their unit (accuracies are fractions in [0, 1]: a
difference of 0.012 is 1.2 pp); stds use ddof=1; CIs are two-sided Student-t, NaN for n < 2, clipped to ``bounds``
for display. A paired difference is ``a - b`` per seed (sequential − joint: positive favours sequential), its CI
never clipped."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import astuple, field, make_dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
MIN_PAIRED_SEEDS, ALPHA = 3, 0.05  # fewer paired seeds never decide; the two-sided level of every verdict
Summary = make_dataclass("Summary", ["n", "mean", "std", "ci_low", "ci_high"], frozen=True)
#: ``a - b`` over shared seeds: paired-t and exact Wilcoxon p-values (NaN, with a note, where the latter cannot reach
#: p < ALPHA), and the verdict of this one test (a family of tests is corrected with :func:`holm`)
PairedResult = make_dataclass("PairedResult", ["n", "seeds", "mean_diff", "ci_low", "ci_high", "t_pvalue",
                                               "wilcoxon_pvalue", "verdict", ("wilcoxon_note", str, field(default=""))])


def t_interval_groups(values: pd.DataFrame, by: list[str], column: str, confidence: float = 0.95,
                      bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Per group of ``by``: ``n``, ``mean``, ``std`` and the t-interval ``ci_low``, ``ci_high`` of ``column``."""
    # numpy's mean, not groupby's compensated sum: a last-digit difference would decide exact ties (Pareto front)
    out = values.dropna(subset=[column]).groupby(by)[column].agg(
        n="count", mean=lambda v: v.to_numpy().mean(), std="std").reset_index()
    half = sps.t.interval(confidence, out["n"] - 1)[1] * out["std"] / np.sqrt(out["n"])
    return out.assign(ci_low=(out["mean"] - half).clip(*bounds or ()), ci_high=(out["mean"] + half).clip(*bounds or ()))


def t_interval(values: Iterable[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> Summary:
    """:func:`t_interval_groups` of ``values`` as one group (no values: n = 0, the rest NaN)."""
    frame = pd.DataFrame({"value": list(values)}, dtype=float).assign(all=0)
    rows = t_interval_groups(frame, ["all"], "value", confidence, bounds).drop(columns="all").to_dict("records")
    return Summary(**rows[0]) if rows else Summary(0, *[math.nan] * 4)


def t_errorbar(bounds: tuple[float, float] | None = None, confidence: float = 0.95):
    """seaborn's ``errorbar=``: values over seeds -> their t-interval ``(low, high)``."""
    return lambda values: astuple(t_interval(values, confidence, bounds))[3:]


def verdict(ci_low: float, ci_high: float, n: int, min_n: int = MIN_PAIRED_SEEDS, pvalue: float | None = None,
            alpha: float = ALPHA) -> str:
    """"a beats b" from the CI of ``a - b``: supported (not supported) when n >= min_n, the whole CI is above (below)
    0 and, given one, the (Holm-adjusted) ``pvalue`` < alpha; else inconclusive."""
    if n < min_n or not math.isfinite(ci_low + ci_high) or (pvalue is not None and not pvalue < alpha):
        return INCONCLUSIVE
    return SUPPORTED if ci_low > 0 else NOT_SUPPORTED if ci_high < 0 else INCONCLUSIVE


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, aligned with ``pvalues``: the m defined ones sorted ascending, ``p_adj(i) =
    max_{j <= i} min(1, (m - j + 1) p(j))``; a NaN p-value is no test (it stays NaN, not counted in m)."""
    p = np.asarray(list(pvalues), dtype=float)
    out, defined = np.full(p.shape, math.nan), np.flatnonzero(np.isfinite(p))
    order = defined[np.argsort(p[defined], kind="stable")]
    out[order] = np.minimum(1.0, np.maximum.accumulate((order.size - np.arange(order.size)) * p[order]))
    return out


def wilcoxon_min_pairs(alpha: float = ALPHA) -> int:
    """The fewest non-zero differences whose exact two-sided signed-rank test can reach p < alpha (min p = 2 / 2^n)."""
    return math.floor(1 - math.log2(alpha)) + 1


def paired_by_seed(a: Mapping, b: Mapping, confidence: float = 0.95) -> PairedResult:
    """Pair ``{seed: value}`` mappings on their shared seeds (pairs with a NaN dropped): ``a[seed] - b[seed]``."""
    seeds = tuple(s for s in sorted(set(a) & set(b)) if np.isfinite([a[s], b[s]]).all())
    x, y = (np.array([m[s] for s in seeds], dtype=float) for m in (a, b))
    d, n, ranked = x - y, len(seeds), int(np.sum(np.abs(x - y) > 1e-15))
    mean, ci, p, wilcoxon_p, note = float(d.mean()) if n else math.nan, (math.nan, math.nan), math.nan, math.nan, ""
    with warnings.catch_warnings(action="ignore"):  # scipy's notes on ties and zero differences
        if n >= 2 and np.allclose(d, d[0], rtol=0.0, atol=1e-15):  # no variance: t = 0/0 (p = 1) or ±inf (p = 0)
            ci, p = (mean, mean), float(ranked == 0)
        elif n >= 2:
            test = sps.ttest_rel(x, y)
            ci, p = test.confidence_interval(confidence), float(test.pvalue)
        if ranked >= wilcoxon_min_pairs():
            wilcoxon_p = float(sps.wilcoxon(d).pvalue)
        elif n:
            what = f"n = {n}" if ranked == n else f"{ranked} of {n} differences non-zero:"
            note = f"{what} cannot reach p < {ALPHA:g}" if ranked else "every difference is 0"
    return PairedResult(n, seeds, mean, float(ci[0]), float(ci[1]), p, wilcoxon_p, verdict(*ci, n), note)
