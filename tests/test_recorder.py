"""Result files: atomic writes, and nothing left that a later step would trust."""

from __future__ import annotations

import json

import pytest
import torch

from seqft_lightning.io import atomic_torch_save, atomic_write_json
from seqft_lightning.evaluation import Evaluation
from seqft_lightning.recorder import RunRecorder


def test_start_removes_stale_metrics_and_temp_files(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "confusion").mkdir()
    (tmp_path / "confusion" / ".stage_1.csv.abc.tmp").write_text("half")
    RunRecorder(tmp_path, [3]).start()
    assert not (tmp_path / "metrics.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_interrupted_write_leaves_neither_file_nor_temp(tmp_path):
    class Boom:
        def __reduce__(self):
            raise KeyboardInterrupt  # as if Ctrl-C arrived mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(tmp_path / "x.pt", {"a": Boom()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_json_replaces_whole_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"b": 1, "a": float(2)})
    atomic_write_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 3}


def test_record_stage_writes_rows_and_confusion_and_finish_writes_nan_as_null(tmp_path):
    recorder = RunRecorder(tmp_path, [3])
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion[3, 3], confusion[3, 5], confusion[5, 5] = 8, 2, 10
    loss = torch.zeros(10, dtype=torch.float64)
    metrics = {"test/acc": 0.9, "test/acc_target": 0.8, "test/acc_retained": 1.0}
    recorder.record_stage(0, "pretrain", metrics, Evaluation(confusion, loss))
    rows = (tmp_path / "stages.csv").read_text().splitlines()
    assert rows[0] == "stage,trained_classes,evaluated,acc,precision,recall,f1,loss,forgetting"  # every method
    class_2 = next(r for r in rows if ",class_2," in r)
    assert class_2 == "0,pretrain,class_2,,0.0,0.0,0.0,,"  # no samples: undefined cells are empty, never "nan"
    target = next(r for r in rows if ",target," in r)
    assert target.startswith("0,pretrain,target,0.8,")
    assert (tmp_path / "confusion" / "stage_0.csv").read_text().splitlines()[4].startswith("3,0,0,0,8,0,2")
    recorder.finish({"final": {"cl/forgetting": float("nan")}})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"final": {"cl/forgetting": None}}
