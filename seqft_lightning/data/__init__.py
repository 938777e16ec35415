"""Data: vendored MNIST files, deterministic task splits, in-memory loaders.

Submodules import lazily so that torch-only users (``bench/plain_loop.py``, ``splits``) do not
pay for Lightning's import.
"""

_EXPORTS = {
    "MNISTTaskDataModule": "seqft_lightning.data.datamodule",
    "SyntheticTaskDataModule": "seqft_lightning.data.datamodule",
    "TaskDataModule": "seqft_lightning.data.datamodule",
    "TensorBatchLoader": "seqft_lightning.data.loaders",
    "Splits": "seqft_lightning.data.splits",
    "make_splits": "seqft_lightning.data.splits",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = list(_EXPORTS)
