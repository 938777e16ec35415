"""Collects one run's evaluations and curves and writes its result files.

The files, their columns and units are defined in :mod:`seqft_lightning.contract` (and README.md,
"Outputs of a run (the contract)"). Every file is written atomically; ``metrics.json`` is written last, so an
interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from seqft_lightning import contract
from seqft_lightning.cl_metrics import forgetting_matrix
from seqft_lightning.evaluation import Evaluation
from seqft_lightning.io import atomic_torch_save, atomic_write_json, atomic_write_text
from seqft_lightning.metrics import group_row, stage_rows

log = logging.getLogger(__name__)


def _csv_cell(value: Any) -> Any:
    """Undefined (NaN) is an empty cell, as a missing column value is (contract.py)."""
    return "" if isinstance(value, float) and math.isnan(value) else value


def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: store it as ``null``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _show(value: float) -> str:
    """A fraction for the console, in percent as every console and report shows it (``97.59 %``), or
    "undefined" (a group with no samples)."""
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
    """Collects each stage's evaluation and the training curves; writes the run's result files."""

    def __init__(self, run_dir: str | Path, target_classes: Sequence[int]):
        self.run_dir = Path(run_dir)
        self.target_classes = list(target_classes)
        self._stages: list[StageRecord] = []
        self._rows: list[dict] = []
        self._task_rows: list[dict] = []
        self._curves: list[dict] = []

    def start(self) -> None:
        """Invalidate what an earlier run left in this folder before writing anything new.

        An old ``metrics.json`` would make a crashed rerun look complete, so it goes first;
        temporary files of a killed writer go too.
        """
        (self.run_dir / contract.METRICS_FILE).unlink(missing_ok=True)
        for stale in self.run_dir.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def stages(self) -> list[StageRecord]:
        """Every recorded stage, in order (a copy)."""
        return list(self._stages)

    def curves(self) -> list[dict]:
        """The ``curves.csv`` rows so far (a copy)."""
        return list(self._curves)

    def add_curves(self, rows: Sequence[dict]) -> None:
        """Append ``curves.csv`` rows (``contract.CURVE_COLUMNS``)."""
        self._curves.extend(rows)

    def record_stage(self, stage: int, trained: Sequence[int] | str, metrics: dict[str, float], evaluation: Evaluation) -> None:
        """Record the test evaluation after ``stage`` (0 = baseline) and write its files."""
        label = classes_label(trained)
        self._stages.append(StageRecord(stage, label, dict(metrics), evaluation))
        self._rows += stage_rows(stage, label, evaluation.confusion, evaluation.loss_per_class, self.target_classes)
        self._write_confusion(stage, evaluation.confusion)
        self._write_stages()
        log.info(
            "stage %d (%s): test acc %s, target %s, retained %s",
            stage, label, *(_show(metrics[f"test/{k}"]) for k in ("acc", "acc_target", "acc_retained")),
        )

    def add_task_rows(self, task_groups: Sequence[Sequence[int]], trained_stages: Sequence[Sequence[int]]) -> None:
        """Rows ``evaluated = task_<j>`` for every recorded stage (the accuracy matrix R).

        Stage ``k >= 1`` trained ``trained_stages[k-1]``; task ``j`` counts as trained from the
        first stage after which all its classes were trained. The ``forgetting`` column is
        :func:`seqft_lightning.cl_metrics.forgetting_matrix` (positive = accuracy lost; empty
        until the task has been trained and followed by another stage).
        """
        seen: set[int] = set()
        trained_at: list[int | None] = [None] * len(task_groups)
        rows = []
        for i, record in enumerate(self._stages):
            if record.stage >= 1:
                seen |= set(trained_stages[record.stage - 1])
            ev = record.evaluation
            for j, classes in enumerate(task_groups):
                if trained_at[j] is None and record.stage >= 1 and set(classes) <= seen:
                    trained_at[j] = i
                rows.append({"stage": record.stage, "trained_classes": record.trained, "evaluated": f"task_{j}", **group_row(ev.confusion, ev.loss_per_class, classes)})
        R = np.array([[row["acc"] for row in rows[i * len(task_groups):(i + 1) * len(task_groups)]] for i in range(len(self._stages))])
        F = forgetting_matrix(R, [-1 if t is None else t for t in trained_at])
        for n, row in enumerate(rows):
            row["forgetting"] = float(F[n // len(task_groups), n % len(task_groups)])
        self._task_rows = rows

    def _write_stages(self) -> None:
        atomic_write_text(self.run_dir / contract.STAGES_FILE, _csv_text(self._rows + self._task_rows, contract.STAGE_COLUMNS))

    def _write_confusion(self, stage: int, confusion: torch.Tensor) -> None:
        n = confusion.shape[0]
        rows = [{"true": i, **{f"pred_{j}": int(confusion[i, j]) for j in range(n)}} for i in range(n)]
        atomic_write_text(self.run_dir / contract.confusion_file(stage), _csv_text(rows, ["true"] + [f"pred_{j}" for j in range(n)]))

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

    def write_run_info(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / contract.RUN_INFO_FILE, info)

    def finish(self, metrics: dict) -> Path:
        """Write ``curves.csv``, ``stages.csv`` and finally ``metrics.json``."""
        atomic_write_text(self.run_dir / contract.CURVES_FILE, _csv_text(self._curves, contract.CURVE_COLUMNS))
        self._write_stages()
        path = atomic_write_json(self.run_dir / contract.METRICS_FILE, _json_safe(metrics))
        log.info("wrote %s", path)
        return path
