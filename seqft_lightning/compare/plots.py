"""PNG figures of a sweep (matplotlib ``Figure`` objects, no pyplot state; seaborn draws).

Accuracies in percent; bands and error bars are the 95 % t-intervals over seeds of :mod:`.stats` (clipped as stated
there; none for a single seed). Line plots have a column of panels per family (naive, retention, merging). The answer
figures (trade-off, accuracy vs compute) zoom on the points that hold the answer beside a small full-scale panel and
number their points (their key names each number). Each figure is a function ``analysis -> Figure | None`` of
:data:`SPECS`; one without data or whose drawing fails is reported as skipped instead of aborting the report.
"""

from __future__ import annotations

import io
import logging
from collections import namedtuple
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import make_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from seaborn.utils import relative_luminance
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare.aggregate import (ACC, BASELINE_LABEL, BASELINE_METHOD, OWN_RULE_METHODS, RETAINED,
                                               TARGET, Analysis, _used, class_metric)
from seqft_lightning.compare.load import Job
from seqft_lightning.compare.stats import t_errorbar, t_interval, t_interval_groups
from seqft_lightning.compare.variants import FAMILIES, MERGING_METHODS, NO_RETENTION, format_value, variant_family
from seqft_lightning.io import atomic_write_bytes
from seqft_lightning.values import is_finite_number

log = logging.getLogger(__name__)


# --- the data the figures draw (tidy frames from the analysis) ---

def _sequence_stages(stages: pd.DataFrame) -> pd.DataFrame:
    """The rows of a stage table that form a training sequence: when the last stage combines models trained
    separately from the baseline (its ``trained_classes`` is not a class list such as ``3+4+7``, e.g.
    ``merged``), the stages in between are those models, not steps: only stage 0 and the last are kept."""
    numeric = pd.to_numeric(stages["stage"], errors="coerce")
    last = numeric.max()
    last_label = str(stages.loc[numeric == last, "trained_classes"].iloc[0])
    if last > 0 and not all(part.strip().isdigit() for part in last_label.split("+")):
        return stages[(numeric == 0) | (numeric == last)]
    return stages


def shown_jobs(analysis: Analysis) -> list[tuple[str, Job]]:
    """``(variant, job)`` of every shown variant (a tuned variant: its chosen jobs)."""
    by_rel, rows = {j.rel: j for j in analysis.jobs}, analysis.rows
    return [(v, by_rel[rel]) for v in analysis.shown for rel in rows.loc[_used(rows) & (rows["variant"] == v), "job"]]


def _tidy(parts: Iterable[tuple[str, Job, pd.DataFrame | None]], columns: list[str], subset: list[str],
          text: Sequence[str] = ()) -> pd.DataFrame:
    """The ``columns`` of each ``(variant, job, frame)`` (skipped when None or empty) as numbers (``text`` as text),
    plus ``variant`` and ``seed``, stacked, without the rows that lack a ``subset`` value."""
    frames = [df[columns].apply(lambda c: c.astype(str) if c.name in text else pd.to_numeric(c, errors="coerce"))
              .assign(variant=v, seed=job.seed) for v, job, df in parts if df is not None and not df.empty]
    if not frames:
        return pd.DataFrame(columns=["variant", "seed", *columns])
    return pd.concat(frames, ignore_index=True).dropna(subset=subset)


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point dominates (at least as good in both coordinates and better in one;
    higher is better; NaNs never on it)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    xi, yi = x[:, None], y[:, None]  # row i: the point; column j: a rival
    return ok & ~(ok & (x >= xi) & (y >= yi) & ((x > xi) | (y > yi))).any(axis=1)


def tradeoff_frame(analysis: Analysis) -> pd.DataFrame:
    """Test target (y) vs retained (x) accuracy of everything on the trade-off plot: means over seeds, clipped 95%
    t-intervals ``x_lo``..``x_hi``, ``y_lo``..``y_hi``. ``kind``: ``grid`` (a knob grid's grid points, ``series`` =
    its tuned label, ``value`` = the knob value), ``lambda`` (a merging method's λ grid from ``lambda_test.csv``),
    ``point`` (every shown variant and the pretrained baseline). ``selected``: a tuned variant, or a merging variant
    whose λ was chosen on calibration. ``pareto``: on the Pareto front of all of them."""
    method, retention = analysis.variant_method, analysis.variant_retention

    def xy(variant: str, x: Iterable[float] | None = None, y: Iterable[float] | None = None, kind: str = "point",
           series: str = "", knob: str = "", value: str = "", **ident: Any) -> dict[str, Any]:
        """The row of ``x``, ``y`` (per seed; None: ``variant``'s)."""
        xs, ys = (t_interval(analysis.seeds.get(m, variant).values() if v is None else v, 0.95, (0.0, 1.0))
                  for m, v in ((RETAINED, x), (TARGET, y)))
        return {"variant": variant, "kind": kind, "series": series or variant, "knob": knob, "value": value,
                "selected": False, **ident, "n": min(xs.n, ys.n), "x": xs.mean, "x_lo": xs.ci_low,
                "x_hi": xs.ci_high, "y": ys.mean, "y_lo": ys.ci_low, "y_hi": ys.ci_high}

    out = [xy(label, kind="grid", series=c.label, method=c.method, retention=c.retention, knob=c.key,
              value=format_value(value)) for c in analysis.grids for value, label in c.points]
    columns = ["lambda", "acc_target", "acc_retained"]
    lam = _tidy([(analysis.labels[j.rel], j, j.lambda_test) for j in analysis.finished
                 if j.method not in OWN_RULE_METHODS], columns, columns)
    out += [xy(v, g["acc_retained"], g["acc_target"], kind="lambda", method=method[v], retention=NO_RETENTION,
               knob="lambda", value=format_value(float(value))) for (v, value), g in lam.groupby(["variant", "lambda"])]
    if analysis.baseline_row:
        out.append(xy(BASELINE_LABEL, *(analysis.baseline.get(m, []) for m in (RETAINED, TARGET)),
                      method=BASELINE_METHOD, retention=NO_RETENTION))
    chosen = {*analysis.tuned, *lam["variant"]}  # task negation: its target is what it forgets, not on these axes
    out += [xy(v, method=method[v], retention=retention[v], selected=v in chosen)
            for v in analysis.shown if method[v] not in OWN_RULE_METHODS]
    frame = pd.DataFrame(out, columns=["kind", "series", "variant", "method", "retention", "knob", "value", "n", "x",
                                       "x_lo", "x_hi", "y", "y_lo", "y_hi", "selected"])
    return frame.assign(pareto=pareto_front(frame["x"], frame["y"]))


# --- drawing ---

DPI = 110
PERCENT = (0.0, 100.0)
BASELINE_COLOR = (0.45, 0.45, 0.45)
FAMILY_COLORS = dict(zip(FAMILIES, sns.color_palette("colorblind", len(FAMILIES))))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = {"joint": (0, (4, 2)), "baseline": (0, (1, 2))}  # other methods: solid
#: one figure: ``path`` is None when it was skipped (``note`` says why)
PlotResult = make_dataclass("PlotResult", ["key", ("path", Path | None, None), ("note", str, ""),
                                           ("section", str, "plots")])
Style = namedtuple("Style", "color marker ls", defaults=["-"])
GREY = Style(BASELINE_COLOR, "o")


def variant_styles(analysis: Analysis) -> dict[str, Style]:
    """Style of each variant and tuned variant, distinct within and across families: naive in greys, retention
    from the first tab10 colours, merging from the last ones (tab20 past five); in the retention family one colour
    and marker per retention method (a knob grid's grid points and its tuned variant alike)."""
    styles: dict[str, Style] = {}
    for family in FAMILIES:
        members = [v for v in analysis.all_variants if analysis.family(v) == family]
        key = {v: analysis.variant_retention[v] if family == "retention" else v for v in members}
        keys = list(dict.fromkeys(key.values()))
        tab = sns.color_palette("tab10" if len(keys) <= 5 else "tab20")
        palette = {"naive": sns.color_palette("Greys_r", len(keys) + 2), "retention": tab,
                   "merging": tab[len(tab) // 2:] + tab[:len(tab) // 2]}[family]
        styles |= {v: Style(tuple(palette[(i := keys.index(key[v])) % len(palette)]), MARKERS[i % len(MARKERS)],
                            LINESTYLES.get(analysis.variant_method[v], "-")) for v in members}
    return styles


def _figure(width: float, height: float, nrows: int = 0, ncols: int = 1, **kw: Any) -> tuple[Figure, np.ndarray]:
    """A figure with ``nrows`` x ``ncols`` axes (none for ``nrows`` = 0), on an Agg canvas of its own: without one,
    each text measurement (seaborn's ticks, every heat-map cell) builds a renderer that stays cached, about 200 MB
    per heat map of the confusion figure (4 GB for the reference study)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw).ravel() if nrows else np.array([])


def _wrapped(n: int, max_cols: int, width: float, height: float, pad: float = 0.0) -> tuple[Figure, np.ndarray]:
    """``n`` panels of about ``width`` x ``height`` inches in rows of at most ``max_cols``; the rest hidden."""
    ncols, nrows = min(max_cols, n), -(-n // max_cols)
    fig, axes = _figure(width * ncols + pad, height * nrows + 0.6, nrows, ncols)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _zoomed_floor(values: Iterable[float], pad: float = 2.0, step: float = 5.0) -> float:
    """Lower y/colour limit (percent) that keeps differences of a few points visible."""
    finite = (values := np.asarray(values, dtype=float))[np.isfinite(values)]
    return float(max(0.0, step * np.floor((finite.min() - pad) / step))) if finite.size else 0.0


# --- the answer figures: a panel zoomed on the answer, one at full scale, numbered points and their key ---

def zoom_limits(points: Any, reach: float = 5.0, pad: float = 0.75, span: float = 3.0) -> list[tuple[float, float]]:
    """Axis limits (percent) for each column of ``points`` (rows: the points that hold the answer, in percent): the
    rows within ``reach`` points, on every axis, of the row nearest the median, padded by ``pad`` points, rounded out
    to half points, at least ``span`` wide, within -0.5..100.5 (all of it without a finite row)."""
    p = np.asarray(points, dtype=float).reshape(len(points), -1)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        return [(-0.5, 100.5)] * p.shape[1]
    near = p[(np.abs(p - p[np.abs(p - np.median(p, axis=0)).max(axis=1).argmin()]) <= reach).all(axis=1)]
    lo, hi = np.floor(2 * (near.min(axis=0) - pad)) / 2, np.ceil(2 * (near.max(axis=0) + pad)) / 2
    grow = np.maximum(0.0, span - (hi - lo)) / 2
    return [(float(max(-0.5, a)), float(min(100.5, b))) for a, b in zip(lo - grow, hi + grow)]


def _numbered(analysis: Analysis, data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with ``number``: the pretrained baseline 1, then the shown variants (the same on both figures)."""
    order = [*analysis.baseline_row, *(v for v in analysis.shown if analysis.variant_method[v] not in OWN_RULE_METHODS)]
    return data.assign(number=data["variant"].map({v: i for i, v in enumerate(order, 1)}).astype("Int64"))


def _ci(g: pd.DataFrame, c: str) -> np.ndarray:
    """Error bar extents (percent, 2 x n) from the means ``g[c]`` to their 95% CI ``<c>_lo``..``<c>_hi`` (NaN: none)."""
    return 100 * np.vstack([g[c] - g[f"{c}_lo"], g[f"{c}_hi"] - g[c]]).astype(float).clip(min=0)


def _points(axes: Sequence[Axes], points: pd.DataFrame, x: str, styles: Mapping[str, Style], tuned: Sequence[str],
            xerr: bool = False, dotted: Iterable[str] = ()) -> dict[str, Line2D]:
    """Each variant's mean (``x`` column; y fractions) with its 95% CI in each of ``axes``: the baseline a black star,
    tuned variants ● sequential / ■ joint, ``selected`` ones (chosen on calibration) large and outlined. Returns each
    variant's key entry: number and name, naive variants marked as such, so are ``dotted`` ones (with a λ grid)."""
    handles = {}
    for i, r in points.sort_values("number").iterrows():
        base, lam = r.method == BASELINE_METHOD, r.variant in dotted
        style = Style((0.0, 0.0, 0.0), "*") if base else styles.get(r.variant, GREY)
        style = style._replace(marker="s" if r.method == "joint" else "o") if r.variant in tuned else style
        size = dict(ms=12, mec="black", mew=1.8) if r.selected else dict(ms=8, mec="white", mew=0.6)
        for ax in axes:
            ax.errorbar(points.loc[[i], x], [100 * r.y], xerr=_ci(points.loc[[i]], "x") if xerr else None,
                        yerr=_ci(points.loc[[i]], "y"), capsize=2, fmt=style.marker, color=style.color,
                        elinewidth=0.8, zorder=4 if r.selected else 3, label=f"point {r.variant}", **size)
        naive = " (naive)" if not base and variant_family(r.method, r.retention) == "naive" else ""
        handles[r.variant] = Line2D([], [], color=style.color, ls=":" if lam else "none", marker=style.marker,
                                    ms=0.75 * size["ms"], mec=size["mec"], mew=0.8 * size["mew"],
                                    label=f"{r.number}  {r.variant}{naive}{' (λ grid dotted)' if lam else ''}")
    return handles


def _number(zoom: Axes, full: Axes, points: pd.DataFrame, x: str, more: Sequence = (), others: Sequence = ()) -> None:
    """Number the ``points`` (``x`` column; y fractions) in ``zoom``'s view there, then write its labels ``more``
    (``(x, y, text, gid, colour)``); number the rest in ``full`` (``zoom``'s title lists them). Each label goes to the
    first offset (rings of 12 directions, nearest first) inside the axes that overlaps neither a marker (``points``'s
    and ``others``: ``(x, y, size in points)``) nor a label placed before it (else where it overlaps the fewest); a
    thin line joins a label set off beyond the first ring. Lays the figure out for good first."""
    (x0, x1), (y0, y1) = zoom.get_xlim(), zoom.get_ylim()
    seen = points[x].between(x0, x1) & (100 * points["y"]).between(y0, y1)
    if len(out := points[~seen & points["y"].notna()]):
        zoom.set_title(f"{zoom.get_title()}\nout of this view (see full scale): {', '.join(map(str, out['number']))}",
                       fontsize=zoom.title.get_fontsize())
    if (fig := zoom.figure).get_layout_engine() is not None:
        fig.canvas.draw()  # the Agg canvas _figure gave it
        fig.set_layout_engine("none")  # placement reads final positions
    renderer, scale = fig.canvas.get_renderer(), fig.dpi / 72
    markers = [*((getattr(r, x), 100 * r.y, 12 if r.selected else 8) for r in points.itertuples()), *others]
    offsets = [(d * np.cos(a), d * np.sin(a)) for d in (9, 15, 23, 33, 45, 60) for a in np.radians(range(0, 360, 30))]
    for ax, shown, extra in ((zoom, points[seen], more), (full, out, ())):
        frame, order = ax.get_window_extent(), shown.sort_values("selected", ascending=False, kind="stable")
        taken = [Bbox.from_bounds(px - d, py - d, 2 * d, 2 * d) for (px, py), d in (
            (ax.transData.transform((mx, my)), scale * size / 2 + 2) for mx, my, size in markers)]
        for lx, ly, text, gid, color in [*((getattr(r, x), 100 * r.y, str(r.number), "number", "black")
                                           for r in order.itertuples()), *extra]:
            ann = ax.annotate(text, (lx, ly), xytext=(0, 0), textcoords="offset points", ha="center", va="center",
                              gid=gid, fontsize=7.5 if gid == "number" else 6, color=color, fontweight="bold",
                              zorder=6, arrowprops=dict(arrowstyle="-", color=color, lw=0.5, shrinkA=1, shrinkB=3))
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer)  # the text alone, without its line
            def clashes(offset: tuple[float, float]) -> int:
                b = box.translated(*offset)
                inside = frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1)
                return sum(b.overlaps(t) for t in taken) + (0 if inside else len(taken) + 1)
            best = min(offsets, key=clashes)  # the first of the fewest
            ann.xyann = (best[0] / scale, best[1] / scale)  # in points: the same at any dpi
            ann.arrow_patch.set_visible(np.hypot(*best) > offsets[0][0] + 1)
            taken.append(box.translated(*best))


def draw_tradeoff(data: pd.DataFrame, styles: Mapping[str, Style], tuned: Sequence[str], rule: str) -> Figure:
    """:func:`tradeoff_frame` with ``number`` drawn in axes ``zoom`` (around the selected points and the baseline,
    :func:`zoom_limits`), ``full`` (0-100 %, the zoom framed) and ``key``."""
    fig, _ = _figure(13.0, 8.0)
    zoom, full, key = fig.subplot_mosaic([["zoom", "full"], ["zoom", "key"]], width_ratios=[2.3, 1],
                                         height_ratios=[1, 1.3]).values()
    points = data[data["kind"] == "point"].astype({"number": int}).assign(pct=lambda d: 100 * d["x"])
    answer = points[points["selected"] | (points["method"] == BASELINE_METHOD)]
    xlim, ylim = zoom_limits(100 * (answer if len(answer) else points)[["x", "y"]])
    front, lines = data[data["pareto"]].sort_values(["x", "y"], ascending=[True, False]), data[data["kind"] != "point"]
    for ax in (zoom, full):
        for series, g in lines.groupby("series", sort=False):
            color, kind = styles.get(series, GREY).color, g["kind"].iloc[0]
            ax.plot(100 * g["x"], 100 * g["y"], color=color, lw=1.4, alpha=0.9, zorder=2, label=f"{kind} {series}",
                    **(dict(ls=":", marker=".", ms=4) if kind == "lambda" else
                       dict(ls="--" if g["method"].iloc[0] == "joint" else "-", marker="o", ms=3.5)))
            if kind == "grid":
                ax.errorbar(100 * g["x"], 100 * g["y"], xerr=_ci(g, "x"), yerr=_ci(g, "y"), fmt="none", ecolor=color,
                            alpha=0.35, elinewidth=0.8, capsize=2, zorder=1)
        ax.plot(100 * front["x"], 100 * front["y"], color="0.25", lw=6, alpha=0.15, drawstyle="steps-pre", zorder=0)
        ax.scatter(100 * front["x"], 100 * front["y"], s=260, facecolors="none", edgecolors="0.3", linewidths=0.9,
                   zorder=5, label="pareto")
        ax.grid(alpha=0.3)
    handles = list(_points((zoom, full), points, "pct", styles, tuned, xerr=True,
                           dotted=set(lines.loc[lines["kind"] == "lambda", "series"])).values())
    zoom.set(xlim=xlim, ylim=ylim, xlabel="retained accuracy on test (%, classes not trained)",
             ylabel="target accuracy on test (%)")
    zoom.set_title(f"Target vs retained test accuracy: every knob's grid (mean over seeds, 95% CI)\n{rule}", fontsize=9)
    full.set(xlim=(-2, 102), ylim=(-2, 102))
    full.set_title("full scale (dashed frame: the zoom)", fontsize=8)
    full.tick_params(labelsize=7)
    full.add_patch(Rectangle((xlim[0], ylim[0]), xlim[1] - xlim[0], ylim[1] - ylim[0], fill=False, ls="--", lw=0.8))
    grids = lines[lines["kind"] == "grid"]
    handles += [Line2D([], [], color=styles.get(r.series, GREY).color, marker="o", ms=3.5,
                       label=f"{r.retention} over {r.knob}") for r in grids.drop_duplicates("retention").itertuples()]
    handles += [Line2D([], [], color="0.2", ls=ls, label=label) for ls, label in
                [("-", "sequential grid (tuned ●)"), ("--", "joint grid (tuned ■)")] if len(grids)]
    handles += [Line2D([], [], color="0.3", lw=5, alpha=0.3, marker="o", mfc="none", ms=12,
                       label="Pareto front (all plotted means)"),
                Line2D([], [], color="0.6", ls="none", marker="o", ms=10, mec="black", mew=1.8,
                       label="chosen on calibration (tuned knob, merging λ)")]
    key.axis("off")
    key.legend(handles=handles, loc="upper left", fontsize=7, frameon=False, borderaxespad=0)
    ends = grids.groupby("series", sort=False).nth([0, -1]).dropna(subset=["x", "y"])  # each grid's end values
    ends = ends[(100 * ends["x"]).between(*xlim) & (100 * ends["y"]).between(*ylim)]
    values = [(100 * r.x, 100 * r.y, r.value, "value", styles.get(r.series, GREY).color) for r in ends.itertuples()]
    _number(zoom, full, points, "pct", values, [(100 * r.x, 100 * r.y, 4) for r in lines.itertuples()])
    return fig


def tradeoff(a: Analysis) -> Figure | None:
    data = tradeoff_frame(a)
    if not (data["x"].notna() & data["y"].notna()).any():
        return None
    return draw_tradeoff(_numbered(a, data), variant_styles(a), a.tuned, a.selection.short())


def accuracy_vs_compute(a: Analysis) -> Figure | None:
    """A column per metric (target, overall): test accuracy vs training FLOPs, above zoomed on the tuned and merging
    points and the baseline (:func:`zoom_limits`), below at 0-100 % (the zoom shaded). The baseline, which trains
    nothing, is a line; task negation, whose target is what it forgets, is left out."""
    cost, summary, styles = agg.cost_table(a), a.summary.set_index(["variant", "metric"]), variant_styles(a)
    rows = [{"variant": v, "method": a.variant_method[v], "retention": a.variant_retention[v], "selected": v in a.tuned,
             "metric": metric, "flops": c[agg.TRAIN_FLOPS], "grid_flops": c[agg.GRID_FLOPS], "y": s["mean"],
             "y_lo": s["ci_low"], "y_hi": s["ci_high"]}
            for _, c in cost.iterrows() for v in [c["variant"]] if 0 < c[agg.TRAIN_FLOPS] < np.inf
            and a.variant_method[v] not in (BASELINE_METHOD, *OWN_RULE_METHODS)
            for metric in (TARGET, ACC) if (v, metric) in summary.index for s in [summary.loc[(v, metric)]]]
    if not rows:
        return None
    data = _numbered(a, pd.DataFrame(rows)).astype({"number": int})
    base = {m: 100 * a.baseline[m].mean() for m in (TARGET, ACC) if m in a.baseline and not a.baseline.empty}
    metrics = list(dict.fromkeys(data["metric"]))
    fig, _ = _figure(6.0 * len(metrics) + 3.2, 7.5)
    axes = fig.subplots(2, len(metrics), squeeze=False, sharex=True, height_ratios=[3, 1]).T
    for (zoom, full), metric in zip(axes, metrics):
        d = data[data["metric"] == metric]
        answer = d[d["selected"] | d["method"].isin(MERGING_METHODS)]
        (ylim,) = zoom_limits(np.r_[100 * (answer if len(answer) else d)["y"], base.get(metric, np.nan)])
        handles = _points((zoom, full), d, "flops", styles, a.tuned)
        for ax in (zoom, full):
            for r in d[d["grid_flops"] > d["flops"]].itertuples():  # hollow: the whole knob grid's training FLOPs
                color, marker = handles[r.variant].get_color(), handles[r.variant].get_marker()
                ax.plot([r.flops, r.grid_flops], [100 * r.y] * 2, color=color, lw=0.8, alpha=0.6)
                ax.plot([r.grid_flops], [100 * r.y], marker=marker, mfc="none", color=color, ms=7)
            if np.isfinite(base.get(metric, np.nan)):
                ax.axhline(base[metric], color="0.3", ls=":", lw=1)
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
        zoom.set(ylim=ylim, ylabel="test accuracy (%)", title=agg.metric_name(metric), label=f"zoom {metric}")
        full.set(ylim=(-2, 102), ylabel="full scale (%)", xlabel="training FLOPs (log scale; hollow = the whole grid)",
                 label=f"full {metric}")
        full.axhspan(*ylim, color="0.5", alpha=0.15, lw=0)
    baseline_line = Line2D([], [], color="0.3", ls=":", label="pretrained baseline")
    fig.legend(handles=[*handles.values(), *[baseline_line][:len(base)]], loc="outside right upper", fontsize=7,
               frameon=False)
    fig.suptitle("Accuracy vs training compute (mean over seeds, error bars = 95% CI; tuned variants outlined)")
    for (zoom, full), metric in zip(axes, metrics):
        _number(zoom, full, data[data["metric"] == metric], "flops")
    return fig


# --- line plots, heat maps and bars ---

def draw_family_grid(analysis: Analysis, panels: Sequence[tuple], families: Sequence[str], xlabel: str,
                     suptitle: str, stage_lines: bool = False) -> Figure:
    """Line plots, one column per family and one row per panel ``(title, data, ylabel, bounds, markers)``: the mean
    over seeds of ``data``'s ``y`` per ``x`` and ``variant`` (``stage``: its stage), band = 95% t-interval clipped to
    ``bounds`` (units of y). ``stage_lines`` marks where stage k >= 2 starts (dotted)."""
    present, styles = {v for p in panels for v in p[1]["variant"]}, variant_styles(analysis)
    groups = {f: [v for v in analysis.all_variants if v in present and analysis.family(v) == f] for f in families}
    groups = {f: vs for f, vs in groups.items() if vs}
    fig, _ = _figure(4.6 * len(groups), 2.8 * len(panels) + 1.6)
    for sub, (family, variants) in zip(fig.subfigures(1, len(groups), squeeze=False).ravel(), groups.items()):
        axes = sub.subplots(len(panels), 1, squeeze=False, sharex=True).ravel()
        for ax, (title, data, ylabel, bounds, markers) in zip(axes, panels):
            data = data[data["variant"].isin(variants)]
            # mean and band per x computed once per panel (seaborn's errorbar per point is too slow here)
            band = t_interval_groups(data, ["variant", "x"], "y", 0.95, bounds)
            for v in (v for v in variants if v in set(data["variant"])):
                b, st = band[band["variant"] == v], styles[v]
                ax.plot(b["x"], b["mean"], color=st.color, marker=st.marker if markers else None, ms=4,
                        ls=st.ls, lw=1.4, label=v)
                ax.fill_between(b["x"], b["ci_low"], b["ci_high"], color=st.color, alpha=0.15, linewidth=0)
            starts = data.groupby("stage")["x"].min() if stage_lines else pd.Series()
            for stage, start in starts[starts.index >= 2].items():
                ax.axvline(start, color="0.5", ls=":", lw=1)
                ax.annotate(f"S{stage:.0f}", (start, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="0.4",
                            ha="left", va="top")
            ax.set_title(title, fontsize=9)
            ax.set(xlabel=xlabel, ylabel=ylabel)
            ax.grid(alpha=0.3)
        if not stage_lines:
            axes[-1].xaxis.get_major_locator().set_params(integer=True)
        sub.suptitle(family, fontsize=11, fontweight="bold")
        sub.legend(handles=[Line2D([], [], color=styles[v].color, marker=styles[v].marker, linestyle=styles[v].ls,
                                   label=v) for v in variants], loc="outside lower center", frameon=False, fontsize=8)
    fig.suptitle(suptitle)
    return fig


def stage_trend(a: Analysis) -> Figure | None:
    trend = _tidy([(v, j, _sequence_stages(j.stages)) for v, j in shown_jobs(a) if j.stages is not None],
                  ["stage", "evaluated", "acc"], ["stage", "acc"], text=["evaluated"])
    if trend.empty:
        return None
    data = trend.rename(columns={"stage": "x"}).assign(y=100 * trend["acc"])
    classes = ",".join(map(str, a.task_classes))
    subsets = [("all", "overall"), ("target", f"target (classes {classes})"), ("retained", "retained (other classes)")]
    subsets += [(f"class_{k}", f"class {k}") for k in a.task_classes]
    panels = [(title, data[data["evaluated"] == ev], "test accuracy (%)", PERCENT, True) for ev, title in subsets]
    return draw_family_grid(a, panels, FAMILIES, "stage (0 = pretrained)",
                            "Test accuracy across training stages (mean over seeds, band = 95% CI)")


def training_curves(a: Analysis) -> Figure | None:
    """Fine-tuning stages (>= 1) only; merging methods are left out: their curves are the per-task experts'."""
    def panel_data(split: str, metric: str, scale: float) -> pd.DataFrame:
        parts = [(v, j, c[(c["split"].astype(str) == split) & (c["metric"].astype(str) == metric)
                          & (pd.to_numeric(c["stage"], errors="coerce") >= 1)])
                 for v, j in shown_jobs(a) if a.family(v) != "merging" and (c := j.curves) is not None and not c.empty]
        df = _tidy(parts, ["stage", "epoch", "step", "value"], ["step", "value"])
        return df.rename(columns={"step": "x"}).assign(y=scale * df["value"])
    loss, val = panel_data("train", "loss", 1.0), panel_data("val", "acc", 100.0)
    if loss.empty:
        return None
    panels = [("train loss (nats)", loss, "train loss", (0.0, np.inf), False)]  # a loss is >= 0
    panels += [("validation accuracy", val, "validation accuracy (%)", PERCENT, True)] if not val.empty else []
    return draw_family_grid(a, panels, ("naive", "retention"), "global step", "Training dynamics of fine-tuning "
                            "(mean over seeds, band = 95% CI; dotted = start of stage Sk)", stage_lines=True)


def class_heatmap(a: Analysis) -> Figure | None:
    classes, b = [class_metric(k) for k in range(10)], a.baseline
    rows = {BASELINE_LABEL: [b[c].mean() if c in b else np.nan for c in classes]} if a.baseline_row else {}
    rows.update({v: [a.seeds.mean(c, v) for c in classes] for v in a.shown})
    values = 100 * pd.DataFrame.from_dict(rows, orient="index", columns=list(range(10))).astype(float)
    if values.empty or values.isna().all().all():
        return None
    fig, (ax,) = _figure(9.5, 0.4 * len(values) + 2.2, 1)
    sns.heatmap(values, ax=ax, annot=True, fmt=".1f", cmap="viridis", vmin=_zoomed_floor(values.to_numpy().ravel()),
                vmax=100, cbar_kws={"label": "test accuracy (%)"}, annot_kws={"fontsize": 7})
    families = [a.family(v) for v in values.index]
    for row in (i for i in range(1, len(families)) if families[i] != families[i - 1]):
        ax.axhline(row, color="white", lw=3)
    ax.set_xticklabels([f"{c}*" if c in a.task_classes else str(c) for c in values.columns])
    ax.set(xlabel="true class (* = task class)", ylabel="variant", title="Final accuracy per class (mean over seeds)")
    ax.tick_params(axis="y", labelsize=8)
    return fig


def confusion(a: Analysis) -> Figure | None:
    found: dict[str, list[Job]] = {}  # variant: its jobs with a confusion matrix
    for variant, job in shown_jobs(a):
        if job.confusion is not None:
            found.setdefault(variant, []).append(job)
    if not found:
        return None
    fig, axes = _wrapped(len(found), 4, 3.4, 3.5, pad=0.8)
    for ax, (variant, jobs) in zip(axes, found.items()):
        counts = sum(j.confusion for j in jobs)  # summed over seeds
        norm = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # a class without samples: 0
        # seaborn's heat map (text dark on light cells, by its luminance rule), without sns.heatmap: that draws the
        # whole figure once per call to check its tick labels (compare.py on the reference study: 17.4 s, now 12.4 s)
        mesh, ticks = ax.pcolormesh(norm, cmap="Blues", vmin=0, vmax=100), np.arange(len(norm)) + 0.5
        for (i, k), value in np.ndenumerate(norm):
            if value >= 0.5:  # blank below: text is slow to draw
                ax.text(k + 0.5, i + 0.5, f"{value:.0f}" if value >= 9.95 else f"{value:.1f}", ha="center",
                        va="center", fontsize=5.5, color=".15" if relative_luminance(mesh.to_rgba(value)) > .408 else "w")
        ax.set(xticks=ticks, yticks=ticks, xticklabels=range(len(norm)), yticklabels=range(len(norm)), aspect="equal",
               xlim=(0, len(norm)), ylim=(len(norm), 0))
        ax.spines[:].set_visible(False)
        ax.tick_params(labelsize=6)
        ax.set_title(f"{variant}\n(stage {max(j.confusion_stage for j in jobs)}, {len(jobs)} seed(s))", fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.colorbar(axes[0].collections[0], ax=axes.tolist(), label="% of true class", shrink=0.6)
    fig.suptitle("Final confusion matrices (summed over seeds, rows normalised per true class; blank < 0.5%)")
    return fig


def calibration(a: Analysis) -> Figure | None:
    parts = [(a.labels[j.rel], j, j.calibration) for j in a.finished if j.calibration is not None]
    cal = _tidy(parts, ["lambda", "acc", "acc_target", "acc_retained"], ["lambda"])
    if cal.empty:
        return None
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
        for lam in sorted({float(j.metrics["lambda"]) for v, j, _ in parts
                           if v == variant and is_finite_number((j.metrics or {}).get("lambda"))}):
            ax.axvline(lam, color="k", ls=":", lw=1)
        ax.set(title=variant, xlabel="merge coefficient λ", ylabel="calibration accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Calibration of merging methods (mean over seeds; dotted = selected λ)")
    return fig


def headline_bars(a: Analysis) -> Figure | None:
    """Each y-axis starts at a round value below its lowest bar or CI (0 when one is near 0)."""
    variants, metrics = [*a.baseline_row, *a.shown], agg.HEADLINE_METRICS
    families = [a.family(v) for v in variants]
    x = np.arange(len(variants)) + np.cumsum([0] + [f != g for f, g in zip(families, families[1:])]) * 0.6
    colors = {v: BASELINE_COLOR if v == BASELINE_LABEL else FAMILY_COLORS[f] for v, f in zip(variants, families)}
    seeds = pd.DataFrame([(m, v, pos, 100 * value) for m in metrics for v, pos in zip(variants, x) for value in (
        a.baseline.get(m, pd.Series()).dropna() if v == BASELINE_LABEL else a.seeds.get(m, v).values())],
        columns=["metric", "variant", "x", "y"])
    if seeds.empty:
        return None
    fig, axes = _figure(max(8.0, 0.42 * len(variants) + 2.5), 2.6 * len(metrics) + 2.0, len(metrics), sharex=True)
    for ax, metric in zip(axes, metrics):
        sns.barplot(seeds[seeds["metric"] == metric], x="x", y="y", hue="variant", palette=colors, native_scale=True,
                    dodge=False, saturation=1, edgecolor="white", errorbar=t_errorbar(PERCENT), capsize=0.2,
                    err_kws={"color": "black", "linewidth": 1.5}, legend=False, ax=ax)
        floor = _zoomed_floor(np.r_[[p.get_height() for p in ax.patches], *[line.get_ydata() for line in ax.lines]])
        ax.set_ylim(floor, min(100.5, max(ax.dataLim.y1, floor) + 1))
        ax.set(title=agg.metric_name(metric), ylabel="test accuracy (%)", xlabel="")
        ax.grid(axis="y", alpha=0.3)
        if floor > 0:
            ax.text(1.0, 1.01, f"y-axis starts at {floor:.0f}%", transform=ax.transAxes, ha="right", fontsize=8,
                    color="0.35")
    axes[-1].set_xticks(x, variants, rotation=60, ha="right", fontsize=8)
    fig.legend(handles=[Patch(color=FAMILY_COLORS[f], label=f) for f in dict.fromkeys(families)],
               loc="outside upper right", frameon=False, fontsize=8)
    fig.suptitle("Headline test accuracies (mean over seeds, error bars = 95% CI)")
    return fig


#: one figure, ``plots/<name>.png``: ``draw(analysis)`` gives it, or None (skipped: "needs <needs>"). ``section``:
#: where the report puts it: "answer" (the first figure), "cost" (beside the cost table) or "plots". Its title and
#: caption are in ``templates/figures.md.j2``.
PlotSpec = namedtuple("PlotSpec", "name draw needs section", defaults=["plots"])
SPECS: tuple[PlotSpec, ...] = (
    PlotSpec("tradeoff", tradeoff, "test target and retained accuracy in a finished job", "answer"),
    PlotSpec("accuracy_vs_compute", accuracy_vs_compute, "cost/train_flops in metrics.json", "cost"),
    PlotSpec("stage_trend", stage_trend, "stages.csv in a finished job"),
    PlotSpec("class_heatmap", class_heatmap, "per-class accuracies in metrics.json"),
    PlotSpec("confusion", confusion, "confusion/stage_<k>.csv of the final stage"),
    PlotSpec("training_curves", training_curves, "train loss in curves.csv of a naive or retention job"),
    PlotSpec("calibration", calibration, "a merging method with calibration.csv"),
    PlotSpec("headline_bars", headline_bars, "a finished job"),
)


def make_all_plots(analysis: Analysis, out_dir: Path, specs: Sequence[PlotSpec] = SPECS) -> list[PlotResult]:
    """Draw every figure of ``specs`` into ``out_dir``; one :class:`PlotResult` per figure drawn or skipped."""
    results: list[PlotResult] = []
    for spec in specs:
        path, note = None, f"nothing to plot: needs {spec.needs}"
        try:
            if (fig := spec.draw(analysis)) is not None:
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=DPI)  # the layout already fits everything in
                path, note = atomic_write_bytes(Path(out_dir) / f"{spec.name}.png", buf.getvalue()), ""
        except Exception as exc:  # one broken figure must not sink the report
            log.warning("plot %s failed: %s", spec.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            note = f"plot failed: {exc}"
        results.append(PlotResult(spec.name, path, note, spec.section))
    return results
