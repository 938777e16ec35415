"""``experiment=split_mnist``: the published protocol (van de Ven & Tolias 2019) and the
``method.steps_per_stage`` budget it rests on.

The step checks compose the real experiment on synthetic data with a budget small enough to cross
an epoch boundary inside a stage: 20 samples per class, two classes per stage and batches of 16 make
3 batches an epoch (16 + 16 + 8), so 5 steps per stage is one full epoch plus 2 batches of the next.
Joint trains the same 5 stages x 5 steps = 25 steps in its one stage (13 batches an epoch).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from seqft_lightning.api import train

STEPS = 5
STAGES = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
SMALL = [
    "experiment=split_mnist",
    "data=synthetic",
    "data.samples_per_task=20",
    f"method.steps_per_stage={STEPS}",
    "method.batch_size=16",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
    "logger=none",
]


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_split_mnist_composes_with_the_published_protocol(compose):
    cfg = compose(["experiment=split_mnist"])
    m = cfg.method
    assert m.stages == STAGES
    assert m.steps_per_stage == 2000 and m.batch_size == 128
    assert m.optimizer._target_ == "torch.optim.Adam"
    assert m.optimizer.lr == 0.001 and list(m.optimizer.betas) == [0.9, 0.999]
    assert cfg.pretrain.enabled is False and cfg.data.samples_per_task is None
    net = instantiate(cfg.model)
    linears = [layer for layer in net.layers if isinstance(layer, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(784, 400), (400, 400), (400, 10)]
    assert sum(isinstance(layer, torch.nn.ReLU) for layer in net.layers) == 2
    # joint is the same experiment with one stage: the budget is set per entry of method.stages
    joint = compose(["experiment=split_mnist", "method=joint"])
    assert joint.method.stages == STAGES and joint.method.steps_per_stage == 2000


@pytest.fixture(scope="module")
def step_runs(tmp_path_factory, compose_cfg):
    """``{name: (run dir, metrics)}`` for sequential (no retention and replay) and joint."""
    base = tmp_path_factory.mktemp("split_mnist_steps")
    plan = {
        "sequential": ["method=sequential"],
        "replay": ["method=sequential", "retention=replay", "retention.memory_per_class=4"],
        "joint": ["method=joint"],
    }
    out = {}
    for name, overrides in plan.items():
        run_dir = base / name
        metrics, _ = train(compose_cfg([*SMALL, *overrides], run_dir, base / "cache"))
        out[name] = (run_dir, metrics)
    return out


@pytest.mark.parametrize("name, n_trained", [("sequential", 5), ("replay", 5), ("joint", 1)])
def test_every_stage_trains_exactly_its_steps(step_runs, name, n_trained):
    run_dir, returned = step_runs[name]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    per_stage = STEPS * len(STAGES) // n_trained
    # the whole budget, in the file and in what train() returned; no pretraining steps
    assert metrics["cost"]["cost/optimizer_steps"] == STEPS * len(STAGES) == returned["cost"]["cost/optimizer_steps"]
    assert metrics["cost"]["cost/pretrain_steps"] == 0
    assert metrics["stages"] == STAGES and len(metrics["per_stage"]) == n_trained

    # curves.csv: the step axis at the last training point of stage k is k x per_stage
    train_rows = [r for r in _read_csv(run_dir / "curves.csv") if r["split"] == "train" and r["metric"] == "loss"]
    last_step = {}
    for row in train_rows:
        last_step[int(row["stage"])] = max(last_step.get(int(row["stage"]), 0), int(row["step"]))
    assert last_step == {k: k * per_stage for k in range(1, n_trained + 1)}
    # the budget is met by repeating epochs, not by stopping at the end of the first one
    for k in range(1, n_trained + 1):
        assert len({int(r["epoch"]) for r in train_rows if int(r["stage"]) == k}) == 2, k

    # stages.csv: the baseline (stage 0) and one evaluation per trained stage
    stages = {int(r["stage"]) for r in _read_csv(run_dir / "stages.csv")}
    assert stages == set(range(n_trained + 1))


def test_joint_gets_the_same_total_as_sequential(step_runs):
    steps = {name: m["cost"]["cost/optimizer_steps"] for name, (_, m) in step_runs.items()}
    assert steps["joint"] == steps["sequential"] == steps["replay"] == STEPS * len(STAGES)
