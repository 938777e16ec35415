"""Per-run result files, the contract that ``compare.py`` and every later step read.

Written into the run directory (Hydra's job dir):

* ``confusion/stage_<k>.csv`` -- confusion matrix after stage ``k`` (rows = true class,
  columns = predicted class, counts); stage 0 is the pretrained baseline.
* ``stages.csv`` -- long format, one row per (stage, evaluated group): ``stage``,
  ``trained_classes`` (``"3"``, ``"3+4+7"``, ``"pretrain"``, ``"merged"``), ``evaluated`` (``all``,
  ``target``, ``retained``, ``class_0`` .. ``class_9``), ``acc``, ``precision``, ``recall``, ``f1``,
  ``loss`` (test split; fractions in [0, 1], loss in nats per sample).
* ``curves.csv`` -- training dynamics: ``stage, epoch, step, split, metric, value``.
* ``checkpoints/final.pt`` -- the final net's ``state_dict`` plus its model config.
* ``metrics.json`` -- written last: its presence means the run completed.

Every file is written atomically, so an interrupted run never leaves one that looks complete.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from seqft_lightning.io import atomic_torch_save, atomic_write_json, atomic_write_text
from seqft_lightning.metrics import STAGE_COLUMNS, group_row, stage_rows
from seqft_lightning.resume import METRICS_FILE

log = logging.getLogger(__name__)



def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
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


def classes_label(classes: Sequence[int] | str) -> str:
    return classes if isinstance(classes, str) else "+".join(str(int(c)) for c in classes)


class RunRecorder:
    """Collects each stage's evaluation and writes the run's result files."""

    def __init__(self, run_dir: str | Path, target_classes: Sequence[int]):
        self.run_dir = Path(run_dir)
        self.target_classes = list(target_classes)
        self.rows: list[dict] = []
        self.confusions: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.trained_labels: list[str] = []
        self.stage_metrics: list[dict[str, float]] = []
        self.extra_rows: list[dict] = []

    def start(self) -> None:
        """Invalidate what an earlier run left in this folder before writing anything new.

        An old ``metrics.json`` would make a crashed rerun look complete, so it goes first;
        temporary files of a killed writer go too.
        """
        (self.run_dir / METRICS_FILE).unlink(missing_ok=True)
        for stale in self.run_dir.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def record_stage(self, stage: int, trained: Sequence[int] | str, metrics: dict, confusion: torch.Tensor, loss_per_class: torch.Tensor) -> None:
        """Record the test evaluation after ``stage`` (0 = baseline) and write its files."""
        self.stage_metrics.append(dict(metrics))
        self.confusions.append(confusion.clone())
        self.losses.append(loss_per_class.clone())
        self.trained_labels.append(classes_label(trained))
        self.rows += stage_rows(stage, classes_label(trained), confusion, loss_per_class, self.target_classes)
        self.write_confusion(stage, confusion)
        self._write_stages()
        log.info(
            "stage %d (%s): test acc %.4f, target %.4f, retained %.4f",
            stage, classes_label(trained), metrics["test/acc"], metrics["test/acc_target"], metrics["test/acc_retained"],
        )

    def _write_stages(self) -> None:
        extra_columns = sorted({k for row in self.extra_rows for k in row} - set(STAGE_COLUMNS))
        atomic_write_text(self.run_dir / "stages.csv", _csv_text(self.rows + self.extra_rows, list(STAGE_COLUMNS) + extra_columns))

    def add_task_rows(self, task_groups: Sequence[Sequence[int]], trained_stages: Sequence[Sequence[int]]) -> None:
        """Rows ``evaluated = task_<j>`` for every recorded stage (the accuracy matrix R).

        Stage ``k >= 1`` trained ``trained_stages[k-1]``. The ``forgetting`` column of task ``j`` at
        stage ``k`` is the best accuracy it had at a stage since it was trained, before ``k``, minus
        its accuracy at ``k`` (positive = accuracy lost); empty until the task has been trained and
        followed by another stage.
        """
        seen: set[int] = set()
        best: dict[int, float] = {}
        for stage, (confusion, loss, trained) in enumerate(zip(self.confusions, self.losses, self.trained_labels)):
            if stage >= 1:
                seen |= set(trained_stages[stage - 1])
            for j, classes in enumerate(task_groups):
                row = {"stage": stage, "trained_classes": trained, "evaluated": f"task_{j}", **group_row(confusion, loss, classes)}
                row["forgetting"] = best[j] - row["acc"] if j in best else ""
                if stage >= 1 and set(classes) <= seen:
                    best[j] = max(best.get(j, row["acc"]), row["acc"])
                self.extra_rows.append(row)

    def write_confusion(self, stage: int, confusion: torch.Tensor) -> None:
        n = confusion.shape[0]
        rows = [{"true": i, **{f"pred_{j}": int(confusion[i, j]) for j in range(n)}} for i in range(n)]
        atomic_write_text(self.run_dir / "confusion" / f"stage_{stage}.csv", _csv_text(rows, ["true"] + [f"pred_{j}" for j in range(n)]))

    def write_curves(self, history: Sequence[dict]) -> None:
        atomic_write_text(self.run_dir / "curves.csv", _csv_text(history, ["stage", "epoch", "step", "split", "metric", "value"]))

    def write_csv(self, name: str, rows: Sequence[dict]) -> None:
        """Write another long-format CSV result (e.g. ``calibration.csv``) atomically."""
        columns = list(dict.fromkeys(k for row in rows for k in row))
        atomic_write_text(self.run_dir / name, _csv_text(rows, columns))

    def save_checkpoint(self, name: str, net: torch.nn.Module, **meta: Any) -> Path:
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        return atomic_torch_save(self.run_dir / "checkpoints" / name, {"state_dict": state, **meta})

    def finish(self, metrics: dict) -> Path:
        """Write ``stages.csv`` (with extra rows) and finally ``metrics.json``."""
        self._write_stages()
        path = atomic_write_json(self.run_dir / METRICS_FILE, _json_safe(metrics))
        log.info("wrote %s", path)
        return path
