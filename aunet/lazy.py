"""Lazy re-exports for package facades (PEP 562): a name loads its module on first use.

So ``import aunet`` or ``import aunet.runtime`` costs nothing, and ``aunet.build_model`` imports torch only
when it is called for.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``names`` (attribute -> the module that defines it)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
