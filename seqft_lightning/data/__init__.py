"""Data: MNIST-format IDX files (vendored MNIST, a local Fashion-MNIST folder), deterministic task
splits, in-memory loaders. The names (``__init__.pyi``) load on first use through ``lazy_loader``, so
that the checks before a run (``mnist_files``, ``splits``) do not pay for Lightning's import."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
