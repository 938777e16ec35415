"""End to end on real MNIST (few batches): merging methods, task negation, retention options.

These check the output contract of each method and the rules that make its numbers trustworthy
(lambda chosen on calibration data only; retention recorded in metrics.json).
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from seqft_lightning.methods.merge import lambda_grid
from seqft_lightning.api import train

FAST = [
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


def test_lambda_grid_default_range_and_method_default():
    from seqft_lightning.resolvers import grid

    grid = lambda_grid(grid(0.0, 1.0, 0.05), [0.3, 1.0])
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0 and 0.3 in grid
    assert lambda_grid([0.5, 0.1], [0.3]) == [0.1, 0.3, 0.5]


def test_task_arithmetic_writes_outputs_and_picks_lambda_on_calibration(compose, tmp_path):
    cfg = compose(["method=task_arithmetic", "method.lambda_grid=[0.0,0.25,0.5,0.75,1.0]", *FAST])
    metrics, objects = train(cfg)
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    # Stages: 1..3 are the per-task fine-tuned copies, 4 is the merged model (the final one).
    assert len(metrics["per_stage"]) == 4 and metrics["final"] == metrics["per_stage"][-1]
    curve = _read_csv(run / "calibration.csv")
    assert [float(r["lambda"]) for r in curve] == [0.0, 0.25, 0.3, 0.5, 0.75, 1.0]
    best = max(curve, key=lambda r: (float(r["acc"]), -float(r["lambda"])))
    assert metrics["lambda"] == pytest.approx(float(best["lambda"]))
    assert (run / "checkpoints" / "task_vectors.pt").is_file() and (run / "confusion" / "stage_4.csv").is_file()
    vectors = torch.load(run / "checkpoints" / "task_vectors.pt", weights_only=True)
    assert sorted(vectors) == ["3", "4", "7"]


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


def test_task_negation_reports_forgetting_and_kept_accuracy(compose, tmp_path):
    metrics, _ = train(compose(["method=task_negation", "method.forget=[3]", *FAST]))
    negation = metrics["negation"]
    assert negation["forget_classes"] == [3] and metrics["stages"] == [[3]]
    # The chosen lambda keeps >= 95% of the baseline's calibration accuracy on the other classes.
    assert negation["calibration/acc_other"] >= 0.95 * negation["calibration/baseline_acc_other"]
    assert negation["calibration/acc_forget"] <= negation["calibration/baseline_acc_forget"]
    for key in ("test/acc_forget", "test/acc_other", "test/baseline_acc_forget", "test/baseline_acc_other"):
        assert 0.0 <= negation[key] <= 1.0


def test_merging_refuses_retention(compose):
    from seqft_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="retention=ewc"):
        train(compose(["method=task_arithmetic", "retention=ewc", *FAST]))


@pytest.mark.parametrize("retention", ["replay", "ewc", "lwf", "l2sp", "freeze"])
def test_sequential_with_each_retention_writes_outputs(compose, tmp_path, retention):
    metrics, _ = train(compose(["method=sequential", f"retention={retention}", *FAST]))
    run = tmp_path / "run"
    assert metrics["retention"] == retention and json.loads((run / "metrics.json").read_text())["retention"] == retention
    final = metrics["final"]
    assert {"cl/avg_acc", "cl/forgetting", "cl/bwt"} <= set(final)
    assert len(metrics["per_stage"]) == 3
    task_rows = [r for r in _read_csv(run / "stages.csv") if r["evaluated"].startswith("task_")]
    assert len(task_rows) == 4 * 3  # stages 0..3 x tasks 0..2
    if retention == "freeze":
        before = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
        baseline_cache = next((tmp_path / "cache").glob("baseline-*.pt"))
        pretrained = torch.load(baseline_cache, weights_only=True)["state_dict"]
        assert torch.equal(before["layers.0.weight"], pretrained["layers.0.weight"])
        assert not torch.equal(before["layers.4.weight"], pretrained["layers.4.weight"])


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
    assert metrics["final"] == metrics["baseline"] and metrics["per_stage"] == []
