"""Shared fixtures for the core tests (no autouse fixtures: other test files share this folder).

* ``repo_root``: the repository (holds ``conf/``, ``data/mnist`` and ``train.py``).
* ``compose_cfg``: ``compose_cfg(overrides, output_dir, cache_dir)`` -> composed ``train`` config.
* ``compose``: ``compose(overrides)`` -> config whose ``paths.output_dir``/``paths.cache_dir`` lie
  in this test's ``tmp_path`` (``<tmp>/run`` and ``<tmp>/cache``).
* ``mnist_dm``: one set-up real-MNIST datamodule (default split) for the whole session;
  treat it as read-only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import pytest

import seqft_lightning  # noqa: F401  (registers the `project_root` resolver before any compose)
from seqft_lightning.provenance import KERNEL_ENVIRONMENTS

# The default `cpu_kernels=avx2` is pinned before torch loads; tests call train() in this process.
os.environ.update(KERNEL_ENVIRONMENTS["avx2"])

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
VENDORED_MNIST = REPO_ROOT / "data" / "mnist"


def compose_train_config(overrides: Sequence[str], output_dir: str | Path, cache_dir: str | Path | None = None):
    """Compose ``conf/train.yaml`` with ``overrides`` plus the output (and cache) directory."""
    from hydra import compose, initialize_config_dir

    extra = [f"paths.output_dir={output_dir}"]
    if cache_dir is not None:
        extra.append(f"paths.cache_dir={cache_dir}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, *extra])


def per_sample_fisher(net, x, y) -> dict:
    """Reference diagonal empirical Fisher: ``mean_n g_n²`` from one backward pass per sample (a plain loop,
    nothing from the package), for checking the package's vectorised estimates."""
    import torch.nn.functional as F

    ref = {n: p.detach().new_zeros(p.shape) for n, p in net.named_parameters()}
    for i in range(len(y)):
        net.zero_grad()
        F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in net.named_parameters():
            ref[n] += p.grad ** 2 / len(y)
    return ref


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def compose_cfg() -> Callable:
    return compose_train_config


@pytest.fixture()
def compose(tmp_path) -> Callable:
    """``compose(overrides)``: the composed config, writing into ``tmp_path``."""

    def _compose(overrides: Sequence[str] = ()):
        return compose_train_config(overrides, tmp_path / "run", tmp_path / "cache")

    return _compose


@pytest.fixture(scope="session")
def mnist_dm():
    """Real MNIST, default split (tasks 3/4/7 x 1000, calibration 5000, split_seed 0), set up once."""
    from seqft_lightning.data import MNISTTaskDataModule

    dm = MNISTTaskDataModule(data_dir=str(REPO_ROOT / "data" / "cache"), vendored_dir=str(VENDORED_MNIST))
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture(scope="session")
def mnist_train_labels(mnist_dm):
    """The 60000 training labels, read straight from the IDX file (independent of the package)."""
    import numpy as np
    import torch

    raw = Path(mnist_dm.data_dir) / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = raw.read_bytes()
    assert int.from_bytes(data[:4], "big") == 2049 and int.from_bytes(data[4:8], "big") == 60000
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64))
