"""Tests of compare's referee duties on hand-made run folders (helpers of ``test_compare``): the best method's
unbiased estimate on the estimation part, choices on a grid edge, Holm's correction, Wilcoxon only where it can
decide, diverged runs left out, and seeds that never tell variants apart.

Expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare import cli, report
from seqft_lightning.compare.load import load_jobs
from seqft_lightning.compare.stats import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, holm, verdict, wilcoxon_min_pairs
from seqft_lightning.compare.variants import is_knob_key, knob_grids, variant_labels
from seqft_lightning.contract import is_seed_key
from seqft_lightning.contract import METRICS_FILE
from tests.test_compare import (BASE, JOINT_ACC, JOINT_TARGET, SEQ_ACC, SEQ_TARGET, build_study, make_config,
                                metric_dict, paired_arrays, study_metrics, tuned_choices, write_job)

BEST = "joint+ewc (tuned)"  # the best method of the hand-made study (test_compare.test_best_method_under_the_rule)
#: joint+ewc's chosen jobs' calibration (target, retained) per seed: lambda 1, 1, 100 (test_compare.EXPECTED_CHOICE)
BEST_CAL = {0: (0.96, 0.96), 1: (0.99, 0.95), 2: (0.975, 0.952)}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made study of test_compare (not compared yet; copy it before changing it)."""
    return build_study(tmp_path_factory.mktemp("referee"))


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sweep, tmp_path / sweep.name, ignore=shutil.ignore_patterns("compare")))


def edit_metrics(sweep: Path, edit) -> None:
    """``edit(job folder name, metrics)`` on every metrics.json of ``sweep``, in place."""
    for path in sorted(sweep.glob(f"*/{METRICS_FILE}")):
        metrics = json.loads(path.read_text())
        edit(path.parent.name, metrics)
        path.write_text(json.dumps(metrics))


def add_estimation(sweep: Path, value) -> None:
    """Every metric block gains the ``estimation/*`` twin of each ``calibration/*`` key (not the selection score),
    ``value(job, key, calibration value)``."""
    def edit(job: str, metrics: dict) -> None:
        for block in [metrics["final"], metrics["baseline"], *metrics["per_stage"]]:
            for key in [k for k in block if k.startswith("calibration/") and k != agg.SELECTION_SCORE]:
                block[key.replace("calibration/", "estimation/", 1)] = value(job, key, block[key])
    edit_metrics(sweep, edit)


def outputs(analysis: agg.Analysis, sweep: Path) -> Path:
    """The text outputs of ``analysis`` (no plots) in ``sweep/compare``."""
    report.write_outputs(analysis, sweep, sweep / "compare", [])
    return sweep / "compare"


# --------------------------------------------------------------------------- A: the best method's estimate

def test_estimation_part_moves_the_estimate_never_the_choice_selection_part_moves_the_choice(study, tmp_path):
    sweep = copy_of(study, tmp_path)
    old = agg.analyse(load_jobs(sweep))
    assert old.best["variant"] == BEST and old.best["n_estimate"] == 0  # runs older than the split: no estimate
    assert all(math.isnan(v) for v in old.best["estimate"].values())

    # estimation = selection - 2 pp on target, - 1 pp on retained: estimate 97.5 - 2 = 95.5 % target
    add_estimation(sweep, lambda job, key, v: v - (0.02 if key.endswith("acc_target") else 0.01))
    shifted = agg.analyse(load_jobs(sweep))
    assert shifted.best["variant"] == BEST and tuned_choices(shifted) == tuned_choices(old)
    assert shifted.best["n_estimate"] == 3
    assert shifted.best["selected"]["acc_target"] == pytest.approx(np.mean([t for t, _ in BEST_CAL.values()]))
    assert shifted.best["estimate"]["acc_target"] == pytest.approx(0.975 - 0.02)
    assert shifted.best["estimate"]["acc_retained"] == pytest.approx(np.mean([r for _, r in BEST_CAL.values()]) - 0.01)
    assert shifted.best["optimism"]["acc_target"] == pytest.approx(-0.02)  # estimation − selection
    assert shifted.best["optimism"]["acc_retained"] == pytest.approx(-0.01)

    # any other estimation numbers: another estimate, the same choices
    rng = np.random.default_rng(1)
    add_estimation(sweep, lambda job, key, v: float(rng.uniform(0.1, 0.9)))
    scrambled = agg.analyse(load_jobs(sweep))
    assert scrambled.best["variant"] == BEST and tuned_choices(scrambled) == tuned_choices(old)
    chosen = scrambled.choices[scrambled.choices["variant"] == BEST]
    assert scrambled.best["estimate"]["acc_target"] == pytest.approx(chosen["estimation/acc_target"].mean())
    assert scrambled.best["estimate"]["acc_target"] != pytest.approx(shifted.best["estimate"]["acc_target"])

    # the selection part alone: task_arithmetic's calibration target 0.94 -> 0.99 (retained 0.97 still within δ)
    def better_merge(job: str, metrics: dict) -> None:
        if metrics["method"] == "task_arithmetic":
            metrics["final"]["calibration/acc_target"] = 0.99
    edit_metrics(sweep, better_merge)
    moved = agg.analyse(load_jobs(sweep))
    assert moved.best["variant"] == "task_arithmetic"
    assert tuned_choices(moved) == tuned_choices(old)  # the knob choices read other jobs


def test_estimation_columns_and_report(study, tmp_path):
    sweep = copy_of(study, tmp_path)
    add_estimation(sweep, lambda job, key, v: v - 0.02)
    out = outputs(agg.analyse(load_jobs(sweep)), sweep)
    csv = pd.read_csv(out / "summary.csv")
    for col in (*agg.ESTIMATION_METRICS, *(f"baseline/{c}" for c in agg.ESTIMATION_METRICS), "diverged"):
        assert col in csv.columns, col
    assert csv["baseline/estimation/acc_retained"].eq(0.96 - 0.02).all()
    tuned = pd.read_csv(out / "tuned.csv").set_index(["variant", "seed"])
    row = tuned.loc[(BEST, 2)]  # lambda 100: calibration (0.975, 0.952)
    assert row["estimation/acc_target"] == pytest.approx(0.955)
    assert row["estimation/acc_retained"] == pytest.approx(0.932)
    assert row["baseline/estimation/acc_retained"] == pytest.approx(0.94)
    md = (out / "report.md").read_text()
    # overall = 0.3 target + 0.7 retained: selection 96.00, 96.20, 95.89 -> mean 96.03, minus 2 pp
    assert f"**Best method under the selection rule: `{BEST}`** — estimate on the estimation part (%): " \
           "accuracy 94.03; target acc (pooled) 95.50; retained acc 93.40 (mean over 3 seed(s))" in md
    assert "| estimation − selection (pp; negative: optimism of the choice) | -2.00 | -2.00 | -2.00 |" \
        in re.sub(" {2,}", " ", md)  # to_markdown pads table cells
    assert "**selection part** of the calibration split" in md and "disjoint **estimation part**" in md
    assert "Test numbers are for reporting only" in md


# --------------------------------------------------------------------------- B: grid edges

def build_edges(root: Path) -> Path:
    """Seeds 0-1: sequential+freeze over retention.trainable [output] / [1, output], and task_arithmetic choosing
    λ = 0 (seed 0) and λ = 1 (seed 1) on the grid 0, 0.25, ..., 1 of its calibration.csv."""
    sweep, n = root / "edges", iter(range(100))
    base = study_metrics((0.97, 0.96), (0.96, 0.965))  # baseline calibration retained 0.96: floor 0.95
    # calibration (target, retained): seed 0 keeps only [output] within δ; seed 1 both, [1, output] the better target
    cal = {0: {1: (0.95, 0.96), 2: (0.97, 0.90)}, 1: {1: (0.95, 0.96), 2: (0.97, 0.955)}}
    for s in range(2):
        for trainable in (["output"], [1, "output"]):
            cfg = make_config("sequential", [[3], [4], [7]], s, retention="Freeze")
            del cfg["retention"]["strength"]
            cfg["retention"]["trainable"] = trainable
            write_job(sweep / str(next(n)), cfg, study_metrics(cal[s][len(trainable)], (0.9, 0.9)), base)
        write_job(sweep / str(next(n)), make_config("task_arithmetic", [[3], [4], [7]], s),
                  study_metrics((0.94, 0.97), (0.93, 0.96)), base, lam=float(s))
    return sweep


def test_choices_on_a_grid_edge_are_flagged_limit_points_named(tmp_path):
    sweep = build_edges(tmp_path)
    out = outputs(agg.analyse(load_jobs(sweep)), sweep)
    tuned = pd.read_csv(out / "tuned.csv", keep_default_na=False).set_index(["variant", "seed"])
    freeze, merge = "sequential+freeze (tuned)", "task_arithmetic"
    assert tuned.loc[(freeze, 0), "chosen"] == '["output"]' and tuned.loc[(freeze, 1), "chosen"] == '[1,"output"]'
    expected = {(freeze, 0): (True, "low", agg.LIMIT_POINTS[1][2]), (freeze, 1): (True, "high", ""),
                (merge, 0): (True, "low", "λ = 0 is the pretrained baseline itself"), (merge, 1): (True, "high", "")}
    for key, want in expected.items():
        assert tuple(tuned.loc[key, ["on_edge", "edge", "limit_point"]]) == want, key
    md = (out / "report.md").read_text()
    assert ("**Choices on a grid edge** (the smallest or largest value of that seed's grid, not a limit point: the "
            "best setting may lie beyond the grid, so widen it): `sequential+freeze (tuned)` (retention.trainable): "
            's1: [1,"output"] (high); `task_arithmetic` (lambda): s1: 1 (high).') in md
    assert ("**Limit points** (an edge that ends the knob's range by construction, not a censored search): "
            '`sequential+freeze (tuned)` at retention.trainable = ["output"] on seed(s) 0 (only the output layer '
            "trains: the smallest trainable set; training less is the baseline); `task_arithmetic` at lambda = 0 on "
            "seed(s) 0 (λ = 0 is the pretrained baseline itself).") in md


def test_interior_choices_are_not_on_an_edge(study, tmp_path):
    analysis = agg.analyse(load_jobs(study))
    edges = {(r.variant, int(r.seed)): r.edge for r in analysis.choices.itertuples()}
    # grid 1, 100, 10000 (test_compare.EXPECTED_CHOICE); task_arithmetic chose λ = 0.5 of 0, 0.25, ..., 1
    assert edges == {("sequential+ewc (tuned)", 0): "", ("sequential+ewc (tuned)", 1): "high",
                     ("sequential+ewc (tuned)", 2): "high", ("joint+ewc (tuned)", 0): "low",
                     ("joint+ewc (tuned)", 1): "low", ("joint+ewc (tuned)", 2): "",
                     **{("task_arithmetic", s): "" for s in range(3)}}
    assert not analysis.choices["limit_point"].any()
    assert agg.grid_edge("lambda", 0.0, 0, 1) == {"on_edge": True, "edge": "low", "limit_point": agg.LIMIT_POINTS[0][2]}
    assert agg.grid_edge("retention.lambda_", 0.0, 0, 0)["on_edge"] is False  # no grid, no edge
    md = (outputs(analysis, copy_of(study, tmp_path)) / "report.md").read_text()
    assert "`joint+ewc (tuned)` (retention.lambda_): s0: 1 (low), s1: 1 (low); `sequential+ewc (tuned)` " \
           "(retention.lambda_): s1: 10000 (high), s2: 10000 (high)." in md
    assert "**Limit points**" not in md


# --------------------------------------------------------------------------- C: Holm

def test_holm_matches_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 * 0.005 = 0.02, 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.02, math.nan, 0.5])  # an undefined p-value is no test: m = 2
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.5)
    assert holm([0.3, 0.3, 0.9]) == pytest.approx([0.9, 0.9, 0.9])  # ties; capped at 1 by the running maximum
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]).size == 0


@pytest.mark.parametrize(("ci", "p", "expected"), [
    ((0.01, 0.03), 0.01, SUPPORTED), ((0.01, 0.03), 0.06, INCONCLUSIVE), ((-0.03, -0.01), 0.049, NOT_SUPPORTED),
    ((-0.03, -0.01), 0.05, INCONCLUSIVE), ((-0.01, 0.03), 0.001, INCONCLUSIVE), ((0.01, 0.03), math.nan, INCONCLUSIVE),
])
def test_verdict_needs_ci_and_adjusted_p(ci, p, expected):
    assert verdict(*ci, 5, pvalue=p) == expected


def test_holm_families_of_the_report(study, tmp_path):
    analysis = agg.analyse(load_jobs(study))
    family = [*analysis.hypothesis, *analysis.tuned_hypothesis]
    # 2 plain sequential variants x joint + 1 tuned pair, 2 metrics each
    assert len(family) == 6 and {r["family_size"] for r in family} == {6}
    assert [r["holm_pvalue"] for r in family] == pytest.approx(list(holm([r["t_pvalue"] for r in family])))
    assert len(analysis.comparisons) == 33 and {r["family_size"] for r in analysis.comparisons} == {33}
    # tuned pair, target: four p = 0 of constant differences rank first, so 0.0131 is multiplied by 6 - 4 = 2
    target = next(r for r in analysis.tuned_hypothesis if r["metric"] == agg.TARGET)
    assert target["holm_pvalue"] == pytest.approx(2 * target["t_pvalue"]) and target["verdict"] == SUPPORTED
    # vs baseline: raw p = 0.0284 with the CI below 0, Holm over 33 comparisons: 0.312, inconclusive
    row = next(r for r in analysis.comparisons if r["variant"] == "sequential+ewc (tuned)"
               and r["reference"] == "baseline" and r["metric"] == agg.TARGET)
    assert row["ci_high"] < 0 and row["t_pvalue"] < 0.05 and row["holm_pvalue"] > 0.05
    assert row["verdict"] == INCONCLUSIVE
    hyp = (outputs(analysis, copy_of(study, tmp_path)) / "hypothesis.md").read_text()
    assert "Holm's step-down correction over one family: every sequential-vs-joint test in this report (m = 6)" in hyp
    assert "every variant-vs-reference comparison in this report (m = 33)" in hyp
    assert "| paired t p | Holm p | Wilcoxon p |" in re.sub(" {2,}", " ", hyp)  # to_markdown pads table cells


# --------------------------------------------------------------------------- D: Wilcoxon only where n allows

def test_wilcoxon_only_from_six_non_zero_differences():
    assert wilcoxon_min_pairs() == 6 and wilcoxon_min_pairs(0.1) == 5  # 2/2^5 = 0.0625, 2/2^6 = 0.03125
    five = paired_arrays([0.1, 0.2, 0.3, 0.4, 0.5], [0] * 5)
    assert math.isnan(five.wilcoxon_pvalue) and five.wilcoxon_note == "n = 5 cannot reach p < 0.05"
    six = paired_arrays([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0] * 6)
    assert six.wilcoxon_pvalue == pytest.approx(2 / 2 ** 6) and six.wilcoxon_note == ""
    zero_dropped = paired_arrays([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0] * 6 + [0.7])
    assert zero_dropped.wilcoxon_pvalue == pytest.approx(2 / 2 ** 6)
    one_zero = paired_arrays([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0] * 5 + [0.6])
    assert math.isnan(one_zero.wilcoxon_pvalue)
    assert one_zero.wilcoxon_note == "5 of 6 differences non-zero: cannot reach p < 0.05"
    assert report.wilcoxon_text(asdict(six)) == "p = 0.0312"
    assert report.wilcoxon_text(asdict(five), "") == "n/a (n = 5 cannot reach p < 0.05)"


# --------------------------------------------------------------------------- E: diverged runs

def build_diverging(root: Path) -> Path:
    """Sequential and joint over seeds 0-2 (test_compare's numbers); the seed-1 sequential job diverged and its
    metrics are wild. Every metrics.json has a ``code_version``; joint's has ``divergence: null``."""
    sweep = root / "diverging"
    for s in range(3):
        write_job(sweep / f"seq{s}", make_config("sequential", [[3], [4], [7]], s),
                  metric_dict(SEQ_ACC[s], SEQ_TARGET[s], 0.96) if s != 1 else metric_dict(0.1, 0.1, 0.1), BASE[s])
        write_job(sweep / f"joint{s}", make_config("joint", [[3, 4, 7]], s),
                  metric_dict(JOINT_ACC[s], JOINT_TARGET[s], 0.97), BASE[s])

    def edit(job: str, metrics: dict) -> None:
        metrics["code_version"] = "0.0.0+test"
        metrics["divergence"] = ({"stage": 2, "epoch": 1, "train_loss": float("nan"), "reason": "train loss not finite"}
                                 if job == "seq1" else None)
    edit_metrics(sweep, edit)
    return sweep


def test_diverged_runs_are_left_out_unless_included(tmp_path):
    sweep = build_diverging(tmp_path)
    jobs = load_jobs(sweep)
    analysis = agg.analyse(jobs)
    assert [j.rel for j in analysis.excluded] == ["seq1"] and "seq1" not in {j.rel for j in analysis.finished}
    target = analysis.summary.set_index(["variant", "metric"]).loc[("sequential", agg.TARGET)]
    assert target["n"] == 2 and target["mean"] == pytest.approx((0.92 + 0.93) / 2)  # seeds 0 and 2
    naive = next(r for r in analysis.hypothesis if r["metric"] == agg.TARGET)
    assert naive["seeds"] == [0, 2]
    out = outputs(analysis, sweep)
    csv = pd.read_csv(out / "summary.csv").set_index("job")
    assert len(csv) == 6 and csv["diverged"].tolist().count(True) == 1 and bool(csv.loc["seq1", "diverged"])
    assert csv.loc["seq1", "reason"] == "diverged in stage 2, epoch 1 (train loss nan): train loss not finite"
    md = (out / "report.md").read_text()
    assert "**1 run(s) excluded as diverged** (listed under Jobs)." in md
    assert "| `seq1` | `sequential` | 1 | 2 | 1 | nan | train loss not finite |" in re.sub(" {2,}", " ", md)
    assert "1 diverged (not included)" in (out / "summary.md").read_text()

    included = agg.analyse(jobs, include_diverged=True)
    assert not included.excluded and len(included.finished) == 6
    target = included.summary.set_index(["variant", "metric"]).loc[("sequential", agg.TARGET)]
    assert target["n"] == 3 and target["mean"] == pytest.approx((0.92 + 0.1 + 0.93) / 3)

    assert cli.main([str(sweep), "--include-diverged"]) == 0
    md = (sweep / "compare" / "report.md").read_text()
    assert "**1 run(s) included as diverged**" in md and "let into every statistic by `--include-diverged`" in md


def test_a_diverged_grid_point_is_never_chosen(study, tmp_path):
    sweep = copy_of(study, tmp_path)
    chosen = tuned_choices(agg.analyse(load_jobs(sweep)))[("sequential+ewc (tuned)", 0)]
    assert chosen[0] == 100

    def diverge(job: str, metrics: dict) -> None:
        metrics["divergence"] = {"stage": 1, "epoch": 0, "train_loss": 1e9, "reason": "loss above 25 nats"} \
            if job == chosen[2] else None
    edit_metrics(sweep, diverge)
    # without lambda = 100, only 10000 keeps seed 0's calibration retained accuracy within δ (0.97 >= 0.95)
    assert tuned_choices(agg.analyse(load_jobs(sweep)))[("sequential+ewc (tuned)", 0)][:2] == (10000, False)
    assert tuned_choices(agg.analyse(load_jobs(sweep), include_diverged=True))[("sequential+ewc (tuned)", 0)][0] == 100


# --------------------------------------------------------------------------- seeds never tell variants apart

def test_seed_keys_do_not_split_variants_or_make_knobs():
    assert all(map(is_seed_key, ("seed", "data.split_seed", "retention.seed", "method.merger.seed")))
    assert not any(map(is_seed_key, ("retention.lambda_", "data.seeds_per_task", "reseed_every")))
    assert not is_knob_key("retention.seed") and not is_knob_key("retention.sample_seed")
    cfgs = []
    for s, retention_seed in ((0, 0), (1, "${seed}"), (2, 2)):
        cfg = make_config("sequential", [[3], [4], [7]], s, retention="Replay")
        cfg["data"]["split_seed"] = s
        cfg["retention"]["seed"] = retention_seed
        cfg["method"]["merger"] = {"seed": s}
        cfgs.append(cfg)
    assert len(set(variant_labels(cfgs))) == 1
    # two knob values over three seeds: one curve over retention.strength, none over the seed keys
    cfgs[2]["retention"]["strength"] = 10.0
    labels = variant_labels(cfgs)
    curves = knob_grids({label: cfg for label, cfg in zip(labels, cfgs)})
    assert [c.key for c in curves] == ["retention.strength"]
