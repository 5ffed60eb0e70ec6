"""Mask-search methods behind one `Pruner` interface, found by name through the registry."""

from methods.base import Granularity, Hparams, Mask, Pruner, SparsityReport, prunable_modules
from methods.registry import METHODS, get_method, register

# One line per method.
from methods.crbg import CRBG  # noqa: E402
from methods.edgepopup import EdgePopup  # noqa: E402

register(CRBG)
register(EdgePopup)

__all__ = ["Granularity", "Hparams", "Mask", "Pruner", "SparsityReport", "prunable_modules",
           "METHODS", "get_method", "register"]
