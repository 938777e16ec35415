"""seqft-lightning: which way of fine-tuning a pretrained classifier is best?

``train(cfg)`` runs one configured experiment (see :mod:`seqft_lightning.api`). Heavy
imports (torch, Lightning) are deferred so that ``compare`` and config tools start fast.
"""

__version__ = "0.1.0"

from seqft_lightning import resolvers as _resolvers
from seqft_lightning.lazy import lazy_exports

_resolvers.register()
__getattr__ = lazy_exports({"seqft_lightning.api": ["train"]})


__all__ = ["train"]
