"""Hyperparameter search is configuration (``hparams_search=ewc_optuna``): Optuna proposes
trials, ``train.py`` returns ``optimized_metric``, a calibration metric, never a test one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("optuna") / "sweep"
    cmd = [
        sys.executable, "train.py", "-m", "hparams_search=ewc_optuna", "hydra.sweeper.n_trials=2",
        "data=synthetic", "pretrain.epochs=1", "method.epochs_per_stage=1", "logger=none",
        f"hydra.sweep.dir={sweep}", f"paths.cache_dir={sweep.parent / 'cache'}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_a_two_trial_search_optimizes_a_calibration_metric(search):
    result = yaml.safe_load((search / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text()) for p in search.glob("*/metrics.json")]
    assert len(trials) == 2
    objective = [t["final"]["calibration/selection_score"] for t in trials]
    assert result["best_value"] == pytest.approx(max(objective))
    best = trials[objective.index(max(objective))]
    assert set(result["best_params"]) == {"method.optimizer.lr", "retention.lambda_"}
    assert best["retention_settings"]["lambda_"] == pytest.approx(result["best_params"]["retention.lambda_"])
    # what the sweeper saw is not a test number of the best trial
    assert all(result["best_value"] != v for k, v in best["final"].items() if k.startswith("test/"))


def test_a_test_metric_cannot_be_the_objective(compose):
    from seqft_lightning.api import train
    from seqft_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="optimized_metric=test/acc"):
        train(compose(["optimized_metric=test/acc"]))


@pytest.mark.parametrize("override", ["data.calibration_size=0", "method.epochs_per_stage=-1", "hydra.sweeper.n_trials=0",
                                      "retention.lambda_=interval(-10,-1)", "retention.lambda_=choice(-1,5)",
                                      "retention.lambda_=tag(log,interval(-5,10))"])
def test_a_search_every_trial_of_which_would_fail_is_refused_before_the_first(tmp_path, override):
    """No calibration split (no trial can report the objective), an invalid shared config, no trial, or a search
    space that reaches refused values or that Optuna cannot sample: one line and exit 2 before any trial, not a
    failed trial each and then Optuna's traceback ("No trials are completed yet")."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "hparams_search=ewc_optuna", "hydra.sweeper.n_trials=2", "data=synthetic",
           "pretrain.epochs=1", "logger=none", override, f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path}/cache"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and override.split("=")[0] in last
    assert not sweep.exists() or not any(sweep.iterdir())  # no trial ran, no progress records


def test_a_diverged_trial_is_a_failed_one_and_a_search_with_no_valued_trial_is_one_line_and_exit_2(tmp_path):
    # divergence_loss below any cross-entropy: every trial diverges, so none may be named best.
    cmd = [sys.executable, "train.py", "-m", "hparams_search=ewc_optuna", "hydra.sweeper.n_trials=2", "data=synthetic",
           "pretrain.epochs=1", "method.epochs_per_stage=1", "logger=none", "divergence_loss=0.0001",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no trial of the search returned a value" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep" / "optimization_results.yaml").exists()
    trials = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/metrics.json")]
    assert len(trials) == 2 and all(t["divergence"] for t in trials)
