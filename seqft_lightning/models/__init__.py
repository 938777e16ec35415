"""Models: plain torch networks (``components``: MLP, CNN) and the Lightning wrapper (``classifier``)."""

from seqft_lightning.lazy import lazy_exports

_EXPORTS = {"seqft_lightning.models.classifier": ["ClassifierModule"], "seqft_lightning.models.components.mlp": ["MLP"],
            "seqft_lightning.models.components.cnn": ["CNN"]}
__getattr__ = lazy_exports(_EXPORTS)
__all__ = [name for names in _EXPORTS.values() for name in names]
