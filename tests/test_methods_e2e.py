"""End to end on real MNIST (few batches): merging methods, task negation, retention options.

These check the output contract of each method and the rules that make its numbers trustworthy
(lambda chosen on calibration data only; retention recorded in metrics.json), against numbers
recomputed here with plain torch: the merged / negated weights ``theta_0 + lambda * tau`` from
``checkpoints/task_vectors.pt`` and the cached baseline, evaluated on the calibration and test
splits of the session's real-MNIST datamodule (the same split the runs use).

Runs shared by several tests (module fixtures, one baseline cache per fixture):

* ``merge_runs``: task arithmetic selecting lambda on calibration ``acc`` and on ``acc_target``;
* ``negation_run``: task negation of class 3 with enough training to negate (50 batches);
* ``retention_runs``: sequential with ``retention=none`` and with each retention option.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seqft_lightning.methods.settings import lambda_grid
from seqft_lightning.api import train

FAST = [
    "trainer=cpu",  # the recomputations below run on the CPU: compare like with like
    "pretrain.epochs=1",
    "trainer.limit_train_batches=5",
    "method.epochs_per_stage=1",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
    "logger=none",
]
pytestmark = pytest.mark.e2e


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- independent recomputation (plain torch, nothing from the package) ----------------------------
def _cached_baseline(cache_dir: Path) -> dict[str, torch.Tensor]:
    """theta_0: the one baseline checkpoint in ``cache_dir`` (key ``state_dict``)."""
    found = sorted(Path(cache_dir).glob("baseline-*.pt"))
    assert len(found) == 1, found
    return torch.load(found[0], map_location="cpu", weights_only=True)["state_dict"]


def _add_scaled(theta: dict, tau: dict, lambda_: float) -> dict:
    """theta + lambda * tau, entry by entry (every entry of the MLP is a float tensor)."""
    assert tau.keys() == theta.keys()
    return {k: theta[k] + lambda_ * tau[k] for k in theta}


def _sum_vectors(vectors: dict) -> dict:
    """tau_1 + tau_2 + ... in the file's order."""
    names = list(vectors)
    total = {k: v.clone() for k, v in vectors[names[0]].items()}
    for name in names[1:]:
        total = {k: total[k] + vectors[name][k] for k in total}
    return total


@torch.no_grad()
def _mlp_logits(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The 784-128-64-10 ReLU MLP's forward pass written out (keys ``layers.{0,2,4}``)."""
    h = F.relu(F.linear(x, state["layers.0.weight"], state["layers.0.bias"]))
    h = F.relu(F.linear(h, state["layers.2.weight"], state["layers.2.bias"]))
    return F.linear(h, state["layers.4.weight"], state["layers.4.bias"])


def _per_class_counts(state: dict, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, total) per true class 0..9 over ``loader``'s batches."""
    correct = torch.zeros(10, dtype=torch.long)
    total = torch.zeros(10, dtype=torch.long)
    for x, y in loader:
        hit = _mlp_logits(state, x.cpu()).argmax(1) == y.cpu()
        correct += torch.bincount(y.cpu()[hit], minlength=10)
        total += torch.bincount(y.cpu(), minlength=10)
    return correct, total


def _group_acc(counts, classes) -> float:
    correct, total = counts
    classes = list(classes)
    return int(correct[classes].sum()) / int(total[classes].sum())


def _argmax_smaller_on_ties(rows: list[dict], column: str) -> float:
    best = max(rows, key=lambda r: (r[column], -r["lambda"]))
    return best["lambda"]


def test_lambda_grid_default_range_and_method_default():
    from seqft_lightning.resolvers import grid

    grid = lambda_grid(grid(0.0, 1.0, 0.05), [0.3, 1.0])
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0 and 0.3 in grid
    assert lambda_grid([0.5, 0.1], [0.3]) == [0.1, 0.3, 0.5]


GRID = "method.lambda_grid=[0.0,0.02,0.05,0.1,0.25,0.5,1.0]"  # fine near 0, where the two rules part
TARGET = [3, 4, 7]
RETAINED = [c for c in range(10) if c not in TARGET]


@pytest.fixture(scope="module")
def merge_runs(tmp_path_factory, compose_cfg):
    """Task arithmetic, lambda chosen by the rule ``overall`` and by ``target_at_retained`` (one cache)."""
    base = tmp_path_factory.mktemp("merge")
    out = {"cache": base / "cache"}
    for rule in ("overall", "target_at_retained"):
        run = base / rule
        metrics, _ = train(compose_cfg(["method=task_arithmetic", GRID, f"selection.rule={rule}", *FAST], run, out["cache"]))
        out[rule] = (run, metrics)
    return out


def _expected_by_rule(rows: list[dict], rule: str, delta: float = 0.01) -> float:
    """The rule, written out independently: rows are in ascending lambda; lambda = 0 is the baseline."""
    if rule == "overall":
        return _argmax_smaller_on_ties(rows, "acc")
    floor = next(r for r in rows if r["lambda"] == 0.0)["acc_retained"] - delta
    qualified = [r for r in rows if r["acc_retained"] >= floor - 1e-12]
    if not qualified:
        return max(rows, key=lambda r: (r["acc_retained"], -r["lambda"]))["lambda"]
    return max(qualified, key=lambda r: (r["acc_target"], r["acc_retained"], -r["lambda"]))["lambda"]


@pytest.fixture(scope="module")
def merge_recomputed(merge_runs, mnist_dm):
    """Every lambda of the run's calibration.csv, recomputed: ``[{lambda, acc, acc_target, acc_retained}]``,
    plus theta_0 and sum(tau)."""
    run, _ = merge_runs["overall"]
    theta0 = _cached_baseline(merge_runs["cache"])
    vectors = torch.load(run / "checkpoints" / "task_vectors.pt", map_location="cpu", weights_only=True)
    tau = _sum_vectors(vectors)
    rows = []
    for row in _read_csv(run / "calibration.csv"):
        lambda_ = float(row["lambda"])
        counts = _per_class_counts(_add_scaled(theta0, tau, lambda_), mnist_dm.calibration_dataloader())
        rows.append({"lambda": lambda_, "acc": _group_acc(counts, range(10)), "acc_target": _group_acc(counts, TARGET), "acc_retained": _group_acc(counts, RETAINED)})
    return {"rows": rows, "theta0": theta0, "tau": tau}


def test_task_arithmetic_writes_outputs(merge_runs):
    run, metrics = merge_runs["overall"]
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    # Stages: 1..3 are the per-task fine-tuned copies, 4 is the merged model (the final one).
    final = {k: v for k, v in metrics["final"].items() if k != "calibration/selection_score"}  # a run-level score
    assert len(metrics["per_stage"]) == 4 and final == metrics["per_stage"][-1]
    curve = _read_csv(run / "calibration.csv")
    assert [float(r["lambda"]) for r in curve] == [0.0, 0.02, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0]  # grid + merger.lambda_
    assert (run / "confusion" / "stage_4.csv").is_file()
    vectors = torch.load(run / "checkpoints" / "task_vectors.pt", weights_only=True)
    assert list(vectors) == ["3", "4", "7"]


def test_calibration_curve_equals_recomputed_merge(merge_runs, merge_recomputed):
    """calibration.csv holds the accuracies of theta_0 + lambda * sum(tau), recomputed here."""
    run, _ = merge_runs["overall"]
    written = _read_csv(run / "calibration.csv")
    assert len(written) == len(merge_recomputed["rows"])
    for row, mine in zip(written, merge_recomputed["rows"]):
        for column in ("acc", "acc_target", "acc_retained"):
            assert float(row[column]) == pytest.approx(mine[column], abs=1e-9), (mine["lambda"], column)
    # lambda = 0 is the baseline itself; the task vectors really move the model
    assert len({round(r["acc"], 9) for r in merge_recomputed["rows"]}) > 1


@pytest.mark.parametrize("rule", ["overall", "target_at_retained"])
def test_lambda_follows_the_selection_rule_on_calibration(merge_runs, merge_recomputed, rule):
    _, metrics = merge_runs[rule]
    expected = _expected_by_rule(merge_recomputed["rows"], rule)
    assert metrics["lambda"] == pytest.approx(expected, abs=1e-12)
    assert metrics["lambda_selection"]["rule"] == rule and metrics["lambda_selection"]["split"] == "calibration"
    best = next(r for r in merge_recomputed["rows"] if r["lambda"] == expected)
    for key in ("acc", "acc_target", "acc_retained"):
        assert metrics["lambda_selection"][f"calibration/{key}"] == pytest.approx(best[key], abs=1e-9)


def test_the_rule_changes_the_choice(merge_runs, merge_recomputed):
    """Same seed, same curve; the two rules pick different lambdas here, each by its own criterion."""
    (overall_run, by_overall), (rule_run, by_rule) = merge_runs["overall"], merge_runs["target_at_retained"]
    assert (overall_run / "calibration.csv").read_bytes() == (rule_run / "calibration.csv").read_bytes()
    rows = merge_recomputed["rows"]
    assert _expected_by_rule(rows, "overall") != _expected_by_rule(rows, "target_at_retained"), "setting too weak: both rules pick one lambda"
    assert by_overall["lambda"] != by_rule["lambda"]
    chosen = {r["lambda"]: r for r in rows}
    assert chosen[by_overall["lambda"]]["acc"] == max(r["acc"] for r in rows)
    floor = chosen[0.0]["acc_retained"] - 0.01  # lambda = 0 is the baseline
    qualified = [r for r in rows if r["acc_retained"] >= floor - 1e-12]
    assert chosen[by_rule["lambda"]] in qualified
    assert chosen[by_rule["lambda"]]["acc_target"] == max(r["acc_target"] for r in qualified)


@pytest.mark.parametrize("checkpoint", ["final.pt", "merged.pt"])
def test_merged_checkpoint_is_theta0_plus_lambda_tau(merge_runs, merge_recomputed, mnist_dm, checkpoint):
    """The saved final model is theta_0 + lambda * sum(tau) at the chosen lambda, and its test
    accuracy is the reported final one."""
    run, metrics = merge_runs["overall"]
    expected = _add_scaled(merge_recomputed["theta0"], merge_recomputed["tau"], metrics["lambda"])
    saved = torch.load(run / "checkpoints" / checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert saved.keys() == expected.keys()
    for key in expected:
        assert torch.equal(saved[key], expected[key]), (checkpoint, key)
    counts = _per_class_counts(expected, mnist_dm.test_dataloader())
    assert _group_acc(counts, range(10)) == pytest.approx(metrics["final"]["test/acc"], abs=1e-9)


def test_lambda_does_not_depend_on_the_test_set(compose, tmp_path, monkeypatch):
    """Scrambling the test labels changes test metrics but not lambda nor the calibration curve."""
    from seqft_lightning.data.datamodule import MNISTTaskDataModule

    overrides = ["method=ties", "method.lambda_grid=[0.0,0.5,1.0]", *FAST]
    first, _ = train(compose(overrides))
    curve_first = (tmp_path / "run" / "calibration.csv").read_text()

    original_setup = MNISTTaskDataModule.setup

    def scrambled_setup(self, stage=None):
        original_setup(self, stage)
        self.test_y = self.test_y[torch.randperm(len(self.test_y), generator=torch.Generator().manual_seed(1))]

    monkeypatch.setattr(MNISTTaskDataModule, "setup", scrambled_setup)
    second_dir = tmp_path / "second"
    from tests.conftest import compose_train_config

    second, _ = train(compose_train_config(overrides, second_dir, tmp_path / "cache"))
    assert second["lambda"] == first["lambda"]
    assert (second_dir / "calibration.csv").read_text() == curve_first
    assert second["final"]["test/acc"] != first["final"]["test/acc"]


@pytest.mark.parametrize("method", ["dare", "average"])
def test_other_merging_methods_complete(compose, tmp_path, method):
    metrics, _ = train(compose([f"method={method}", "method.vectors=[0,2]", *FAST]))
    assert metrics["method"] == method and metrics["merged_vectors"] == ["3", "7"]
    assert (metrics["lambda"] is None) == (method == "average")
    assert 0.0 <= metrics["final"]["test/acc"] <= 1.0


NEGATION_GRID = "method.lambda_grid=[0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]"
# Enough training that the class-3 expert's task vector means something (50 batches of
# pretraining, one full epoch of the 1000 class-3 images), still a few seconds on a CPU.
NEGATION = [
    "method=task_negation", "method.forget=[3]", NEGATION_GRID, "trainer=cpu", "pretrain.epochs=1", "trainer.limit_train_batches=50",
    "method.epochs_per_stage=1", "trainer.enable_progress_bar=false", "callbacks=none", "logger=none",
]


@pytest.fixture(scope="module")
def negation_run(tmp_path_factory, compose_cfg, mnist_dm):
    """The run, plus its calibration curve recomputed here as theta_0 - lambda * tau_3."""
    base = tmp_path_factory.mktemp("negation")
    run, cache = base / "run", base / "cache"
    metrics, _ = train(compose_cfg(NEGATION, run, cache))
    theta0 = _cached_baseline(cache)
    vectors = torch.load(run / "checkpoints" / "task_vectors.pt", map_location="cpu", weights_only=True)
    assert list(vectors) == ["3"]
    minus_tau = {k: -v for k, v in vectors["3"].items()}
    others = [c for c in range(10) if c != 3]
    rows = []
    for row in _read_csv(run / "calibration.csv"):
        lambda_ = float(row["lambda"])
        counts = _per_class_counts(_add_scaled(theta0, minus_tau, lambda_), mnist_dm.calibration_dataloader())
        rows.append({"lambda": lambda_, "acc_forget": _group_acc(counts, [3]), "acc_other": _group_acc(counts, others)})
    baseline_counts = _per_class_counts(theta0, mnist_dm.calibration_dataloader())
    return {
        "run": run, "metrics": metrics, "theta0": theta0, "minus_tau": minus_tau, "rows": rows,
        "baseline_acc_other": _group_acc(baseline_counts, others),
    }


def test_task_negation_calibration_curve_equals_recomputed(negation_run):
    written = _read_csv(negation_run["run"] / "calibration.csv")
    assert [float(r["lambda"]) for r in written] == [round(0.1 * k, 9) for k in range(11)]
    for row, mine in zip(written, negation_run["rows"]):
        for column in ("acc_forget", "acc_other"):
            assert float(row[column]) == pytest.approx(mine[column], abs=1e-9), (mine["lambda"], column)
    negation = negation_run["metrics"]["negation"]
    assert negation["calibration/baseline_acc_other"] == pytest.approx(negation_run["baseline_acc_other"], abs=1e-9)


def test_task_negation_lambda_forgets_most_above_the_floor(negation_run):
    """lambda = the smallest acc_forget among rows keeping >= min_retained_ratio of the
    baseline's acc_other (ties to the smaller lambda); here that is a lambda > 0."""
    metrics = negation_run["metrics"]
    negation = metrics["negation"]
    assert negation["forget_classes"] == [3] and metrics["stages"] == [[3]]
    floor = negation["min_retained_ratio"] * negation["calibration/baseline_acc_other"]
    assert negation["min_retained_ratio"] == 0.95
    allowed = [r for r in negation_run["rows"] if r["acc_other"] >= floor]
    expected = min(allowed, key=lambda r: (r["acc_forget"], r["lambda"]))
    assert expected["lambda"] > 0, "setting too weak: no lambda > 0 keeps the floor"
    assert metrics["lambda"] == pytest.approx(expected["lambda"], abs=1e-12)
    assert negation["lambda"] == metrics["lambda"]
    assert negation["calibration/acc_forget"] == pytest.approx(expected["acc_forget"], abs=1e-9)
    assert negation["calibration/acc_other"] == pytest.approx(expected["acc_other"], abs=1e-9)
    # what a sweeper maximises is its own rule (forget more), not the study's (which would reward keeping class 3)
    assert metrics["final"]["calibration/selection_score"] == pytest.approx(1 - expected["acc_forget"], abs=1e-12)


def test_task_negation_lowers_the_forgotten_class_on_test(negation_run, mnist_dm):
    """theta_0 - lambda * tau_3 at the chosen lambda (recomputed) is worse on class 3 than the
    baseline, and it is the model the run reports as final."""
    metrics, negation = negation_run["metrics"], negation_run["metrics"]["negation"]
    negated = _add_scaled(negation_run["theta0"], negation_run["minus_tau"], metrics["lambda"])
    counts = _per_class_counts(negated, mnist_dm.test_dataloader())
    base_counts = _per_class_counts(negation_run["theta0"], mnist_dm.test_dataloader())
    assert _group_acc(counts, [3]) < _group_acc(base_counts, [3])
    assert metrics["final"]["test/acc_class_3"] == pytest.approx(_group_acc(counts, [3]), abs=1e-9)
    assert metrics["final"]["test/acc"] == pytest.approx(_group_acc(counts, range(10)), abs=1e-9)
    assert negation["test/acc_forget"] == pytest.approx(_group_acc(counts, [3]), abs=1e-9)
    assert negation["test/baseline_acc_forget"] == pytest.approx(_group_acc(base_counts, [3]), abs=1e-9)


@pytest.mark.parametrize("checkpoint", ["final.pt", "negated.pt"])
def test_task_negation_checkpoint_is_the_negated_model(negation_run, checkpoint):
    negated = _add_scaled(negation_run["theta0"], negation_run["minus_tau"], negation_run["metrics"]["lambda"])
    saved = torch.load(negation_run["run"] / "checkpoints" / checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert saved.keys() == negated.keys()
    for key in negated:
        assert torch.equal(saved[key], negated[key]), (checkpoint, key)


def test_merging_refuses_retention(compose):
    from seqft_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="retention=ewc"):
        train(compose(["method=task_arithmetic", "retention=ewc", *FAST]))


RETENTIONS = ["replay", "ewc", "lwf", "l2sp", "freeze"]


@pytest.fixture(scope="module")
def retention_runs(tmp_path_factory, compose_cfg):
    """Sequential at seed 0 with ``retention=none`` and with each option, sharing one baseline."""
    base = tmp_path_factory.mktemp("retention")
    out = {"cache": base / "cache"}
    for retention in ["none", *RETENTIONS]:
        run = base / retention
        metrics, _ = train(compose_cfg(["method=sequential", f"retention={retention}", *FAST], run, out["cache"]))
        out[retention] = (run, metrics)
    return out


@pytest.mark.parametrize("retention", RETENTIONS)
def test_sequential_with_each_retention_writes_outputs(retention_runs, retention):
    run, metrics = retention_runs[retention]
    assert metrics["retention"] == retention and json.loads((run / "metrics.json").read_text())["retention"] == retention
    final = metrics["final"]
    assert {"cl/avg_acc", "cl/forgetting", "cl/bwt"} <= set(final)
    assert len(metrics["per_stage"]) == 3
    task_rows = [r for r in _read_csv(run / "stages.csv") if r["evaluated"].startswith("task_")]
    assert len(task_rows) == 4 * 3  # stages 0..3 x tasks 0..2
    if retention == "freeze":
        before = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
        pretrained = _cached_baseline(retention_runs["cache"])
        assert torch.equal(before["layers.0.weight"], pretrained["layers.0.weight"])
        assert not torch.equal(before["layers.4.weight"], pretrained["layers.4.weight"])


@pytest.mark.parametrize("retention", RETENTIONS)
def test_each_retention_changes_the_result(retention_runs, retention):
    """Same seed, same baseline: the option must change the trained weights and the final test
    metrics relative to ``retention=none`` (an option that does nothing fails here)."""
    none_run, none_metrics = retention_runs["none"]
    run, metrics = retention_runs[retention]
    assert metrics["baseline"] == none_metrics["baseline"]  # the same starting point
    ours = torch.load(run / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)["state_dict"]
    plain = torch.load(none_run / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert any(not torch.equal(ours[k], plain[k]) for k in plain), "final weights equal retention=none's"
    assert metrics["final"]["test/loss"] != none_metrics["final"]["test/loss"]
    assert metrics["final"]["test/acc"] != none_metrics["final"]["test/acc"]


def test_joint_reports_avg_acc_and_undefined_forgetting(compose):
    metrics, _ = train(compose(["method=joint", "retention=replay", *FAST]))
    final = metrics["final"]
    assert final["cl/forgetting"] is None or final["cl/forgetting"] != final["cl/forgetting"]  # nan -> null in JSON
    assert 0.0 <= final["cl/avg_acc"] <= 1.0


def test_split_mnist_experiment_composes_as_specified(compose):
    cfg = compose(["experiment=split_mnist"])
    assert cfg.method.stages == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert cfg.pretrain.enabled is False and cfg.data.samples_per_task is None
    assert list(cfg.model.hidden_dims) == [400, 400] and cfg.method.batch_size == 128
    assert cfg.method.optimizer.lr == 0.001


def test_default_pretraining_reaches_expected_mnist_accuracy(compose):
    """The full default baseline (5 epochs of Adam on the 52,000-image pretraining pool): a
    784-128-64-10 MLP lands at about 97 % test accuracy; far below means data or training broke."""
    metrics, _ = train(compose(["method=baseline", "trainer.enable_progress_bar=false", "callbacks=none", "logger=none"]))
    assert metrics["baseline"]["test/acc"] > 0.965
    assert {k: v for k, v in metrics["final"].items() if k != "calibration/selection_score"} == metrics["baseline"] and metrics["per_stage"] == []
