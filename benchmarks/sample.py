"""The fixed scoring sample of the pruning-at-init baselines: `per_class` training examples of every class.

SNIP's and GraSP's papers and Synaptic-Flow's code score on one fixed sample (10 examples per class) for
every pass; scoring on the epoch's shuffled batches instead gave GraSP's gradient and its Hessian-gradient
product from two different batches. The sample depends on the seed and the training split alone."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset


def labels(ds: Dataset) -> Tensor:
    """Every label of `ds`, without loading its inputs where the dataset knows them (tensors, `targets`)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[1].cpu()
    if isinstance(ds, Subset):
        return labels(ds.dataset)[torch.as_tensor(ds.indices)]
    if hasattr(ds, "targets"):
        return torch.as_tensor(ds.targets)
    return torch.as_tensor([int(ds[i][1]) for i in range(len(ds))])


def class_sample(ds: Dataset, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """(inputs, labels) of `per_class` examples of each class drawn with `seed` (all of a class that has
    fewer), in class order."""
    y = labels(ds)
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    idx = torch.cat(picks)
    if isinstance(ds, TensorDataset):
        x, t = ds.tensors
        return x[idx.to(x.device)], t[idx.to(t.device)]
    items = [ds[i] for i in idx.tolist()]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(t) for _, t in items])
