"""Collects one run's evaluations and curves and writes its result files (defined in
:mod:`seqft_lightning.contract`; README.md, "Outputs of a run (the contract)"). Every file is written
atomically, ``metrics.json`` last, so an interrupted run never leaves a folder that looks complete."""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import seqft_lightning.contract as contract
from seqft_lightning.cl_metrics import forgetting_matrix
from seqft_lightning.evaluation import Evaluation
from seqft_lightning.io import atomic_torch_save, atomic_write_json, atomic_write_text
from seqft_lightning.metrics import group_row, stage_rows

log = logging.getLogger(__name__)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV of ``rows``; undefined (NaN) is an empty cell, as a missing column value is."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows({k: "" if _is_nan(v) else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: store it as ``null``."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return None if _is_nan(value) else value


def _show(value: float) -> str:
    """A fraction for the console, in percent (``97.59 %``), or "undefined" (a group with no samples)."""
    return "undefined" if math.isnan(value) else f"{100 * value:.2f} %"


def classes_label(classes: Sequence[int] | str) -> str:
    """``[3, 4, 7]`` -> ``"3+4+7"``; labels such as ``"pretrain"`` pass through."""
    return classes if isinstance(classes, str) else "+".join(str(int(c)) for c in classes)


@dataclass(frozen=True)
class StageRecord:
    """The test evaluation after one stage (0 = the pretrained baseline)."""

    stage: int
    trained: str  # classes_label of what the stage trained
    metrics: dict[str, float]
    evaluation: Evaluation


class RunRecorder:
    """Collects each stage's evaluation (:attr:`stages`, in order) and the ``curves.csv`` rows
    (:attr:`curves`, ``contract.CURVE_COLUMNS``); writes the run's result files."""

    def __init__(self, run_dir: str | Path, target_classes: Sequence[int]):
        self.run_dir = Path(run_dir)
        self.target_classes = list(target_classes)
        self.stages: list[StageRecord] = []
        self.curves: list[dict] = []
        self._rows: list[dict] = []
        self._task_rows: list[dict] = []

    def start(self) -> None:
        """Remove what an earlier run in this folder left: its result files (an old ``metrics.json`` would make
        a crashed rerun look complete; a merging run's ``calibration.csv`` would be read as this run's), and
        the temporary files of a killed writer. ``config.json``, ``train.log`` and TensorBoard's events stay."""
        for name in (contract.METRICS_FILE, contract.STAGES_FILE, contract.CURVES_FILE, contract.CALIBRATION_FILE,
                     contract.LAMBDA_TEST_FILE, contract.RUN_INFO_FILE):
            (self.run_dir / name).unlink(missing_ok=True)
        for folder in (contract.CONFUSION_DIR, contract.CHECKPOINT_DIR):
            shutil.rmtree(self.run_dir / folder, ignore_errors=True)
        for stale in self.run_dir.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def record_stage(self, stage: int, trained: Sequence[int] | str, metrics: dict[str, float], evaluation: Evaluation) -> None:
        """Record the test evaluation after ``stage`` (0 = baseline) and write its files."""
        label = classes_label(trained)
        self.stages.append(StageRecord(stage, label, dict(metrics), evaluation))
        self._rows += stage_rows(stage, label, evaluation.confusion, evaluation.loss_per_class, self.target_classes)
        self.write_csv(contract.confusion_file(stage), [{"true": i, **{f"pred_{j}": n for j, n in enumerate(row)}}
                                                        for i, row in enumerate(evaluation.confusion.tolist())])
        self._write_stages()
        log.info("stage %d (%s): test acc %s, target %s, retained %s", stage, label,
                 *(_show(metrics[f"test/{k}"]) for k in ("acc", "acc_target", "acc_retained")))

    def add_task_rows(self, task_groups: Sequence[Sequence[int]], trained_stages: Sequence[Sequence[int]]) -> None:
        """Rows ``evaluated = task_<j>`` for every recorded stage (the accuracy matrix R). Stage ``k >= 1``
        trained ``trained_stages[k-1]``; task ``j`` counts as trained from the first stage after which
        all its classes were; ``forgetting`` is :func:`~seqft_lightning.cl_metrics.forgetting_matrix`
        (positive = accuracy lost; empty until the task was trained and followed by another stage)."""
        seen: set[int] = set()
        trained_at, rows = [-1] * len(task_groups), []  # -1: not trained yet
        for i, record in enumerate(self.stages):
            if record.stage >= 1:
                seen |= set(trained_stages[record.stage - 1])
            for j, classes in enumerate(task_groups):
                if trained_at[j] < 0 and record.stage >= 1 and set(classes) <= seen:
                    trained_at[j] = i
                rows.append({"stage": record.stage, "trained_classes": record.trained, "evaluated": f"task_{j}",
                             **group_row(record.evaluation.confusion, record.evaluation.loss_per_class, classes)})
        R = np.array([row["acc"] for row in rows]).reshape(len(self.stages), len(task_groups))
        for row, forgetting in zip(rows, forgetting_matrix(R, trained_at).flatten()):
            row["forgetting"] = float(forgetting)
        self._task_rows = rows

    def _write_stages(self) -> None:
        atomic_write_text(self.run_dir / contract.STAGES_FILE, _csv_text(self._rows + self._task_rows, contract.STAGE_COLUMNS))

    def write_csv(self, name: str, rows: Sequence[dict]) -> None:
        """Write another long-format CSV result (e.g. ``calibration.csv``) atomically."""
        columns = list(dict.fromkeys(k for row in rows for k in row))
        atomic_write_text(self.run_dir / name, _csv_text(rows, columns))

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """``torch.save`` ``state`` to ``checkpoints/<name>`` atomically."""
        return atomic_torch_save(self.run_dir / contract.CHECKPOINT_DIR / name, state)

    def save_net(self, name: str, net: torch.nn.Module, **meta: Any) -> Path:
        """Save ``net``'s ``state_dict`` (on the CPU) plus ``meta`` to ``checkpoints/<name>``."""
        return self.save_checkpoint(name, {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, **meta})

    def finish(self, metrics: dict) -> Path:
        """Write ``curves.csv``, ``stages.csv`` and finally ``metrics.json``."""
        atomic_write_text(self.run_dir / contract.CURVES_FILE, _csv_text(self.curves, contract.CURVE_COLUMNS))
        self._write_stages()
        path = atomic_write_json(self.run_dir / contract.METRICS_FILE, _json_safe(metrics))
        log.info("wrote %s", path)
        return path
