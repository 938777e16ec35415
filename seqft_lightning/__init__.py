"""seqft-lightning: which way of fine-tuning a pretrained classifier is best? ``train(cfg)`` runs one
configured experiment (:mod:`seqft_lightning.api`); torch and Lightning load only when a run starts."""

__version__ = "0.1.0"

from seqft_lightning import resolvers as _resolvers
from seqft_lightning.api import train

_resolvers.register()
__all__ = ["train"]
