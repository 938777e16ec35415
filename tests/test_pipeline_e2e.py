"""End to end: short real-MNIST runs through ``train(cfg)`` and a synthetic sweep through ``train.py -m``.

Runs of this module (CPU, few batches), sharing one baseline cache unless said otherwise:

* ``seq``: sequential, cache miss (pretrains and caches the baseline);
* ``seq_fresh``: the same config with its own empty cache (a second cache miss);
* ``joint``: joint, cache hit (same baseline key as ``seq``);
* in ``test_cache_hit_gives_the_same_metrics``: sequential again, cache hit;
* in ``test_forgetting_counts_only_since_the_tasks_own_stage``: sequential on rigged task data,
  its own cache.

The continual-learning metrics are checked against the accuracy matrix rebuilt here, with numpy,
from ``confusion/stage_<k>.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqft_lightning.models import MLP
from seqft_lightning.api import train

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SHORT = [
    "trainer=cpu",
    "pretrain.epochs=1",
    "++trainer.limit_train_batches=5",
    "method.epochs_per_stage=1",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
]
STAGE_COLUMNS = ["stage", "trained_classes", "evaluated", "acc", "precision", "recall", "f1", "loss"]
METRIC_KEYS = ["test/acc", "test/precision", "test/recall", "test/f1", "test/acc_target", "test/acc_retained"] + [
    f"test/acc_class_{k}" for k in range(10)
]


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compose_cfg):
    """``{name: (run dir, metrics returned by train)}`` for the module's shared runs."""
    base = tmp_path_factory.mktemp("e2e")
    cache = base / "cache"
    plan = {
        "seq": (["method=sequential"], cache),
        "joint": (["method=joint"], cache),
        "seq_fresh": (["method=sequential"], base / "cache_fresh"),
    }
    out = {}
    for name, (overrides, cache_dir) in plan.items():
        run_dir = base / name
        metrics, _ = train(compose_cfg([*SHORT, *overrides], run_dir, cache_dir))
        out[name] = (run_dir, metrics)
    out["cache_dir"] = cache
    return out


@pytest.mark.parametrize("name, n_stages", [("seq", 3), ("joint", 1)])
def test_metrics_json_contract(runs, name, n_stages):
    run_dir, returned = runs[name]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("method", "seed", "stages", "retention", "baseline", "final", "per_stage"):
        assert key in metrics, key
    assert metrics["method"] == {"seq": "sequential", "joint": "joint"}[name]
    assert metrics["seed"] == 0
    assert metrics["stages"] == [[3], [4], [7]]
    assert metrics["retention"] == "none"
    assert len(metrics["per_stage"]) == n_stages
    for part in [metrics["baseline"], metrics["final"], *metrics["per_stage"]]:
        for key in METRIC_KEYS:
            assert 0.0 <= part[key] <= 1.0, key
    # the final metrics are those after the last stage
    for key in METRIC_KEYS:
        assert metrics["final"][key] == metrics["per_stage"][-1][key]
    # train() returns what it wrote (NaN is stored as null)
    assert _nan_to_none(returned) == metrics


@pytest.mark.parametrize("name, trained", [("seq", ["pretrain", "3", "4", "7"]), ("joint", ["pretrain", "3+4+7"])])
def test_stages_csv_and_confusion_matrices(runs, name, trained):
    run_dir, _ = runs[name]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = _read_csv(run_dir / "stages.csv")
    assert list(rows[0])[: len(STAGE_COLUMNS)] == STAGE_COLUMNS
    evaluated_all = [r for r in rows if r["evaluated"] == "all"]
    assert [r["trained_classes"] for r in evaluated_all] == trained
    assert [int(r["stage"]) for r in evaluated_all] == list(range(len(trained)))
    groups = {r["evaluated"] for r in rows if r["stage"] == "0"}
    assert {"all", "target", "retained", *(f"class_{k}" for k in range(10))} <= groups
    per_stage = [metrics["baseline"], *metrics["per_stage"]]
    for k, row in enumerate(evaluated_all):
        assert float(row["acc"]) == pytest.approx(per_stage[k]["test/acc"])
        # confusion/stage_k.csv: 10x10 counts over the 10000 test images, consistent with acc
        conf_rows = _read_csv(run_dir / "confusion" / f"stage_{k}.csv")
        assert list(conf_rows[0]) == ["true"] + [f"pred_{j}" for j in range(10)]
        matrix = torch.tensor([[int(r[f"pred_{j}"]) for j in range(10)] for r in conf_rows])
        assert matrix.shape == (10, 10) and int(matrix.sum()) == 10000
        assert float(matrix.trace()) / 10000 == pytest.approx(per_stage[k]["test/acc"])
        target = matrix[[3, 4, 7]]
        assert float(target[:, [3, 4, 7]].diagonal().sum() / target.sum()) == pytest.approx(per_stage[k]["test/acc_target"])
    assert not (run_dir / "confusion" / f"stage_{len(trained)}.csv").exists()


def _accuracy_matrix(run_dir: Path, n_trained: int, tasks: list[list[int]], first: int = 1):
    """R[i, j]: accuracy on task j (the classes of method.stages[j]) after stage i + first,
    rebuilt from ``confusion/stage_<k>.csv`` (k = first..n_trained): correct / total over the rows
    (true classes) of the task's classes."""
    import numpy as np

    R = np.zeros((n_trained + 1 - first, len(tasks)))
    for i in range(len(R)):
        rows = _read_csv(run_dir / "confusion" / f"stage_{i + first}.csv")
        cm = np.array([[int(r[f"pred_{p}"]) for p in range(10)] for r in rows], dtype=np.int64)
        assert [int(r["true"]) for r in rows] == list(range(10))
        for j, classes in enumerate(tasks):
            R[i, j] = sum(cm[c, c] for c in classes) / cm[classes, :].sum()
    return R


def _expected_continual(R) -> dict:
    """cl/* from the accuracy matrix ``R`` [T trained stages, tasks], written out here.

    avg_acc = mean_j R[T-1, j]; bwt = mean_{j<T-1} (R[T-1, j] - R[j, j]);
    forgetting = mean_{j<T-1} (max_{j<=i<T-1} R[i, j] - R[T-1, j]): the best accuracy since the
    task's own stage minus the final one, positive = lost. With one trained stage (joint) bwt and
    forgetting are undefined (None).
    """
    import numpy as np

    T = R.shape[0]
    out = {"cl/avg_acc": float(R[T - 1].mean()), "cl/bwt": None, "cl/forgetting": None}
    if T > 1:
        out["cl/bwt"] = float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))
        out["cl/forgetting"] = float(np.mean([max(R[i, j] for i in range(j, T - 1)) - R[T - 1, j] for j in range(T - 1)]))
    return out


def _assert_continual(final: dict, expected: dict) -> None:
    for key, value in expected.items():
        if value is None:
            assert final[key] is None, (key, final[key])
        else:
            assert final[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("name, n_trained", [("seq", 3), ("joint", 1)])
def test_continual_metrics_match_the_accuracy_matrix_of_the_confusions(runs, name, n_trained):
    """cl/avg_acc, cl/bwt and cl/forgetting of metrics.json, recomputed from the confusion files
    (null bwt and forgetting for joint: one trained stage)."""
    run_dir, _ = runs[name]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stages"] == [[3], [4], [7]]
    R = _accuracy_matrix(run_dir, n_trained, metrics["stages"])
    _assert_continual(metrics["final"], _expected_continual(R))


def test_forgetting_counts_only_since_the_tasks_own_stage(compose, tmp_path, monkeypatch):
    """A run where task 1 (class 4) was better *before* its own stage: stage 1 is fed class-4
    images (labelled 4), stage 2 class-4 images labelled 7 (one full epoch each). Forgetting
    counts from the task's own stage on, so the accuracy after stage 1 must not count: here
    R = [[0, 1, 0], [0, 0, 1], [0, 0, 1]], forgetting 0; the max over every earlier stage
    (Chaudhry et al.) would give 0.5."""
    from seqft_lightning.data.datamodule import MNISTTaskDataModule
    from seqft_lightning.data.loaders import TensorBatchLoader

    original = MNISTTaskDataModule.task_dataloader

    def rigged(self, classes, batch_size):
        if list(classes) == [3]:
            x, y = self.task_data([4])
        elif list(classes) == [4]:
            x, y = self.task_data([4])
            y = torch.full_like(y, 7)
        else:
            return original(self, classes, batch_size)
        return TensorBatchLoader(x, y, batch_size, shuffle=True)

    monkeypatch.setattr(MNISTTaskDataModule, "task_dataloader", rigged)
    metrics, _ = train(compose([*SHORT, "method=sequential", "logger=none", "++trainer.limit_train_batches=16"]))
    R = _accuracy_matrix(tmp_path / "run", 3, metrics["stages"])
    # the scenario holds: task 1 peaked before its own stage (row 0), far above its later rows
    assert R[0, 1] > max(R[1, 1], R[2, 1]) + 0.5, R
    _assert_continual(json.loads((tmp_path / "run" / "metrics.json").read_text())["final"], _expected_continual(R))


@pytest.mark.parametrize("name, n_trained", [("seq", 3), ("joint", 1)])
def test_stages_csv_task_rows_match_the_confusions(runs, name, n_trained):
    """``task_<j>`` rows of stages.csv: acc = R[stage, j] (stage 0 = baseline); forgetting at
    stage k = best acc since the task's own stage (j + 1 for sequential, 1 for joint), before k,
    minus acc at k; empty where undefined."""
    run_dir, _ = runs[name]
    tasks = json.loads((run_dir / "metrics.json").read_text())["stages"]
    R = _accuracy_matrix(run_dir, n_trained, tasks, first=0)  # rows: stages 0..T
    rows = {(int(r["stage"]), r["evaluated"]): r for r in _read_csv(run_dir / "stages.csv") if r["evaluated"].startswith("task_")}
    assert sorted(rows) == sorted((k, f"task_{j}") for k in range(n_trained + 1) for j in range(len(tasks)))
    for (k, evaluated), row in rows.items():
        j = int(evaluated.split("_")[1])
        assert float(row["acc"]) == pytest.approx(R[k, j], abs=1e-12), (k, j)
        trained_at = j + 1 if name == "seq" else 1
        if k <= trained_at:
            assert row["forgetting"] == "", (k, j, row["forgetting"])
        else:
            expected = max(R[i, j] for i in range(trained_at, k)) - R[k, j]
            assert float(row["forgetting"]) == pytest.approx(expected, abs=1e-12), (k, j)


def test_curves_csv(runs):
    run_dir, _ = runs["seq"]
    rows = _read_csv(run_dir / "curves.csv")
    assert list(rows[0]) == ["stage", "epoch", "step", "split", "metric", "value"]
    train_loss = [r for r in rows if r["split"] == "train" and r["metric"] == "loss"]
    assert [int(r["stage"]) for r in train_loss] == [0, 1, 2, 3]  # one epoch per stage
    # one continuous step axis: 5 batches per stage (limit_train_batches=5)
    assert [int(r["step"]) for r in train_loss] == [5, 10, 15, 20]
    assert {r["split"] for r in rows} >= {"train", "val"}
    assert all(math.isfinite(float(r["value"])) for r in rows)


@pytest.mark.parametrize("name", ["seq", "joint"])
def test_final_checkpoint_loads_into_a_fresh_mlp(runs, name, mnist_dm):
    run_dir, metrics = runs[name]
    ckpt = torch.load(run_dir / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)
    model_cfg = {k: v for k, v in ckpt["model"].items() if k != "_target_"}
    net = MLP(**model_cfg)
    net.load_state_dict(ckpt["state_dict"], strict=True)
    # the loaded weights are the final model: they reproduce the reported test accuracy
    with torch.no_grad():
        acc = float((net(mnist_dm.test_x).argmax(1) == mnist_dm.test_y).double().mean())
    assert acc == pytest.approx(metrics["final"]["test/acc"], abs=1e-9)


def test_tensorboard_event_files(runs):
    run_dir, _ = runs["seq"]
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(p.stat().st_size > 0 for p in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"test/acc", "train/loss", "calibration/acc", "hp/calibration/acc_target"} <= tags
    assert len(events) == 1  # one event file per run, however many stages (Trainers) it had
    import yaml

    hparams = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["method.name"] == "sequential" and hparams["seed"] == 0  # the HParams tab's config


def test_determinism_two_cache_misses_are_byte_identical(runs):
    seq_dir, _ = runs["seq"]
    fresh_dir, _ = runs["seq_fresh"]
    assert (seq_dir / "metrics.json").read_bytes() == (fresh_dir / "metrics.json").read_bytes()
    assert (seq_dir / "stages.csv").read_bytes() == (fresh_dir / "stages.csv").read_bytes()


def test_cache_hit_gives_the_same_metrics(runs, compose_cfg, tmp_path, caplog):
    seq_dir, _ = runs["seq"]
    caplog.set_level(logging.INFO, logger="seqft_lightning")
    train(compose_cfg([*SHORT, "method=sequential"], tmp_path / "again", runs["cache_dir"]))
    assert "baseline cache hit" in caplog.text
    assert "baseline cache miss" not in caplog.text
    assert (tmp_path / "again" / "metrics.json").read_bytes() == (seq_dir / "metrics.json").read_bytes()
    # the replayed pretraining curve matches the one recorded when the baseline was trained
    assert (tmp_path / "again" / "curves.csv").read_bytes() == (seq_dir / "curves.csv").read_bytes()


def test_sequential_and_joint_share_one_baseline(runs):
    _, seq = runs["seq"]
    _, joint = runs["joint"]
    assert seq["baseline"] == joint["baseline"]
    assert len(list(runs["cache_dir"].glob("baseline-*.pt"))) == 1
    assert seq["final"]["test/acc"] != joint["final"]["test/acc"]  # ... and then differ


def test_synthetic_sweep_through_train_py(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "train.py", "-m", "method=sequential,joint", "seed=0,1", "data=synthetic", "trainer=cpu",
        "pretrain.epochs=1", "method.epochs_per_stage=1", "callbacks=none", "trainer.enable_progress_bar=false",
        "logger=none", f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted(sweep.rglob("metrics.json"))
    assert len(found) == 4, found
    jobs = {(m["method"], m["seed"]) for m in (json.loads(p.read_text()) for p in found)}
    assert jobs == {("sequential", 0), ("sequential", 1), ("joint", 0), ("joint", 1)}
    assert len({p.parent for p in found}) == 4


def test_progress_bar_off_alone_and_thread_pinning(compose, tmp_path):
    """`trainer.enable_progress_bar=false` works with the default callbacks (the bar callback is
    dropped), and `torch_threads` pins the intra-op threads recorded in run_info.json."""
    import torch

    from seqft_lightning.api import train

    before = torch.get_num_threads()
    try:
        train(compose(["data=synthetic", "trainer.enable_progress_bar=false", "torch_threads=1", "pretrain.epochs=1", "method.epochs_per_stage=1", "logger=none"]))
        info = json.loads((tmp_path / "run" / "run_info.json").read_text())
        assert info["torch_threads"] == 1 and (tmp_path / "run" / "metrics.json").is_file()
    finally:
        torch.set_num_threads(before)
