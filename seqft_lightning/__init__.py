"""seqft-lightning: which way of fine-tuning a pretrained classifier is best?

``train(cfg)`` runs one configured experiment (see :mod:`seqft_lightning.api`). Heavy
imports (torch, Lightning) are deferred so that ``compare`` and config tools start fast.
"""

__version__ = "0.1.0"

from seqft_lightning import resolvers as _resolvers

_resolvers.register()


def __getattr__(name: str):
    if name == "train":
        from seqft_lightning.api import train

        return train
    raise AttributeError(name)


__all__ = ["train"]
