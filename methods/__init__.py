"""Mask-search methods behind one `Pruner` interface, found by name through the registry."""

from methods.base import Pruner
from methods.contract import Granularity
from methods.hparams import Hparams
from methods.mask import Mask, prunable_modules
from methods.sparsity import SparsityReport
from methods.registry import METHODS, get_method, register

# One line per method.
from methods.crbg import CRBG  # noqa: E402
from methods.cs import ContinuousSparsification  # noqa: E402
from methods.cts import CTS  # noqa: E402
from methods.dense import Dense  # noqa: E402
from methods.edgepopup import EdgePopup  # noqa: E402
from methods.grasp import GraSP  # noqa: E402
from methods.imp import IMP  # noqa: E402
from methods.magnitude import Magnitude  # noqa: E402
from methods.random_mask import Random  # noqa: E402
from methods.snip import SNIP  # noqa: E402
from methods.synflow import SynFlow  # noqa: E402

register(CRBG)
register(EdgePopup)
register(ContinuousSparsification)
register(CTS)
register(Dense)
register(Random)
register(Magnitude)
register(SNIP)
register(GraSP)
register(IMP)
register(SynFlow)

__all__ = ["Granularity", "Hparams", "Mask", "Pruner", "SparsityReport", "prunable_modules",
           "METHODS", "get_method", "register"]
