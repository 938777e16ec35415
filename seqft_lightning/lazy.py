"""Lazy package exports (PEP 562), so that importing a package costs nothing until a name is used:
``merging`` builds mergers without torch, ``data`` gives torch-only tools its splits without
Lightning."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(modules: dict[str, list[str]]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``{module path: names it exports}``: a name's module is
    imported on first use of the name."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(name)

    return __getattr__
