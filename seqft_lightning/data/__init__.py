"""Data: MNIST-format IDX files (vendored MNIST, a local Fashion-MNIST folder), deterministic task
splits, in-memory loaders.

Submodules import lazily so that torch-only users (``bench/plain_loop.py``, ``splits``) do not
pay for Lightning's import.
"""

from seqft_lightning.lazy import lazy_exports

_EXPORTS = {
    "seqft_lightning.data.datamodule": ["FashionMNISTTaskDataModule", "IDXTaskDataModule", "MNISTTaskDataModule", "SyntheticTaskDataModule",
                                         "TaskDataModule"],
    "seqft_lightning.data.loaders": ["TensorBatchLoader"],
    "seqft_lightning.data.splits": ["Splits", "make_splits"],
}
__getattr__ = lazy_exports(_EXPORTS)
__all__ = [name for names in _EXPORTS.values() for name in names]
