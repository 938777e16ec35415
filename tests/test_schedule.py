"""The launch order of parallel sweeps (``seqft_lightning.schedule``) and the default launcher
that applies it (``hydra_plugins/seqft_launcher``): which jobs share a baseline, and that returns
come back in sweep order."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path

import pytest

from seqft_lightning.schedule import baseline_first, baseline_group

REPO = Path(__file__).resolve().parents[1]


def _sweep(**swept: list[str]) -> list[list[str]]:
    """Hydra's basic sweeper order: the cartesian product, the last key varying fastest."""
    keys = list(swept)
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*swept.values())]


def test_the_typed_sweep_pretrains_every_seed_first_then_runs_jobs_seed_by_seed():
    jobs = _sweep(method=["sequential", "joint", "task_arithmetic"], seed=["0", "1", "2"])
    order = [" ".join(jobs[i]) for i in baseline_first(jobs)]
    assert order == [
        "method=sequential seed=0", "method=sequential seed=1", "method=sequential seed=2",
        "method=joint seed=0", "method=task_arithmetic seed=0",
        "method=joint seed=1", "method=task_arithmetic seed=1",
        "method=joint seed=2", "method=task_arithmetic seed=2",
    ]


@pytest.mark.parametrize(
    "a, b, shared",
    [
        (["method=sequential", "seed=1"], ["method=joint", "seed=1"], True),
        (["retention=ewc", "retention.lambda_=1"], ["retention=ewc", "retention.lambda_=100"], True),
        (["method.optimizer.lr=0.01"], ["selection.delta=0.02", "+method.merger.lambda_=0.5"], True),
        (["method=sequential"], ["method=task_negation"], False),  # other held-out classes
        (["method.stages=[[3],[4]]"], ["method.stages=[[3],[7]]"], False),
        (["seed=0"], ["seed=1"], False),
        (["pretrain.epochs=1"], ["pretrain.epochs=2"], False),
        (["torch_threads=1"], ["torch_threads=2"], False),
        (["experiment=split_mnist"], [], False),
        (["+unknown.key=1"], ["+unknown.key=2"], False),  # unknown: its own group, never merged
    ],
)
def test_baseline_groups(a, b, shared):
    assert (baseline_group(a) == baseline_group(b)) is shared


def test_one_baseline_keeps_the_sweep_order():
    jobs = _sweep(**{"retention.lambda_": ["1", "10", "100"], "method": ["sequential", "joint"]})
    assert baseline_first(jobs) == list(range(len(jobs)))


def test_the_launcher_starts_jobs_baseline_first_and_returns_in_sweep_order(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # where train.py finds the plugin
    sys.modules.pop("hydra_plugins.seqft_launcher", None)
    plugin = importlib.import_module("hydra_plugins.seqft_launcher")
    started = []

    def joblib_launch(self, job_overrides, initial_job_idx):
        started.extend(" ".join(o) for o in job_overrides)
        return [f"return of {' '.join(o)}" for o in job_overrides]

    monkeypatch.setattr(plugin.JoblibLauncher, "launch", joblib_launch)
    jobs = _sweep(method=["sequential", "joint"], seed=["0", "1"])
    returns = plugin.BaselineFirstJoblibLauncher().launch(jobs, initial_job_idx=0)
    assert started == ["method=sequential seed=0", "method=sequential seed=1", "method=joint seed=0", "method=joint seed=1"]
    assert returns == [f"return of {' '.join(o)}" for o in jobs]
