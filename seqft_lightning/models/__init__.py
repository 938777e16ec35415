"""Models: plain torch networks (``components``) and the Lightning wrapper (``classifier``)."""

_EXPORTS = {"ClassifierModule": "seqft_lightning.models.classifier", "MLP": "seqft_lightning.models.components.mlp"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = list(_EXPORTS)
