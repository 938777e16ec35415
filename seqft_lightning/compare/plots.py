"""PNG figures of a sweep (matplotlib Agg via ``Figure`` objects, no pyplot state; seaborn
heatmaps). Accuracies are drawn in percent; error bands/bars are 95% Student-t confidence
intervals over seeds (none when a point has a single seed).

Each ``plot_*`` function draws already-tidy data and writes one PNG atomically;
:func:`make_all_plots` prepares the data from an :class:`~.aggregate.Analysis`, and a
failing or empty plot is reported as skipped instead of aborting the report.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.patches  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from seqft_lightning.compare import aggregate as agg  # noqa: E402
from seqft_lightning.compare.fileio import write_bytes_atomic  # noqa: E402
from seqft_lightning.compare.stats import t_interval  # noqa: E402
from seqft_lightning.compare.variants import slugify  # noqa: E402

log = logging.getLogger(__name__)

BASELINE_COLOR = (0.45, 0.45, 0.45)
DPI = 110


@dataclass
class PlotResult:
    """One figure: ``path`` is None when it was skipped (``note`` says why)."""

    key: str
    title: str
    caption: str
    path: Path | None = None
    note: str = ""


# --------------------------------------------------------------------------- helpers

def variant_colors(variants: Sequence[str], baseline_label: str | None = None) -> dict[str, tuple]:
    """A stable colour per variant (grey for the pretrained baseline)."""
    others = [v for v in variants if v != baseline_label]
    palette = sns.color_palette("tab10" if len(others) <= 10 else "husl", max(len(others), 1))
    colors = {v: tuple(palette[i]) for i, v in enumerate(others)}
    if baseline_label:
        colors[baseline_label] = BASELINE_COLOR
    return colors


def _save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return write_bytes_atomic(path, buf.getvalue())


def _mean_ci(df: pd.DataFrame, x: str, y: str, bounds: tuple[float, float] | None = (0.0, 1.0)) -> pd.DataFrame:
    """Per ``x``: mean of ``y`` over rows (seeds) with its 95% t-CI (NaN for n < 2).

    The band is clipped to ``bounds`` for display (an accuracy CI beyond [0, 1] means little;
    the tables keep the raw interval).
    """
    rows = []
    for xv, g in df.groupby(x, sort=True):
        s = t_interval(g[y])
        lo, hi = s.ci_low, s.ci_high
        if bounds is not None:
            lo, hi = float(np.clip(lo, *bounds)), float(np.clip(hi, *bounds))
        rows.append({x: xv, "mean": s.mean, "lo": lo, "hi": hi, "n": s.n})
    return pd.DataFrame(rows, columns=[x, "mean", "lo", "hi", "n"])


def _legend_below(fig: Figure, handles: list, labels: list[str]) -> None:
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(3, len(labels)), frameon=False, fontsize=8)


# --------------------------------------------------------------------------- figures

def plot_stage_trend(trend: pd.DataFrame, panels: Sequence[tuple[str, str]],
                     colors: Mapping[str, tuple], path: Path) -> Path:
    """Accuracy after each stage (0 = pretrained) per variant, one panel per evaluated subset.

    ``trend``: long ``variant, seed, stage, evaluated, acc`` (fractions);
    ``panels``: ``(evaluated, panel title)`` pairs.
    """
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles: dict[str, object] = {}
    variants = [v for v in colors if v in set(trend["variant"])]
    for ax, (evaluated, title) in zip(axes, panels):
        sub = trend[trend["evaluated"] == evaluated]
        for variant in variants:
            stats = _mean_ci(sub[sub["variant"] == variant], "stage", "acc")
            if stats.empty:
                continue
            (line,) = ax.plot(stats["stage"], 100 * stats["mean"], marker="o", ms=4,
                              color=colors[variant], label=variant)
            band = stats["n"] >= 2
            if band.any():
                ax.fill_between(stats["stage"][band], 100 * stats["lo"][band], 100 * stats["hi"][band],
                                color=colors[variant], alpha=0.18, linewidth=0)
            handles.setdefault(variant, line)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("stage (0 = pretrained)")
        ax.set_ylabel("test accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Test accuracy across training stages (mean over seeds, band = 95% CI clipped to [0, 100])")
    _legend_below(fig, list(handles.values()), list(handles))
    return _save(fig, path)


def plot_class_heatmap(matrix: pd.DataFrame, task_classes: Sequence[int], path: Path) -> Path:
    """Final per-class test accuracy (%), rows = variants, columns = true class 0..9."""
    fig = Figure(figsize=(9.5, 0.55 * len(matrix) + 2.2), layout="constrained")
    ax = fig.subplots()
    values = 100 * matrix.astype(float)
    sns.heatmap(values, ax=ax, annot=True, fmt=".1f", cmap="viridis",
                vmin=_zoomed_floor(values.to_numpy().ravel()), vmax=100,
                cbar_kws={"label": "test accuracy (%)"}, annot_kws={"fontsize": 8})
    ax.set_xticklabels([f"{c}*" if c in task_classes else str(c) for c in matrix.columns])
    ax.set_xlabel("true class (* = task class)")
    ax.set_ylabel("variant")
    ax.set_title("Final accuracy per class (mean over seeds)")
    ax.tick_params(axis="y", labelsize=8)
    return _save(fig, path)


def plot_confusion(counts: np.ndarray, variant: str, n_jobs: int, path: Path) -> Path:
    """Final confusion matrix, seed-summed counts, each row normalised to 100% of its true class."""
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    fig = Figure(figsize=(7.2, 6.0), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(100 * norm, ax=ax, annot=True, fmt=".1f", cmap="Blues", vmin=0, vmax=100,
                cbar_kws={"label": "% of true class"}, annot_kws={"fontsize": 7}, square=True)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Final confusion matrix: {variant}\n(summed over {n_jobs} seed(s), rows normalised per true class)",
                 fontsize=10)
    return _save(fig, path)


def _stage_starts(df: pd.DataFrame) -> dict[int, float]:
    starts = df.groupby("stage")["step"].min().sort_index()
    return {int(k): float(v) for k, v in starts.items()}


def plot_training_curves(train_loss: pd.DataFrame, val_acc: pd.DataFrame,
                         colors: Mapping[str, tuple], path: Path) -> Path:
    """Train loss vs global step per variant (mean over seeds), with stage boundaries as
    dotted lines; a second panel shows validation accuracy when logged."""
    panels = [("train", train_loss)] + ([("val", val_acc)] if not val_acc.empty else [])
    fig = Figure(figsize=(6.5 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    handles: dict[str, object] = {}
    for ax, (kind, df) in zip(axes, panels):
        for variant in [v for v in colors if v in set(df["variant"])]:
            sub = df[df["variant"] == variant]
            scale = 100.0 if kind == "val" else 1.0
            stats = _mean_ci(sub, "step", "value", (0.0, 1.0) if kind == "val" else (0.0, np.inf))
            few = kind == "val" or len(stats) < 30
            (line,) = ax.plot(stats["step"], scale * stats["mean"], color=colors[variant], lw=1.3,
                              marker="o" if few else None, ms=3, label=variant)
            band = stats["n"] >= 2
            if band.any():
                ax.fill_between(stats["step"][band], scale * stats["lo"][band], scale * stats["hi"][band],
                                color=colors[variant], alpha=0.15, linewidth=0)
            handles.setdefault(variant, line)
            for stage, start in _stage_starts(sub).items():
                if stage >= 2:
                    ax.axvline(start, color=colors[variant], ls=":", lw=1)
                    ax.annotate(f"S{stage}", (start, 1.0), xycoords=("data", "axes fraction"),
                                fontsize=7, color=colors[variant], ha="left", va="top")
        ax.set_xlabel("global step")
        ax.set_ylabel("train loss" if kind == "train" else "validation accuracy (%)")
        ax.set_title("Train loss (fine-tuning stages)" if kind == "train" else "Validation accuracy",
                     fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Training dynamics (mean over seeds, band = 95% CI; dotted = start of stage Sk)")
    _legend_below(fig, list(handles.values()), list(handles))
    return _save(fig, path)


def plot_calibration(cal: pd.DataFrame, chosen: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Calibration-split accuracy vs merge coefficient λ per merging variant (mean over seeds);
    vertical lines mark the λ each job selected."""
    variants = list(dict.fromkeys(cal["variant"]))
    ncols = min(3, len(variants))
    nrows = int(np.ceil(len(variants) / ncols))
    fig = Figure(figsize=(4.8 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    series = [("acc_target", "target", "tab:blue", "-"), ("acc_retained", "retained", "tab:orange", "-"),
              ("acc", "overall", "tab:gray", "--")]
    handles: dict[str, object] = {}
    for ax, variant in zip(axes, variants):
        sub = cal[cal["variant"] == variant]
        for col, name, color, ls in series:
            stats = _mean_ci(sub.rename(columns={col: "y"}), "lambda", "y")
            (line,) = ax.plot(stats["lambda"], 100 * stats["mean"], color=color, ls=ls, marker=".", label=name)
            band = stats["n"] >= 2
            if band.any():
                ax.fill_between(stats["lambda"][band], 100 * stats["lo"][band], 100 * stats["hi"][band],
                                color=color, alpha=0.15, linewidth=0)
            handles.setdefault(name, line)
        for lam in sorted(set(chosen.get(variant, []))):
            ax.axvline(lam, color="k", ls=":", lw=1)
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("merge coefficient λ")
        ax.set_ylabel("calibration accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(variants):]:
        ax.set_visible(False)
    fig.suptitle("Calibration of merging methods (mean over seeds; dotted = selected λ)")
    _legend_below(fig, list(handles.values()), list(handles))
    return _save(fig, path)


def _zoomed_floor(values: np.ndarray, pad: float = 2.0, step: float = 5.0) -> float:
    """Lower y/colour limit (percent) that keeps differences of a few points visible."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    return float(max(0.0, step * np.floor((finite.min() - pad) / step)))


def plot_headline_bars(summary: pd.DataFrame, variants: Sequence[str], metrics: Sequence[str],
                       colors: Mapping[str, tuple], path: Path) -> Path:
    """Mean test accuracy (%) per variant, one panel per metric, error bars = 95% CI.

    Each panel's y-axis is zoomed to the data (its lower limit is stated on the panel).
    """
    fig = Figure(figsize=(max(9.0, 0.5 * len(variants) * len(metrics) + 2), 4.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    x = np.arange(len(variants))
    for ax, metric in zip(axes, metrics):
        sub = summary[summary["metric"] == metric].set_index("variant")
        means = np.array([sub["mean"].get(v, np.nan) for v in variants], dtype=float)
        lo = np.array([sub["ci_low"].get(v, np.nan) for v in variants], dtype=float)
        hi = np.array([sub["ci_high"].get(v, np.nan) for v in variants], dtype=float)
        err = np.vstack([means - lo, hi - means])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(x, 100 * means, 0.8, yerr=100 * err, capsize=3, edgecolor="white",
               color=[colors.get(v, BASELINE_COLOR) for v in variants])
        floor = _zoomed_floor(100 * np.concatenate([lo[np.isfinite(lo)], means]))
        top = np.nanmax(np.concatenate([100 * hi[np.isfinite(hi)], 100 * means, [floor + 1]]))
        ax.set_ylim(floor, min(100.5, top + 1) if top <= 100 else top + 1)
        ax.set_xticks(x, [""] * len(variants))
        ax.set_title(agg.metric_name(metric), fontsize=10)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
        if floor > 0:
            ax.set_xlabel(f"(y-axis starts at {floor:.0f}%, not 0)", fontsize=8, color="0.35")
    fig.suptitle("Headline test accuracies (mean over seeds, error bars = 95% CI)")
    handles = [matplotlib.patches.Patch(color=colors.get(v, BASELINE_COLOR)) for v in variants]
    _legend_below(fig, handles, list(variants))
    return _save(fig, path)


# --------------------------------------------------------------------------- all figures

def _attempt(result: PlotResult, draw: Callable[[], Path | None]) -> PlotResult:
    try:
        result.path = draw()
    except Exception as exc:  # one broken figure must not sink the report
        log.warning("plot %s failed: %s", result.key, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        result.path, result.note = None, f"plot failed: {exc}"
    return result


def make_all_plots(analysis: agg.Analysis, out_dir: Path) -> list[PlotResult]:
    """Draw every figure into ``out_dir``; returns one :class:`PlotResult` per figure."""
    out_dir = Path(out_dir)
    has_synthetic_baseline = analysis.baseline_label == agg.BASELINE_LABEL and not analysis.baseline.empty
    colors = variant_colors(analysis.variants, agg.BASELINE_LABEL if has_synthetic_baseline else None)
    variant_colors_only = {v: c for v, c in colors.items() if v in analysis.variants}
    results: list[PlotResult] = []
    classes = ",".join(map(str, analysis.task_classes))

    trend = agg.stage_trend_frame(analysis)
    panels = [("all", "overall"), ("target", f"target (classes {classes})"),
              ("retained", "retained (other classes)")]
    panels += [(f"class_{k}", f"class {k}") for k in analysis.task_classes]
    r = PlotResult("stage_trend", "Accuracy across stages",
                   "Test accuracy after each stage (0 = pretrained model), mean over seeds with 95% CI band "
                   "(clipped to [0, 100] for display).")
    if trend.empty:
        r.note = "no stage tables (stages.csv or per_stage) found"
    else:
        _attempt(r, lambda: plot_stage_trend(trend, panels, variant_colors_only, out_dir / "stage_trend.png"))
    results.append(r)

    matrix = agg.class_accuracy_matrix(analysis)
    r = PlotResult("class_heatmap", "Per-class accuracy",
                   "Final test accuracy per true class, mean over seeds (task classes marked with an asterisk; "
                   "the colour scale starts near the lowest value).")
    if matrix.empty or matrix.isna().all().all():
        r.note = "no per-class accuracies found"
    else:
        _attempt(r, lambda: plot_class_heatmap(matrix, analysis.task_classes, out_dir / "class_heatmap.png"))
    results.append(r)

    confusions = agg.confusion_by_variant(analysis)
    used: set[str] = set()
    for variant, (counts, n, stages) in confusions.items():
        slug = slugify(variant)
        base, i = slug, 2
        while slug in used:
            slug, i = f"{base}_{i}", i + 1
        used.add(slug)
        r = PlotResult(f"confusion:{variant}", f"Confusion matrix: `{variant}`",
                       f"Final confusion matrix of `{variant}` (after stage {max(s for s in stages if s is not None)}), "
                       f"counts summed over {n} seed(s), rows normalised per true class (%).")
        _attempt(r, lambda c=counts, v=variant, k=n, s=slug: plot_confusion(c, v, k, out_dir / f"confusion_{s}.png"))
        results.append(r)
    if not confusions:
        results.append(PlotResult("confusion", "Confusion matrices", "", note="no confusion/stage_<k>.csv found"))

    train_loss = agg.curves_frame(analysis, "train", "loss")
    val_acc = agg.curves_frame(analysis, "val", "acc")
    r = PlotResult("training_curves", "Training curves",
                   "Train loss vs global step during fine-tuning (stage 0 = pretraining omitted), mean over seeds; "
                   "dotted lines mark where stage k >= 2 starts.")
    if train_loss.empty:
        r.note = "no train loss in curves.csv"
    else:
        _attempt(r, lambda: plot_training_curves(train_loss, val_acc, variant_colors_only,
                                                 out_dir / "training_curves.png"))
    results.append(r)

    cal, chosen = agg.calibration_frame(analysis)
    r = PlotResult("calibration", "Calibration of merging methods",
                   "Calibration-split accuracy vs merge coefficient λ (target, retained, overall), mean over seeds; "
                   "dotted lines = selected λ.")
    if cal.empty:
        r.note = "no merging method with calibration.csv in this sweep"
    else:
        _attempt(r, lambda: plot_calibration(cal, chosen, out_dir / "calibration.png"))
    results.append(r)

    bar_variants = ([agg.BASELINE_LABEL] if has_synthetic_baseline else []) + list(analysis.variants)
    r = PlotResult("headline_bars", "Headline accuracies",
                   "Overall, target and retained test accuracy per variant, mean over seeds, error bars = 95% CI "
                   "(y-axes zoomed to the data).")
    if analysis.summary.empty:
        r.note = "no finished jobs"
    else:
        _attempt(r, lambda: plot_headline_bars(analysis.summary, bar_variants, agg.HEADLINE_METRICS, colors,
                                               out_dir / "headline_bars.png"))
    results.append(r)
    return results
