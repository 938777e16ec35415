"""Retention strategies for sequential fine-tuning, one small class each: ``Retention`` (the no-op
``none``: plain fine-tuning), ``Replay``, ``EWC``, ``LwF``, ``L2SP`` and ``Freeze``, built from
``conf/retention/*.yaml`` with ``hydra.utils.instantiate``."""

from seqft_lightning.retention.base import Retention
from seqft_lightning.retention.ewc import EWC
from seqft_lightning.retention.freeze import Freeze
from seqft_lightning.retention.l2sp import L2SP
from seqft_lightning.retention.lwf import LwF
from seqft_lightning.retention.replay import Replay

__all__ = ["Retention", "Replay", "EWC", "LwF", "L2SP", "Freeze"]
