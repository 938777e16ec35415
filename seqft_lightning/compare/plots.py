"""PNG figures of a sweep (matplotlib ``Figure`` objects on the Agg backend, no pyplot state; seaborn draws).

Accuracies are drawn in percent; bands and error bars are the 95 % t-intervals over seeds of :mod:`.stats`
(clipped as stated there; none for a single seed). Line plots have one column of panels per family (naive,
retention, merging). Every figure is one :class:`PlotSpec` in :data:`SPECS`; a figure without data or whose
drawing fails is reported as skipped instead of aborting the report.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from seqft_lightning.compare import aggregate as agg  # noqa: E402
from seqft_lightning.compare.stats import t_errorbar, t_interval_groups  # noqa: E402
from seqft_lightning.compare.variants import FAMILIES  # noqa: E402
from seqft_lightning.io import atomic_write_bytes  # noqa: E402

log = logging.getLogger(__name__)

DPI = 110
PERCENT = (0.0, 100.0)
BASELINE_COLOR = (0.45, 0.45, 0.45)
FAMILY_COLORS = dict(zip(FAMILIES, sns.color_palette("colorblind", len(FAMILIES))))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DASHES = {"joint": (4, 2), "baseline": (1, 2)}  # other methods: solid


@dataclass
class PlotResult:
    """One figure: ``path`` is None when it was skipped (``note`` says why)."""

    key: str
    title: str
    caption: str
    path: Path | None = None
    note: str = ""
    section: str = "plots"


@dataclass(frozen=True)
class Style:
    color: tuple
    marker: str
    dashes: tuple | str  # seaborn: "" is solid

    @property
    def ls(self) -> Any:
        return (0, self.dashes) if self.dashes else "-"


GREY = Style(BASELINE_COLOR, "o", "")


@dataclass(frozen=True)
class Panel:
    """One row of a family grid: ``data`` is long ``variant, x, y`` (plus ``stage`` for curves)."""

    title: str
    data: pd.DataFrame
    ylabel: str
    bounds: tuple[float, float] | None  # clipping of the t-interval band, in the units of y
    markers: bool = True


def _family_palette(family: str, n: int) -> list[tuple]:
    """Colours no other family uses, so one figure can hold every family: naive in greys, retention from
    the first tab10 colours, merging from the last ones (tab20 when a family needs more than five)."""
    n = max(n, 1)
    if family == "naive":
        return [tuple(c) for c in sns.color_palette("Greys_r", n + 2)[:n]]
    tab = sns.color_palette("tab10", 10) if n <= 5 else sns.color_palette("tab20", 20)
    start = len(tab) // 2 if family == "merging" else 0
    return [tuple(tab[(start + i) % len(tab)]) for i in range(n)]


def variant_styles(analysis: agg.Analysis) -> dict[str, Style]:
    """Style of each variant and tuned variant, distinct within and across families; in the retention
    family one colour and marker per retention method (a knob curve's grid points and its tuned variant alike)."""
    styles: dict[str, Style] = {}
    for family in FAMILIES:
        members = [v for v in analysis.all_variants if analysis.family(v) == family]
        key = {v: analysis.variant_retention[v] if family == "retention" else v for v in members}
        keys = list(dict.fromkeys(key.values()))
        palette = _family_palette(family, len(keys))
        for v in members:
            i = keys.index(key[v])
            styles[v] = Style(palette[i], MARKERS[i % len(MARKERS)], DASHES.get(analysis.variant_method[v], ""))
    return styles


def _groups(analysis: agg.Analysis, present: set, families: Sequence[str] = FAMILIES) -> dict[str, list[str]]:
    """``{family: variants}`` of the variants in ``present``, families in report order."""
    groups = {f: [v for v in analysis.all_variants if v in present and analysis.family(v) == f] for f in families}
    return {f: vs for f, vs in groups.items() if vs}


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw).ravel()


def _wrapped(n: int, max_cols: int, width: float, height: float, pad: float = 0.0) -> tuple[Figure, np.ndarray]:
    """``n`` panels of about ``width`` x ``height`` inches in rows of at most ``max_cols``; the rest hidden."""
    ncols = min(max_cols, n)
    nrows = -(-n // ncols)
    fig, axes = _figure(width * ncols + pad, height * nrows + 0.6, nrows, ncols)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig: Figure, path: Path, suptitle: str | None = None) -> Path:
    if suptitle is not None:
        fig.suptitle(suptitle)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # constrained layout already fits everything in
    return atomic_write_bytes(path, buf.getvalue())


def _zoomed_floor(values: np.ndarray, pad: float = 2.0, step: float = 5.0) -> float:
    """Lower y/colour limit (percent) that keeps differences of a few points visible."""
    finite = values[np.isfinite(values)]
    return float(max(0.0, step * np.floor((finite.min() - pad) / step))) if finite.size else 0.0


def draw_family_grid(panels: Sequence[Panel], groups: Mapping[str, Sequence[str]], styles: Mapping[str, Style],
                     path: Path, xlabel: str, suptitle: str, stage_lines: bool = False) -> Path:
    """Line plots, one column per family and one row per panel: mean of ``y`` per ``x`` over seeds, band =
    clipped 95% t-interval. ``stage_lines`` marks where stage k >= 2 starts (dotted)."""
    fig = Figure(figsize=(4.6 * len(groups), 2.8 * len(panels) + 1.6), layout="constrained")
    for sub, (family, variants) in zip(fig.subfigures(1, len(groups), squeeze=False).ravel(), groups.items()):
        axes = sub.subplots(len(panels), 1, squeeze=False, sharex=True).ravel()
        for ax, panel in zip(axes, panels):
            data = panel.data[panel.data["variant"].isin(variants)]
            order = [v for v in variants if v in set(data["variant"])]
            # mean and band per x computed once per panel (seaborn's errorbar per point is too slow here)
            band = t_interval_groups(data, ["variant", "x"], "y", 0.95, panel.bounds) if order else None
            for v in order:
                b, st = band[band["variant"] == v], styles[v]
                ax.plot(b["x"], b["mean"], color=st.color, marker=st.marker if panel.markers else None, ms=4,
                        ls=st.ls, lw=1.4)
                ax.fill_between(b["x"], b["ci_low"], b["ci_high"], color=st.color, alpha=0.15, linewidth=0)
            for stage, start in data.groupby("stage")["x"].min().items() if stage_lines and order else []:
                if stage >= 2:
                    ax.axvline(start, color="0.5", ls=":", lw=1)
                    ax.annotate(f"S{stage:.0f}", (start, 1.0), xycoords=("data", "axes fraction"),
                                fontsize=7, color="0.4", ha="left", va="top")
            ax.set_title(panel.title, fontsize=9)
            ax.set(xlabel=xlabel, ylabel=panel.ylabel)
            ax.grid(alpha=0.3)
        if not stage_lines:
            axes[-1].xaxis.get_major_locator().set_params(integer=True)
        sub.suptitle(family, fontsize=11, fontweight="bold")
        handles = [Line2D([], [], color=styles[v].color, marker=styles[v].marker, linestyle=styles[v].ls, label=v)
                   for v in variants]
        sub.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=8)
    return _save(fig, path, suptitle)


def draw_class_heatmap(matrix: pd.DataFrame, task_classes: Sequence[int], breaks: Sequence[int], path: Path) -> Path:
    """Final per-class test accuracy (%), rows = variants (families split at ``breaks``), columns = true class."""
    fig, (ax,) = _figure(9.5, 0.4 * len(matrix) + 2.2)
    values = 100 * matrix.astype(float)
    sns.heatmap(values, ax=ax, annot=True, fmt=".1f", cmap="viridis", vmin=_zoomed_floor(values.to_numpy().ravel()),
                vmax=100, cbar_kws={"label": "test accuracy (%)"}, annot_kws={"fontsize": 7})
    for row in breaks:
        ax.axhline(row, color="white", lw=3)
    ax.set_xticklabels([f"{c}*" if c in task_classes else str(c) for c in matrix.columns])
    ax.set(xlabel="true class (* = task class)", ylabel="variant", title="Final accuracy per class (mean over seeds)")
    ax.tick_params(axis="y", labelsize=8)
    return _save(fig, path)


def draw_confusion(matrices: Mapping[str, tuple[np.ndarray, int, int]], path: Path) -> Path:
    """Final confusion matrices, one panel per variant (``{variant: (counts, n_jobs, stage)}``): counts summed over
    seeds, each row normalised to 100% of its true class; cells under 0.5% left blank (text is slow to draw)."""
    fig, axes = _wrapped(len(matrices), 4, 3.4, 3.5, pad=0.8)
    image = None
    for ax, (variant, (counts, n_jobs, stage)) in zip(axes, matrices.items()):
        rows = counts.sum(axis=1, keepdims=True)
        norm = 100 * np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
        image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
        for (i, j), value in np.ndenumerate(norm):
            if value >= 0.5:
                ax.text(j, i, f"{value:.0f}" if value >= 9.95 else f"{value:.1f}", ha="center", va="center",
                        fontsize=5.5, color="white" if value > 60 else "black")
        ax.set(xticks=np.arange(norm.shape[0]), yticks=np.arange(norm.shape[0]))
        ax.tick_params(labelsize=6)
        ax.set_title(f"{variant}\n(stage {stage}, {n_jobs} seed(s))", fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), label="% of true class", shrink=0.6)
    return _save(fig, path, "Final confusion matrices (summed over seeds, rows normalised per true class; "
                            "blank < 0.5%)")


def draw_calibration(cal: pd.DataFrame, chosen: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Calibration-split accuracy (%) vs merge coefficient λ per merging variant; dotted = the λ each job chose."""
    variants = list(dict.fromkeys(cal["variant"]))
    # at least 8 inches wide, so that the title fits above a single panel
    fig, axes = _wrapped(len(variants), 3, 4.8, 3.4, pad=max(0.0, 8.0 - 4.8 * min(3, len(variants))))
    series = {"acc_target": "target", "acc_retained": "retained", "acc": "overall"}
    long = cal.melt(id_vars=["variant", "seed", "lambda"], value_vars=list(series), var_name="series", value_name="y")
    long = long.assign(series=long["series"].map(series), y=100 * long["y"])
    for ax, variant in zip(axes, variants):
        sns.lineplot(data=long[long["variant"] == variant], x="lambda", y="y", hue="series", style="series",
                     hue_order=list(series.values()), style_order=list(series.values()), markers=True,
                     errorbar=t_errorbar(PERCENT), err_kws={"alpha": 0.15, "linewidth": 0}, ax=ax,
                     legend=ax is axes[0])
        for lam in sorted(set(chosen.get(variant, []))):
            ax.axvline(lam, color="k", ls=":", lw=1)
        ax.set(title=variant, xlabel="merge coefficient λ", ylabel="calibration accuracy (%)")
        ax.grid(alpha=0.3)
    return _save(fig, path, "Calibration of merging methods (mean over seeds; dotted = selected λ)")


def draw_headline_bars(summary: pd.DataFrame, variants: Sequence[str], families: Sequence[str],
                       metrics: Sequence[str], path: Path) -> Path:
    """Mean test accuracy (%) per variant and metric, bars coloured by family, error bars = the summary's
    (clipped) 95% CI; each y-axis starts at a round value below its lowest bar (0 when a bar is near 0), and says
    so when it does not start at 0."""
    x = np.arange(len(variants)) + np.cumsum([0] + [a != b for a, b in zip(families, families[1:])]) * 0.6
    colors = [BASELINE_COLOR if v == agg.BASELINE_LABEL else FAMILY_COLORS[f] for v, f in zip(variants, families)]
    fig, axes = _figure(max(8.0, 0.42 * len(variants) + 2.5), 2.6 * len(metrics) + 2.0, len(metrics), sharex=True)
    for ax, metric in zip(axes, metrics):
        sub = summary[summary["metric"] == metric].set_index("variant")
        mean, lo, hi = (100 * np.array([sub[c].get(v, np.nan) for v in variants], dtype=float)
                        for c in ("mean", "ci_low", "ci_high"))
        ax.bar(x, mean, 0.8, yerr=np.nan_to_num(np.vstack([mean - lo, hi - mean])), capsize=3, color=colors,
               edgecolor="white")
        floor = _zoomed_floor(np.concatenate([lo, mean]))
        ax.set_ylim(floor, min(100.5, np.nanmax(np.concatenate([hi, mean, [floor]])) + 1))
        ax.set(title=agg.metric_name(metric), ylabel="test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
        if floor > 0:
            ax.text(1.0, 1.01, f"y-axis starts at {floor:.0f}%", transform=ax.transAxes, ha="right", fontsize=8,
                    color="0.35")
    axes[-1].set_xticks(x, variants, rotation=60, ha="right", fontsize=8)
    fig.legend(handles=[Patch(color=FAMILY_COLORS[f], label=f) for f in dict.fromkeys(families)],
               loc="outside upper right", frameon=False, fontsize=8)
    return _save(fig, path, "Headline test accuracies (mean over seeds, error bars = 95% CI)")


def _err(mean: float, lo: float, hi: float) -> Any:
    """Error bar extents (percent) of one mean with its 95% CI; None without a CI (a single seed)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [[100 * max(mean - lo, 0.0)], [100 * max(hi - mean, 0.0)]]


def _errorbar(ax, row: Any, **kwargs: Any) -> None:
    ax.errorbar([100 * row.x], [100 * row.y], xerr=_err(row.x, row.x_lo, row.x_hi),
                yerr=_err(row.y, row.y_lo, row.y_hi), elinewidth=0.8, capsize=2, **kwargs)


def draw_tradeoff(data: pd.DataFrame, styles: Mapping[str, Style], tuned: Sequence[str], rule: str,
                  path: Path) -> Path:
    """Test target (y) vs retained (x) accuracy (%), means over seeds with 95% CIs in both directions; the
    calibration-selected points large and outlined, the Pareto front shaded."""
    fig, (ax,) = _figure(11.5, 7.5)
    retention_handles: dict[str, Any] = {}
    handles: list[Any] = []
    for series, g in data[data["kind"] == "curve"].groupby("series", sort=False):
        style = styles.get(series, GREY)
        ls = "--" if g["method"].iloc[0] == "joint" else "-"
        ax.plot(100 * g["x"], 100 * g["y"], color=style.color, ls=ls, lw=1.4, marker="o", ms=3.5, alpha=0.9, zorder=2)
        for row in g.itertuples(index=False):
            _errorbar(ax, row, fmt="none", ecolor=style.color, alpha=0.35, zorder=1)
        for row in (g.iloc[0], g.iloc[-1]):
            if np.isfinite(row["x"]) and np.isfinite(row["y"]):
                ax.annotate(f"{row['value']}", (100 * row["x"], 100 * row["y"]), xytext=(3, 3),
                            textcoords="offset points", fontsize=6, color=style.color)
        retention_handles.setdefault(g["retention"].iloc[0], Line2D(
            [], [], color=style.color, marker="o", ms=3.5, label=f"{g['retention'].iloc[0]} over {g['knob'].iloc[0]}"))
    if retention_handles:
        handles += list(retention_handles.values())
        handles += [Line2D([], [], color="0.2", ls=ls, marker=m, ms=7, mec="black", mew=1.5, label=label)
                    for ls, m, label in [("-", "o", "sequential (line solid, tuned ●)"),
                                         ("--", "s", "joint (line dashed, tuned ■)")]]
    for series, g in data[data["kind"] == "lambda"].groupby("series", sort=False):
        style = styles.get(series, Style(BASELINE_COLOR, ".", ""))
        ax.plot(100 * g["x"], 100 * g["y"], color=style.color, ls=":", lw=1.4, marker=".", ms=4, zorder=2)
    for row in data[data["kind"] == "point"].itertuples(index=False):
        if row.method == agg.BASELINE_METHOD or row.variant == agg.BASELINE_LABEL:
            style, marker = Style((0.0, 0.0, 0.0), "*", ""), "*"
        else:
            style = styles.get(row.variant, GREY)
            marker = ("s" if row.method == "joint" else "o") if row.variant in tuned else style.marker
        big = dict(ms=12, mec="black", mew=1.8) if row.selected else dict(ms=8, mec="white", mew=0.6)
        _errorbar(ax, row, fmt=marker, color=style.color, ecolor=style.color, zorder=4 if row.selected else 3, **big)
        if row.variant not in tuned:
            lam = ((data["kind"] == "lambda") & (data["series"] == row.variant)).any()
            handles.append(Line2D([], [], color=style.color, ls=":" if lam else "none", marker=marker,
                                  label=f"{row.variant}{' (λ curve dotted)' if lam else ''}",
                                  **({"ms": 9, "mec": "black", "mew": 1.5} if row.selected else {"ms": 7})))
    front = data[data["pareto"]].sort_values(["x", "y"], ascending=[True, False])
    if len(front):
        ax.plot(100 * front["x"], 100 * front["y"], color="0.25", lw=6, alpha=0.15, drawstyle="steps-pre", zorder=0)
        ax.scatter(100 * front["x"], 100 * front["y"], s=260, facecolors="none", edgecolors="0.3", linewidths=0.9,
                   zorder=5)
        handles.append(Line2D([], [], color="0.3", lw=5, alpha=0.3, marker="o", mfc="none", ms=12,
                              label="Pareto front (all plotted means)"))
    handles.append(Line2D([], [], color="0.6", ls="none", marker="o", ms=10, mec="black", mew=1.8,
                          label="chosen on calibration (tuned knob, merging λ)"))
    ax.set(xlabel="retained accuracy on test (%, classes not trained)", ylabel="target accuracy on test (%)")
    ax.grid(alpha=0.3)
    ax.set_title(f"Target vs retained test accuracy: every knob's trade-off curve (mean over seeds, 95% CI)\n{rule}",
                 fontsize=9)
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False)
    return _save(fig, path)


def draw_accuracy_vs_compute(data: pd.DataFrame, styles: Mapping[str, Style], tuned: Sequence[str],
                             baseline: Mapping[str, float], path: Path) -> Path:
    """Test accuracy (%) vs training FLOPs (log x), one panel per metric; tuned variants outlined, with a hollow
    marker at the whole grid's training FLOPs."""
    metrics = list(dict.fromkeys(data["metric"]))
    fig, axes = _figure(7.5 * len(metrics), 6.0, 1, len(metrics))
    for ax, metric in zip(axes, metrics):
        for row in data[data["metric"] == metric].itertuples(index=False):
            style, selected = styles.get(row.variant, GREY), row.variant in tuned
            marker = ("s" if row.method == "joint" else "o") if selected else style.marker
            ax.errorbar([row.flops], [100 * row.y], yerr=_err(row.y, row.lo, row.hi), fmt=marker, color=style.color,
                        capsize=2, **(dict(ms=10, mec="black", mew=1.6) if selected else dict(ms=7)))
            if np.isfinite(row.grid_flops) and row.grid_flops > row.flops:
                ax.plot([row.flops, row.grid_flops], [100 * row.y] * 2, color=style.color, lw=0.8, alpha=0.6)
                ax.plot([row.grid_flops], [100 * row.y], marker=marker, mfc="none", color=style.color, ms=7)
            ax.annotate(row.variant, (row.flops, 100 * row.y), xytext=(4, -9), textcoords="offset points", fontsize=6)
        if np.isfinite(baseline.get(metric, np.nan)):
            ax.axhline(100 * baseline[metric], color="0.3", ls=":", lw=1)
            ax.annotate("pretrained baseline", (0.01, 100 * baseline[metric]), xycoords=("axes fraction", "data"),
                        fontsize=7, color="0.3", va="bottom")
        ax.set_xscale("log")
        ax.set(xlabel="training FLOPs (log scale; hollow = the whole knob grid)", ylabel="test accuracy (%)",
               title=agg.metric_name(metric))
        ax.grid(alpha=0.3, which="both")
    return _save(fig, path, "Accuracy vs training compute (mean over seeds, error bars = 95% CI; "
                            "tuned variants outlined)")


def build_stage_trend(a: agg.Analysis) -> dict | None:
    trend = agg.stage_trend_frame(a)
    if trend.empty:
        return None
    data = trend.rename(columns={"stage": "x"}).assign(y=100 * trend["acc"])
    classes = ",".join(map(str, a.task_classes))
    subsets = [("all", "overall"), ("target", f"target (classes {classes})"), ("retained", "retained (other classes)")]
    subsets += [(f"class_{k}", f"class {k}") for k in a.task_classes]
    panels = [Panel(title, data[data["evaluated"] == ev], "test accuracy (%)", PERCENT) for ev, title in subsets]
    return {"panels": panels, "groups": _groups(a, set(data["variant"])), "styles": variant_styles(a),
            "xlabel": "stage (0 = pretrained)",
            "suptitle": "Test accuracy across training stages (mean over seeds, band = 95% CI)"}


def build_class_heatmap(a: agg.Analysis) -> dict | None:
    matrix = agg.class_accuracy_matrix(a)
    if matrix.empty or matrix.isna().all().all():
        return None
    families = [a.family(v) for v in matrix.index]
    return {"matrix": matrix, "task_classes": a.task_classes,
            "breaks": [i for i in range(1, len(families)) if families[i] != families[i - 1]]}


def build_confusions(a: agg.Analysis) -> dict | None:
    """The shown variants' matrices (naive, tuned: their chosen jobs, merging), in report order."""
    found = {variant: (counts, n, max(s for s in stages if s is not None))
             for variant, (counts, n, stages) in agg.confusion_by_variant(a).items()}
    return {"matrices": found} if found else None


def build_training_curves(a: agg.Analysis) -> dict | None:
    """Merging methods are left out: their curves are the per-task experts' fine-tuning."""
    def panel_data(split: str, metric: str, scale: float) -> pd.DataFrame:
        df = agg.curves_frame(a, split, metric)
        df = df[df["variant"].map(a.family) != "merging"]
        return df.rename(columns={"step": "x"}).assign(y=scale * df["value"])
    loss, val = panel_data("train", "loss", 1.0), panel_data("val", "acc", 100.0)
    if loss.empty:
        return None
    panels = [Panel("train loss (nats)", loss, "train loss", (0.0, np.inf), markers=False)]  # a loss is >= 0
    panels += [Panel("validation accuracy", val, "validation accuracy (%)", PERCENT)] if not val.empty else []
    return {"panels": panels, "groups": _groups(a, set(loss["variant"]), ("naive", "retention")),
            "styles": variant_styles(a), "xlabel": "global step", "stage_lines": True,
            "suptitle": "Training dynamics of fine-tuning (mean over seeds, band = 95% CI; dotted = start of stage Sk)"}


def build_calibration(a: agg.Analysis) -> dict | None:
    cal, chosen = agg.calibration_frame(a)
    return None if cal.empty else {"cal": cal, "chosen": chosen}


def build_headline_bars(a: agg.Analysis) -> dict | None:
    if a.summary.empty:
        return None
    synthetic = a.baseline_label == agg.BASELINE_LABEL and not a.baseline.empty
    variants = ([agg.BASELINE_LABEL] if synthetic else []) + list(a.shown)
    return {"summary": a.summary, "variants": variants, "families": [a.family(v) for v in variants],
            "metrics": agg.HEADLINE_METRICS}


def build_tradeoff(a: agg.Analysis) -> dict | None:
    data = agg.tradeoff_frame(a)
    if data.empty or not (data["x"].notna() & data["y"].notna()).any():
        return None
    return {"data": data, "styles": variant_styles(a), "tuned": list(a.tuned), "rule": a.selection.short()}


def build_accuracy_vs_compute(a: agg.Analysis) -> dict | None:
    """Shown variants with training FLOPs > 0 (the baseline, which trains nothing, is a line; task
    negation, whose target is what it forgets, is left out)."""
    cost = agg.cost_table(a)
    if cost.empty or a.summary.empty:
        return None
    summary = a.summary.set_index(["variant", "metric"])
    rows = [{"variant": c["variant"], "method": a.variant_method[c["variant"]], "metric": metric,
             "flops": c[agg.TRAIN_FLOPS], "grid_flops": c[agg.GRID_FLOPS], "y": s["mean"], "lo": s["ci_low"],
             "hi": s["ci_high"]}
            for _, c in cost.iterrows()
            if np.isfinite(c[agg.TRAIN_FLOPS]) and c[agg.TRAIN_FLOPS] > 0
            and a.variant_method[c["variant"]] not in (agg.BASELINE_METHOD, *agg.OWN_RULE_METHODS)
            for metric in (agg.TARGET, agg.ACC) if (c["variant"], metric) in summary.index
            for s in [summary.loc[(c["variant"], metric)]]]
    if not rows:
        return None
    base = {m: float(a.baseline[m].mean()) for m in (agg.TARGET, agg.ACC) if m in a.baseline and not a.baseline.empty}
    return {"data": pd.DataFrame(rows), "styles": variant_styles(a), "tuned": list(a.tuned), "baseline": base}


@dataclass(frozen=True)
class PlotSpec:
    """One figure, ``plots/<name>.png``: ``build(analysis)`` gives ``draw``'s keyword arguments; nothing means
    the figure is skipped with "needs <needs>"."""

    name: str
    title: str
    caption: str
    build: Callable[[agg.Analysis], Any]
    draw: Callable[..., Path]
    needs: str
    #: where the report puts it: "answer" (the first figure), "cost" (beside the cost table) or "plots"
    section: str = "plots"


SPECS: tuple[PlotSpec, ...] = (
    PlotSpec("tradeoff", "Trade-off: target vs retained accuracy",
             "Target (y) vs retained (x) test accuracy, mean over seeds with 95% CIs in both directions. Lines: each "
             "retention method's knob grid (sequential solid, joint dashed; one colour per retention method; the end "
             "values of each grid annotated) and the merging methods' λ grid on test (dotted). Points: the pretrained "
             "baseline (star), naive variants, merging results. Large outlined points: the settings chosen on the "
             "calibration split (tuned variants, merging λ), whose test numbers are reported. Shaded staircase and "
             "rings: the Pareto front of all plotted means (higher target and higher retained is better).",
             build_tradeoff, draw_tradeoff, "test target and retained accuracy in a finished job", section="answer"),
    PlotSpec("accuracy_vs_compute", "Accuracy vs compute",
             "Test target and overall accuracy vs training FLOPs (log scale) of the naive, tuned and merging variants, "
             "mean over seeds with 95% CI; tuned variants outlined, with a hollow marker at the training FLOPs of "
             "their whole knob grid (the price of tuning); dotted line: the pretrained baseline.",
             build_accuracy_vs_compute, draw_accuracy_vs_compute, "cost/train_flops in metrics.json", section="cost"),
    PlotSpec("stage_trend", "Accuracy across stages",
             "Test accuracy after each stage (0 = pretrained model), one column per family (naive, retention, "
             "merging; merging shows the baseline and the merged model), mean over seeds with 95% CI band.",
             build_stage_trend, draw_family_grid, "stages.csv in a finished job"),
    PlotSpec("class_heatmap", "Per-class accuracy",
             "Final test accuracy per true class, mean over seeds, variants grouped by family (task classes "
             "marked with an asterisk; the colour scale starts near the lowest value).",
             build_class_heatmap, draw_class_heatmap, "per-class accuracies in metrics.json"),
    PlotSpec("confusion", "Confusion matrices",
             "Final confusion matrix of each naive, tuned (its chosen jobs) and merging variant, counts summed over "
             "seeds, rows normalised per true class (%); cells under 0.5% blank.",
             build_confusions, draw_confusion, "confusion/stage_<k>.csv of the final stage"),
    PlotSpec("training_curves", "Training curves",
             "Train loss and validation accuracy vs global step during fine-tuning (pretraining omitted), one "
             "column per family, mean over seeds with 95% CI band; dotted lines mark where stage k >= 2 starts. "
             "Merging methods are left out: their curves are those of the per-task expert fine-tunes, "
             "not of the merged model.",
             build_training_curves, draw_family_grid, "train loss in curves.csv of a naive or retention job"),
    PlotSpec("calibration", "Calibration of merging methods",
             "Calibration-split accuracy vs merge coefficient λ (target, retained, overall), mean over seeds with "
             "95% CI band; dotted lines = selected λ.",
             build_calibration, draw_calibration, "a merging method with calibration.csv"),
    PlotSpec("headline_bars", "Headline accuracies",
             "Overall, target and retained test accuracy per variant, grouped and coloured by family, mean over "
             "seeds, error bars = 95% CI (a y-axis that does not start at 0 says so in its corner).",
             build_headline_bars, draw_headline_bars, "a finished job"),
)


def _attempt(key: str, fn: Callable[[], Any]) -> tuple[Any, str]:
    """``(fn(), "")``, or ``(None, note)`` when it raises: one broken figure must not sink the report."""
    try:
        return fn(), ""
    except Exception as exc:
        log.warning("plot %s failed: %s", key, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return None, f"plot failed: {exc}"


def make_all_plots(analysis: agg.Analysis, out_dir: Path, specs: Sequence[PlotSpec] = SPECS) -> list[PlotResult]:
    """Draw every figure of ``specs`` into ``out_dir``; one :class:`PlotResult` per figure drawn or skipped."""
    results: list[PlotResult] = []
    for spec in specs:
        data, note = _attempt(spec.name, lambda: spec.build(analysis))
        if not data:
            results.append(PlotResult(spec.name, spec.title, "", note=note or f"nothing to plot: needs {spec.needs}",
                                      section=spec.section))
            continue
        path, note = _attempt(spec.name, lambda: spec.draw(path=Path(out_dir) / f"{spec.name}.png", **data))
        results.append(PlotResult(spec.name, spec.title, spec.caption, path, note, spec.section))
    return results
