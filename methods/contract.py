"""What a method and the trainer agree on: the regimes, the phase names a method lists (`Pruner.phases`),
the roles a row can play in a comparison, and what the trainer lends a method (`SearchContext`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch
from torch import Tensor, nn

Granularity = Literal["unstructured", "structured"]
Regime = Literal["strong", "weak", "joint"]
REGIMES: tuple[str, ...] = ("strong", "weak", "joint")
ROLES: tuple[str, ...] = ("reference", "search", "baseline", "sanity")  # a row's part in a comparison


PHASES: tuple[str, ...] = ("pretrain", "prepare", "search", "finalize", "ablate", "rewind", "train", "recalibrate")
CHECKPOINTED: tuple[str, ...] = ("pretrain", "search", "train")  # epoch loops: saved every epoch, resumed mid-way


@dataclass
class SearchContext:
    """What the trainer lends a method before its search (`Pruner.prepare`)."""

    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]  # one epoch of (input, label), no augmentation
    criterion: Callable[[Tensor, Tensor], Tensor]
    # a fixed sample of n training examples per class, as batches of the cell's size (one-shot scores)
    sample: Callable[[int], list[tuple[Tensor, Tensor]]] | None = None
    # the cell's weight-training recipe over `params` for `steps` steps: (optimiser, per-step LR schedule)
    weight_optimizer: Callable[[list[nn.Parameter], int], tuple[torch.optim.Optimizer, Any]] | None = None
