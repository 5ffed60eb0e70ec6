"""Dense: no mask, trained weights. The upper reference in both regimes (an untrained dense network
is chance level, so in the strong regime too `dense` means trained)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.base import Pruner
from methods.hparams import Hparams
from methods.pai import OneShotMask


@dataclass
class DenseHparams(Hparams):
    pass


class Dense(Pruner):
    """No mask (sparsity 0); its weights are trained with the standard recipe in both regimes."""

    name = "dense"
    Hparams = DenseHparams
    mask_cls = OneShotMask
    searches = False
    dense = True
    weight_init = "kaiming_normal"

    def finalize(self) -> None:
        """Every mask stays open."""
