"""Methods by name. Adding one is a file plus one line in `methods/__init__.py`."""

from __future__ import annotations

from methods.base import Pruner

METHODS: dict[str, type[Pruner]] = {}


def register(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: make `cls` available as ``cls.name``."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Pruner]:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None
