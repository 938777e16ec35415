"""Fine-tuning methods: the pretrained baseline alone, sequential stages, one joint stage.

Sequential and joint run through the same stage loop; they differ only in the list of class
groups they hand it: ``[[3], [4], [7]]`` versus ``[[3, 4, 7]]``. With the defaults both present the
same number of samples: 3 stages × 1000 samples × 10 epochs = 1 stage × 3000 samples × 10 epochs.
"""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from seqft_lightning.config import stages_of, task_classes
from seqft_lightning.runner import Runner


def run_baseline(runner: Runner, cfg: DictConfig) -> dict:
    """No fine-tuning: the pretrained model is the result."""
    return {}


def _stages(cfg: DictConfig) -> list[list[int]]:
    return stages_of(cfg)


def run_sequential(runner: Runner, cfg: DictConfig) -> dict:
    """One stage per entry of ``method.stages``, in order, each with a fresh optimizer."""
    m = cfg.method
    runner.train_stages(_stages(cfg), m.epochs_per_stage, m.batch_size, instantiate(m.optimizer))
    return {}


def run_joint(runner: Runner, cfg: DictConfig) -> dict:
    """One stage on the union of every stage's task samples (shuffled together)."""
    m = cfg.method
    runner.train_stages([task_classes(_stages(cfg))], m.epochs_per_stage, m.batch_size, instantiate(m.optimizer))
    return {}
