"""Tests of ``seqft_lightning.compare.plots``: what each figure draws (its series, points, marked Pareto front,
zoom and labels), read back from the matplotlib objects and checked against numbers computed here from the runs.
The sweeps are the hand-made ones of ``tests/test_compare.py``."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare import plots, report
from seqft_lightning.compare.load import load_jobs
from tests.test_compare import build_study, build_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> agg.Analysis:
    """Naive, retention and merging variants with stages, curves, confusion and calibration files."""
    return agg.analyse(load_jobs(build_sweep(tmp_path_factory.mktemp("sweep"))))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> agg.Analysis:
    """Knob grids tuned on calibration, naive variants far from the answer, a merging method with its λ grid."""
    return agg.analyse(load_jobs(build_study(tmp_path_factory.mktemp("study"))))


def axes(fig, label: str):
    return next(ax for ax in fig.axes if ax.get_label() == label)


def point_xy(ax, variant: str) -> tuple[float, float]:
    """Where ``variant``'s point (its error bar container's marker) is drawn."""
    container = next(c for c in ax.containers if c.get_label() == f"point {variant}")
    return tuple(container.lines[0].get_xydata()[0])


def number_labels(fig) -> dict:
    """``{axes: [(text, box in pixels), ...]}`` of the number and grid-value labels, as drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return {ax: [(t, Text.get_window_extent(t, renderer)) for t in ax.texts if t.get_gid() in ("number", "value")]
            for ax in fig.axes}


def assert_labels_apart(fig) -> None:
    for ax, labels in number_labels(fig).items():
        frame = ax.get_window_extent()
        for (s, a), (t, b) in itertools.combinations(labels, 2):
            assert not a.overlaps(b), (ax.get_label(), s.get_text(), t.get_text())
        for t, box in labels:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, t.get_text()


def key_numbers(legend) -> dict[int, str]:
    """``{number: name}`` of a key's numbered entries."""
    texts = [t.get_text().split("  ", 1) for t in legend.get_texts()]
    return {int(n): name for n, *rest in texts if n.isdigit() for name in rest}


def test_every_figure_is_drawn(sweep: agg.Analysis, study: agg.Analysis, tmp_path: Path):
    for name, analysis in (("sweep", sweep), ("study", study)):
        results = plots.make_all_plots(analysis, tmp_path / name)
        assert [r.key for r in results] == [s.name for s in plots.SPECS]
        assert list(report._ENV.get_template("figures.md.j2").module.figures) == [s.name for s in plots.SPECS]
        for r, spec in zip(results, plots.SPECS):
            assert r.note == "" and r.section == spec.section, (name, r.key, r.note)
            assert imread(r.path).ndim == 3  # a PNG image
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(f"{s.name}.png" for s in plots.SPECS)


def test_a_figure_without_data_or_that_fails_is_skipped_with_a_note(sweep: agg.Analysis, tmp_path: Path):
    def broken(analysis: agg.Analysis):
        raise RuntimeError("boom")
    specs = [plots.PlotSpec("empty", lambda a: None, "something absent"), plots.PlotSpec("broken", broken, "x")]
    empty, failed = plots.make_all_plots(sweep, tmp_path, specs)
    assert empty.path is None and empty.note == "nothing to plot: needs something absent"
    assert failed.path is None and failed.note == "plot failed: boom"
    assert not any(tmp_path.iterdir())


def test_tradeoff_draws_every_grid_and_point_and_marks_the_pareto_front(study: agg.Analysis):
    frame = plots.tradeoff_frame(study)
    assert {"grid", "lambda", "point"} <= set(frame["kind"])
    fig = plots.tradeoff(study)
    for name in ("zoom", "full"):
        ax = axes(fig, name)
        lines = {line.get_label(): line.get_xydata() for line in ax.lines}
        for (kind, series), g in frame[frame["kind"] != "point"].groupby(["kind", "series"]):
            np.testing.assert_allclose(lines[f"{kind} {series}"], 100 * g[["x", "y"]].to_numpy())
        for r in frame[frame["kind"] == "point"].itertuples():
            assert point_xy(ax, r.variant) == pytest.approx((100 * r.x, 100 * r.y)), r.variant
        rings = next(c for c in ax.collections if c.get_label() == "pareto").get_offsets()
        front = frame[frame["pareto"]]
        assert 0 < len(front) < len(frame)
        np.testing.assert_allclose(sorted(map(tuple, rings)), sorted(zip(100 * front["x"], 100 * front["y"])))
    assert axes(fig, "full").get_xlim() == (-2, 102) and axes(fig, "full").get_ylim() == (-2, 102)


def test_tradeoff_zooms_on_the_answer_and_numbers_every_point_once(study: agg.Analysis):
    frame = plots.tradeoff_frame(study)
    points = frame[frame["kind"] == "point"].set_index("variant")
    fig = plots.tradeoff(study)
    zoom, full = axes(fig, "zoom"), axes(fig, "full")
    (x0, x1), (y0, y1) = zoom.get_xlim(), zoom.get_ylim()
    assert x1 - x0 < 15 and y1 - y0 < 15  # a few points, not 0-100
    seen = lambda v: x0 <= 100 * points.loc[v, "x"] <= x1 and y0 <= 100 * points.loc[v, "y"] <= y1
    assert seen("baseline") and seen("sequential+ewc (tuned)") and seen("task_arithmetic")
    assert not seen("sequential method.reset_optimizer=false")  # naive sequential: far off, at full scale only
    key = key_numbers(axes(fig, "key").get_legend())
    assert sorted(key.values()) == sorted(
        v + (" (naive)" if v in ("joint", "sequential method.reset_optimizer=false",
                                 "sequential method.reset_optimizer=true") else "")
        + (" (λ grid dotted)" if v == "task_arithmetic" else "") for v in points.index)
    numbered = {ax: {int(t.get_text()): t.xy for t, _ in labels if t.get_gid() == "number"}
                for ax, labels in number_labels(fig).items()}
    assert set(numbered[zoom]).isdisjoint(numbered[full]) and set(numbered[zoom]) | set(numbered[full]) == set(key)
    for ax in (zoom, full):
        for n, xy in numbered[ax].items():
            variant = key[n].split(" (")[0] if key[n] not in points.index else key[n]
            assert xy == pytest.approx((100 * points.loc[variant, "x"], 100 * points.loc[variant, "y"])), key[n]
    out = ", ".join(map(str, sorted(numbered[full])))
    assert zoom.get_title().endswith(f"out of this view (see full scale): {out}")
    assert_labels_apart(fig)


def crowded_frame(n: int = 14) -> pd.DataFrame:
    """``n`` selected points within 0.3 points of each other, a knob grid through them and one naive outlier."""
    rng = np.random.default_rng(0)
    x, y = 0.97 + 0.003 * rng.random(n), 0.98 + 0.003 * rng.random(n)
    rows = [dict(kind="point", series=f"v{i} (tuned)", variant=f"v{i} (tuned)", method="sequential", retention="ewc",
                 knob="", value="", x=x[i], y=y[i], selected=True, number=i + 2) for i in range(n)]
    rows += [dict(kind="point", series="sequential", variant="sequential", method="sequential", retention="none",
                  knob="", value="", x=0.02, y=0.35, selected=False, number=1)]
    rows += [dict(kind="grid", series="v0 (tuned)", variant=f"v0 k={k}", method="sequential", retention="ewc",
                  knob="k", value=str(k), x=x[0] - 0.001 * k, y=y[0] + 0.001 * k, selected=False) for k in range(4)]
    frame = pd.DataFrame(rows).assign(n=1, x_lo=np.nan, x_hi=np.nan, y_lo=np.nan, y_hi=np.nan)
    return frame.assign(pareto=plots.pareto_front(frame["x"], frame["y"]))


def test_crowded_points_get_labels_that_do_not_overlap():
    frame = crowded_frame()
    fig = plots.draw_tradeoff(frame, {}, [], "rule")
    zoom = axes(fig, "zoom")
    (x0, x1), (y0, y1) = zoom.get_xlim(), zoom.get_ylim()
    assert 95 <= x0 and x1 <= 99 and 96 <= y0 and y1 <= 100.5  # around the crowd, not the outlier
    assert_labels_apart(fig)
    assert sorted(int(t.get_text()) for t in zoom.texts if t.get_gid() == "number") == list(range(2, 16))
    assert [t.get_text() for t in axes(fig, "full").texts if t.get_gid() == "number"] == ["1"]
    assert key_numbers(axes(fig, "key").get_legend())[1] == "sequential (naive)"


def test_accuracy_vs_compute_draws_each_variant_at_its_flops_and_zooms_on_the_answer(study: agg.Analysis):
    cost = agg.cost_table(study).set_index("variant")
    summary = study.summary.set_index(["variant", "metric"])["mean"]
    fig = plots.accuracy_vs_compute(study)
    drawn = [v for v in study.shown if v != "baseline"]
    key = key_numbers(fig.legends[0])
    number = {name.split(" (naive)")[0]: n for n, name in key.items()}
    for metric in (agg.TARGET, agg.ACC):
        zoom, full = axes(fig, f"zoom {metric}"), axes(fig, f"full {metric}")
        for ax in (zoom, full):
            for v in drawn:
                assert point_xy(ax, v) == pytest.approx((cost.loc[v, agg.TRAIN_FLOPS], 100 * summary[(v, metric)]))
        (y0, y1) = zoom.get_ylim()
        assert y0 <= 100 * study.baseline[metric].mean() <= y1 and y1 - y0 < 15 and full.get_ylim() == (-2, 102)
        out = [number[v] for v in drawn if not y0 <= 100 * summary[(v, metric)] <= y1]
        assert "sequential+ewc (tuned)" not in out and number["sequential method.reset_optimizer=false"] in out
        assert zoom.get_title().endswith(f"out of this view (see full scale): {', '.join(map(str, out))}")
        assert sorted(int(t.get_text()) for t in full.texts if t.get_gid() == "number") == sorted(out)
    assert "sequential method.reset_optimizer=true (naive)" in key.values() and "joint+ewc (tuned)" in key.values()
    assert_labels_apart(fig)


def family_lines(fig) -> dict[str, dict[str, np.ndarray]]:
    """``{panel title: {variant: (x, y) points}}`` over every family column."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for ax in (ax for sub in fig.subfigs for ax in sub.axes):
        out.setdefault(ax.get_title(), {}).update({line.get_label(): line.get_xydata() for line in ax.lines
                                                   if not line.get_label().startswith("_")})
    return out


def jobs_of(analysis: agg.Analysis, variant: str) -> list:
    return [j for j in analysis.finished if analysis.labels[j.rel] == variant]


def test_stage_trend_draws_the_mean_over_seeds_of_each_stage(sweep: agg.Analysis):
    lines = family_lines(plots.stage_trend(sweep))
    for variant in ("joint", "sequential+ewc", "task_arithmetic"):
        stages = pd.concat([plots._sequence_stages(j.stages) for j in jobs_of(sweep, variant)])
        want = stages[stages["evaluated"] == "all"].groupby("stage")["acc"].mean()
        np.testing.assert_allclose(lines["overall"][variant], np.c_[want.index, 100 * want.to_numpy()])


def test_training_curves_draw_fine_tuning_and_leave_out_merging_experts(sweep: agg.Analysis):
    lines = family_lines(plots.training_curves(sweep))
    assert set(lines) == {"train loss (nats)", "validation accuracy"}
    assert "task_arithmetic" not in lines["train loss (nats)"] and "sequential+ewc" in lines["train loss (nats)"]
    assert "expert" in report._ENV.get_template("figures.md.j2").module.figures["training_curves"][1]
    curves = pd.concat([j.curves for j in jobs_of(sweep, "joint")])
    loss = curves[(curves["split"] == "train") & (curves["metric"] == "loss") & (curves["stage"] >= 1)]
    want = loss.groupby("step")["value"].mean()
    np.testing.assert_allclose(lines["train loss (nats)"]["joint"], np.c_[want.index, want.to_numpy()])


def test_headline_bars_and_class_heatmap_draw_the_summary_means(sweep: agg.Analysis):
    fig = plots.headline_bars(sweep)
    variants = ["baseline (pretrained)", *sweep.shown]
    summary = sweep.summary.set_index(["variant", "metric"])["mean"]
    for ax, metric in zip(fig.axes, agg.HEADLINE_METRICS):
        assert [p.get_height() for p in ax.patches] == pytest.approx([100 * summary[(v, metric)] for v in variants])
    mesh = plots.class_heatmap(sweep).axes[0].collections[0].get_array().reshape(-1, 10)
    want = [[sweep.seeds.mean(agg.class_metric(k), v) for k in range(10)] for v in sweep.shown]
    np.testing.assert_allclose(mesh[1:], 100 * np.array(want))  # row 0: the pretrained baseline


def test_confusion_rows_are_percent_of_each_true_class(sweep: agg.Analysis):
    fig = plots.confusion(sweep)
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]  # not the colour bar
    assert [ax.get_title().split("\n")[0] for ax in shown] == [v for v in sweep.shown if jobs_of(sweep, v)]
    counts = sum(j.confusion for j in jobs_of(sweep, "joint"))
    percent = 100 * counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shown[0].collections[0].get_array().reshape(counts.shape), percent)
    # every cell of at least 0.5 % is written in it (row i, column k: at (k + 0.5, i + 0.5)), the others blank
    written = {(int(t.get_position()[1]), int(t.get_position()[0])): float(t.get_text()) for t in shown[0].texts}
    assert set(written) == {tuple(ik) for ik in np.argwhere(percent >= 0.5)}
    assert all(abs(value - percent[ik]) <= 0.05 or (percent[ik] >= 9.95 and abs(value - percent[ik]) <= 0.5)
               for ik, value in written.items())


def test_calibration_draws_each_series_and_the_chosen_lambda(sweep: agg.Analysis):
    (ax,) = [ax for ax in plots.calibration(sweep).axes if ax.get_title() == "task_arithmetic"]
    cal = pd.concat([j.calibration for j in jobs_of(sweep, "task_arithmetic")]).groupby("lambda").mean()
    curves = [line.get_xydata() for line in ax.lines if len(line.get_xydata()) == len(cal)]
    for column in ("acc_target", "acc_retained", "acc"):
        assert any(np.allclose(c, np.c_[cal.index, 100 * cal[column]]) for c in curves), column
    chosen = {j.metrics["lambda"] for j in jobs_of(sweep, "task_arithmetic")}
    assert {line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"} == chosen
