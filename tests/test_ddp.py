"""Lightning DDP (``trainer=ddp``) through the whole pipeline, on two CPU processes (gloo).

Each rank trains on its shard of every epoch and evaluates its shard of the test set; the
confusion matrix and losses are summed over ranks, so the result files describe the full test set.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.e2e
def test_ddp_on_two_cpu_processes_writes_full_test_set_results(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "train.py", "data=synthetic", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "pretrain.epochs=1", "method.epochs_per_stage=1", "logger=none", "callbacks=none",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["per_stage"]) == 3
    with open(run_dir / "confusion" / "stage_3.csv", newline="") as handle:
        total = sum(int(v) for row in csv.DictReader(handle) for k, v in row.items() if k != "true")
    assert total == 200  # the synthetic test set, counted once (not once per rank)
    assert 0.0 < metrics["final"]["test/loss"] < 10.0
