"""Compute cost in metrics.json (``cost/...``) against hand-counted steps, samples and FLOPs, and
the optimizer-state protocol knob, on tiny synthetic runs."""

from __future__ import annotations

import json
import math

import pytest

from seqft_lightning.api import train

FAST = ["trainer=cpu", "data=synthetic", "pretrain.epochs=1", "method.epochs_per_stage=2", "logger=none", "callbacks=none"]
# data=synthetic: 20 samples per task class, method.batch_size 64 -> one batch of 20 per epoch
SAMPLES, BATCH = 20, 64


def _mlp_flops(dims=(784, 128, 64, 10)) -> tuple[int, int]:
    """Matmul FLOPs per sample of the default MLP: (forward, training step) written out by hand.
    Backward: every layer's weight gradient, and the input gradient of every layer but the first."""
    pairs = list(zip(dims[:-1], dims[1:]))
    forward = sum(2 * i * o for i, o in pairs)
    backward = sum(2 * i * o for i, o in pairs) + sum(2 * i * o for i, o in pairs[1:])
    return forward, forward + backward


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compose_cfg):
    base = tmp_path_factory.mktemp("cost")
    out = {}
    for name, overrides in {
        "sequential": ["method=sequential"],
        "joint": ["method=joint"],
        "replay": ["method=sequential", "retention=replay", "retention.replay_share=0.5"],
        "ewc": ["method=sequential", "retention=ewc", "retention.fisher_samples=10"],
        "keep_optimizer": ["method=sequential", "method.reset_optimizer=false"],
        "joint_keep_optimizer": ["method=joint", "method.reset_optimizer=false"],
        "task_arithmetic": ["method=task_arithmetic", "method.lambda_grid=[0,0.5,1]"],
    }.items():
        metrics, _ = train(compose_cfg([*FAST, *overrides], base / name, base / "cache"))
        out[name] = (base / name, metrics)
    return out


def test_steps_samples_and_flops_are_counted(runs):
    forward, step = _mlp_flops()
    _, metrics = runs["sequential"]
    cost = metrics["cost"]
    assert cost["cost/optimizer_steps"] == 3 * 2 * math.ceil(SAMPLES / BATCH)  # 3 stages x 2 epochs x 1 batch
    assert cost["cost/train_samples"] == 3 * 2 * SAMPLES
    assert cost["cost/train_flops"] == pytest.approx(3 * 2 * SAMPLES * step)
    assert cost["cost/pretrain_steps"] > 0 and cost["cost/extra_memory_bytes"] == 0
    # eval: the calibration pass after every epoch (100 samples), once; the calibration metrics a
    # stage's record reads are that last pass's model (not counted again), the baseline's belong to
    # pretraining, and test and estimation evaluations are reporting
    assert cost["cost/eval_flops"] == pytest.approx(3 * 2 * 100 * forward)
    # joint: the same budget in one stage
    joint = runs["joint"][1]["cost"]
    assert joint["cost/train_samples"] == cost["cost/train_samples"]


def test_retention_work_is_part_of_the_cost(runs):
    forward, step = _mlp_flops()
    replay = runs["replay"][1]["cost"]
    assert replay["cost/train_samples"] == 2 * runs["sequential"][1]["cost"]["cost/train_samples"]  # share 0.5: doubled
    assert replay["cost/extra_memory_bytes"] > 0  # the memory
    ewc = runs["ewc"][1]["cost"]
    # at most 10 samples per estimate: the pool once, then after each stage but the last (nothing
    # uses a Fisher after it); each sample a gradient and (sampled Fisher) a forward drawing its label
    fisher = 10 * 3
    assert ewc["cost/train_flops"] == pytest.approx(3 * 2 * SAMPLES * step + fisher * (step + forward))
    n_params = 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert ewc["cost/extra_memory_bytes"] == 2 * 4 * n_params  # Fisher and anchor, float32
    merge = runs["task_arithmetic"][1]["cost"]
    assert merge["cost/extra_memory_bytes"] == 3 * 4 * n_params  # three task vectors
    # three experts (2 epochs, one batch each, a calibration pass per epoch) and the λ search over
    # the grid [0, 0.5, 1] plus the merger's default 0.3
    assert merge["cost/eval_flops"] == pytest.approx((3 * 2 * 100 + 4 * 100) * forward)


def test_the_baseline_costs_nothing_and_cost_is_a_pure_function(runs, compose_cfg, tmp_path):
    from seqft_lightning.cost import Work, cost_metrics

    metrics, _ = train(compose_cfg([*FAST, "method=baseline"], tmp_path / "base", tmp_path / "cache"))
    cost = metrics["cost"]
    assert cost["cost/optimizer_steps"] == cost["cost/train_samples"] == 0
    assert cost["cost/eval_flops"] == cost["cost/train_flops"] == cost["cost/total_flops"] == 0
    work = Work(pretrain_steps=7, optimizer_steps=3, train_samples=60, calibration_samples=200)
    first = cost_metrics(work, 10.0, 2.0, 5.0, 8)
    assert first == cost_metrics(work, 10.0, 2.0, 5.0, 8)  # nothing accumulates between calls
    assert first == {"cost/optimizer_steps": 3, "cost/train_samples": 60, "cost/train_flops": 605.0, "cost/eval_flops": 400.0,
                     "cost/total_flops": 1005.0, "cost/extra_memory_bytes": 8, "cost/pretrain_steps": 7}


def test_run_info_holds_wall_time_and_device_not_metrics(runs):
    run, metrics = runs["sequential"]
    info = json.loads((run / "run_info.json").read_text())
    assert info["cost/device"] == info["device"] and info["cost/train_wall_s"] > 0
    assert "cost/train_wall_s" not in metrics["cost"]


def test_keeping_the_optimizer_state_across_stages_changes_sequential_only(runs):
    assert runs["keep_optimizer"][1]["final"]["test/loss"] != runs["sequential"][1]["final"]["test/loss"]
    final = {name: json.loads((runs[name][0] / "metrics.json").read_text())["final"] for name in ("joint", "joint_keep_optimizer")}
    assert final["joint_keep_optimizer"] == final["joint"]  # one stage: nothing to keep


def test_calibration_metrics_of_every_recorded_model(runs):
    _, metrics = runs["sequential"]
    for entry in [metrics["baseline"], metrics["final"], *metrics["per_stage"]]:
        assert {"calibration/acc", "calibration/acc_target", "calibration/acc_retained"} <= set(entry)
    run, merged = runs["task_arithmetic"]
    assert (run / "lambda_test.csv").read_text().splitlines()[0] == "lambda,acc,acc_target,acc_retained"
    assert merged["final"]["calibration/acc"] == pytest.approx(merged["lambda_selection"]["calibration/acc"])
