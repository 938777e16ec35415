"""Models: plain torch networks (``components``: MLP, CNN) and the Lightning wrapper (``classifier``).
The names (``__init__.pyi``) load on first use through ``lazy_loader``: building a network for the
checks before a run does not pay for Lightning's import."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
