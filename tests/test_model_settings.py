"""Settings that depend on the model are checked with every other setting, before any work.

``plan_run`` builds the configured model (never trains it) and checks on it what only the model can
tell: its own arguments, that it takes the data's 28x28 images, and the layers ``retention=freeze``
names (MLP and CNN count and name their layers differently). A bad one is refused with the project's
one line (exit 2 through ``train.py``) before pretraining: no baseline is cached, nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqft_lightning.api import train
from seqft_lightning.errors import ConfigError
from seqft_lightning.plan import plan_run

REPO = Path(__file__).resolve().parents[1]
FAST = ["data=synthetic", "trainer=cpu", "logger=none", "callbacks=none", "pretrain.epochs=1"]

REFUSED = {
    "freeze_index_mlp": (["retention=freeze", "retention.trainable=[5,output]"], ["retention=freeze", "MLP", "index 5", "-3..2"]),
    "freeze_index_cnn": (["model=cnn", "retention=freeze", "retention.trainable=[-5]"], ["retention=freeze", "CNN", "index -5", "-4..3"]),
    "freeze_cnn_name_on_mlp": (["retention=freeze", "retention.trainable=[fc1]"], ["retention=freeze", "MLP", "'fc1'"]),
    "mlp_input_dim": (["model.input_dim=100"], ["model (MLP)", "28x28", "model.input_dim"]),
    "cnn_image_size": (["model=cnn", "model.image_size=32"], ["model (CNN)", "28x28", "model.image_size"]),
    "cnn_too_deep": (["model=cnn", "model.channels=[4,4,4,4,4,4]"], ["model", "CNN", "leave nothing"]),
}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_setting_that_does_not_fit_the_model_is_refused_before_any_work(compose, case):
    overrides, needles = REFUSED[case]
    cfg = compose([*FAST, *overrides])
    with pytest.raises(ConfigError) as info:
        train(cfg)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    assert _files(Path(cfg.paths.cache_dir)) == [] and _files(Path(cfg.paths.output_dir)) == []


@pytest.mark.parametrize("overrides", [
    ["retention=freeze", "retention.trainable=[-1,0,layers.2.bias]"],
    ["model=cnn", "retention=freeze", "retention.trainable=[fc1,output,1]"],
    ["model=cnn", "model.image_size=28", "model.padding=0"],
])
def test_settings_that_fit_the_model_pass(compose, overrides):
    plan_run(compose([*FAST, *overrides]))


def test_train_py_refuses_a_freeze_layer_the_model_lacks_with_one_line(tmp_path):
    cmd = [sys.executable, "train.py", *FAST, "retention=freeze", "retention.trainable=[5,output]",
           f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == [
        "error: retention=freeze does not fit model (MLP): Freeze: layer index 5 is out of range: the model has 3 layers "
        "with weights in net.layers (indices -3..2); fix retention.trainable"]
    assert _files(tmp_path / "cache") == []
