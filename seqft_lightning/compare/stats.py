"""Pure statistics over seeds (no I/O, no pandas state).

Conventions
-----------
- Inputs are metric values in their native unit (accuracies are fractions in [0, 1]);
  outputs keep that unit (a difference of 0.012 = 1.2 percentage points).
- Standard deviations use ``ddof=1`` (sample std over seeds).
- Confidence intervals are two-sided Student-t intervals:
  ``mean ± t_{(1+c)/2, n-1} * std / sqrt(n)``; undefined (NaN) for n < 2.
- **Clipping, the one rule for tables and plots alike:** the t-interval of a metric with a bounded
  range (accuracies, precision, recall, F1: [0, 1], shown as [0, 100] %) is clipped to that range
  for display (:func:`t_interval` with ``bounds``, :func:`t_errorbar` for seaborn's ``errorbar=``).
  The interval of a paired *difference* is never clipped.
- Paired differences are ``a - b`` per seed (for the study: sequential − joint, so a
  positive difference favours sequential).
- **Several tests at once:** :func:`holm` adjusts the paired-t p-values of a family of tests (Holm's step-down
  correction, which controls the family-wise error rate); a verdict that cites a p-value
  (:func:`verdict` with ``pvalue``) uses the adjusted one.
- **Wilcoxon only where it can decide:** the two-sided exact signed-rank test over n non-zero differences
  cannot go below p = 2 / 2^n (every sign alike), so below :func:`wilcoxon_min_pairs` (6 at α = 0.05) its
  p-value is not reported: :attr:`PairedResult.wilcoxon_pvalue` is NaN and
  :attr:`PairedResult.wilcoxon_note` says why (``"n = 5 cannot reach p < 0.05"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as sps

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
#: Fewer paired seeds than this can never support or reject a hypothesis.
MIN_PAIRED_SEEDS = 3
#: Significance level of every verdict (two-sided).
ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean over seeds with sample std (ddof=1) and t-based confidence interval."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of ``a`` vs ``b`` over shared seeds; ``diff = a - b``.

    ``t_pvalue`` (paired t-test) and ``wilcoxon_pvalue`` (exact signed-rank) are two-sided; ``wilcoxon_pvalue`` is
    NaN where the test cannot reach p < :data:`ALPHA` (fewer than :func:`wilcoxon_min_pairs` non-zero
    differences), and ``wilcoxon_note`` then says so (else ``""``). ``verdict`` is that of this one test
    (:func:`verdict` from the CI alone); a family of tests corrects it with :func:`holm`.
    """

    n: int
    seeds: tuple
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    t_pvalue: float
    wilcoxon_pvalue: float
    verdict: str
    wilcoxon_note: str = ""


def t_interval(values: Iterable[float], confidence: float = 0.95,
               bounds: tuple[float, float] | None = None) -> Summary:
    """Mean, std (ddof=1) and Student-t CI of ``values`` (NaNs are dropped).

    n == 0 gives all-NaN; n == 1 gives the value as mean with NaN std and CI. ``bounds``
    (e.g. ``(0, 1)`` for an accuracy) clips the CI, never the mean.
    """
    arr = np.asarray([float(v) for v in values], dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    mean = float(arr.mean()) if n else math.nan
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan)
    std = float(arr.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = float(np.clip(low, *bounds)), float(np.clip(high, *bounds))
    return Summary(n, mean, std, low, high)


def t_errorbar(bounds: tuple[float, float] | None = None,
               confidence: float = 0.95) -> Callable[[Iterable[float]], tuple[float, float]]:
    """seaborn ``errorbar=`` callable: values over seeds -> the (clipped) t-interval."""
    def interval(values: Iterable[float]) -> tuple[float, float]:
        s = t_interval(values, confidence, bounds)
        return s.ci_low, s.ci_high
    return interval


def t_interval_groups(values: "pd.DataFrame", by: list[str], column: str, confidence: float = 0.95,
                      bounds: tuple[float, float] | None = None) -> "pd.DataFrame":
    """:func:`t_interval` of ``column`` for every group of ``by`` at once (NaNs dropped): a frame with
    the ``by`` columns and ``n``, ``mean``, ``std``, ``ci_low``, ``ci_high``."""
    g = values.dropna(subset=[column]).groupby(by, sort=True)[column]
    out = g.agg(n="count", mean="mean", std="std").reset_index()
    n = out["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n >= 2, sps.t.ppf(0.5 + confidence / 2.0, np.maximum(n - 1, 1)), np.nan)
        half = q * out["std"].to_numpy(dtype=float) / np.sqrt(n)
    low, high = out["mean"].to_numpy() - half, out["mean"].to_numpy() + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    defined = n >= 2
    return out.assign(std=np.where(defined, out["std"], np.nan), ci_low=np.where(defined, low, np.nan),
                      ci_high=np.where(defined, high, np.nan))


def verdict(ci_low: float, ci_high: float, n: int, min_n: int = MIN_PAIRED_SEEDS, pvalue: float | None = None,
            alpha: float = ALPHA) -> str:
    """Verdict on "a beats b" from the CI of the paired difference ``a - b``: ``"supported"`` when
    n >= min_n and the whole CI is > 0, ``"not supported"`` when n >= min_n and the whole CI is < 0
    (b is better), else ``"inconclusive"`` (too few pairs, an undefined CI, or a CI that contains 0).
    With ``pvalue`` (e.g. Holm-adjusted, :func:`holm`), a verdict other than inconclusive also needs
    ``pvalue < alpha`` (an undefined p-value is inconclusive)."""
    if n < min_n or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return INCONCLUSIVE
    if pvalue is not None and not pvalue < alpha:
        return INCONCLUSIVE
    return SUPPORTED if ci_low > 0 else NOT_SUPPORTED if ci_high < 0 else INCONCLUSIVE


def _paired_t_pvalue(a: np.ndarray, b: np.ndarray, diffs: np.ndarray) -> float:
    if diffs.size < 2:
        return math.nan
    if np.allclose(diffs, diffs[0], rtol=0.0, atol=1e-15):
        # Zero variance: t is 0/0 (no evidence) or ±inf (every seed moves the same way).
        return 1.0 if abs(diffs[0]) <= 1e-15 else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sps.ttest_rel(a, b).pvalue)


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, aligned with ``pvalues``: with the m defined p-values sorted
    ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) * p(j))`` (i, j from 1). Rejecting where ``p_adj <
    alpha`` keeps the family-wise error rate at alpha. An undefined (NaN) p-value is no test: it stays NaN and
    does not count in m."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, math.nan)
    defined = np.flatnonzero(np.isfinite(p))
    order = defined[np.argsort(p[defined], kind="stable")]
    m = order.size
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def wilcoxon_min_pairs(alpha: float = ALPHA) -> int:
    """The fewest non-zero paired differences with which the two-sided exact Wilcoxon signed-rank test can
    reach p < ``alpha``: its smallest p-value over n differences is 2 / 2^n (6 at alpha = 0.05: 0.03125; n = 5
    gives 0.0625)."""
    return next(n for n in count(1) if 2.0 ** (1 - n) < alpha)


def _wilcoxon(diffs: np.ndarray, alpha: float = ALPHA) -> tuple[float, str]:
    """Two-sided signed-rank p-value of ``diffs`` (zeros dropped, as scipy's default) and ``""``; NaN and the
    reason when fewer than :func:`wilcoxon_min_pairs` differences are non-zero (or none is given)."""
    if diffs.size == 0:
        return math.nan, ""
    ranked = int(np.sum(np.abs(diffs) > 1e-15))
    if ranked < wilcoxon_min_pairs(alpha):
        if ranked == 0:
            return math.nan, "every difference is 0"
        what = f"n = {ranked}" if ranked == diffs.size else f"{ranked} of {diffs.size} differences non-zero:"
        return math.nan, f"{what} cannot reach p < {alpha:g}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(sps.wilcoxon(diffs).pvalue), ""
    except ValueError:
        return math.nan, ""


def paired_arrays(a: Iterable[float], b: Iterable[float], confidence: float = 0.95,
                  seeds: tuple = ()) -> PairedResult:
    """Paired statistics of equal-length arrays (pairs with a NaN are dropped)."""
    a_arr, b_arr = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired arrays differ in length: {a_arr.size} vs {b_arr.size}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    diffs = a_arr - b_arr
    s = t_interval(diffs, confidence)
    wilcoxon_p, wilcoxon_note = _wilcoxon(diffs)
    return PairedResult(s.n, tuple(x for x, k in zip(seeds, keep) if k), s.mean, s.std, s.ci_low, s.ci_high,
                        _paired_t_pvalue(a_arr, b_arr, diffs), wilcoxon_p, verdict(s.ci_low, s.ci_high, s.n),
                        wilcoxon_note)


def paired_by_seed(a: Mapping, b: Mapping, confidence: float = 0.95) -> PairedResult:
    """Pair ``{seed: value}`` mappings on their shared seeds; ``diff = a[seed] - b[seed]``."""
    shared = sorted(set(a) & set(b), key=lambda s: (str(type(s)), s))
    return paired_arrays([a[s] for s in shared], [b[s] for s in shared], confidence, seeds=tuple(shared))
