"""Every column of the result files, with its unit: the machine-readable schema (`bench list columns`).

Units: accuracies are percentages (correct / total x 100, not rounded: MNIST's 10,000 test images give
two decimals, its 6,000 validation images more); sparsities and densities are fractions in [0, 1];
times are wall-clock seconds rounded to 0.01. Columns named by a prefix (``hp_``, ``train_``) are listed
once with the prefix; `tests/test_hostile.py` checks that every column a run writes is described here.
"""

from __future__ import annotations

# file -> column (or prefix ending in "_*") -> (unit, meaning)
COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "runs.csv": {
        "cell": ("id", "hash of the cell's complete settings"),
        "experiment": ("id", "hash of every setting but the seed: rows with one experiment id are seeds of one "
                             "experiment, the only rows a report averages"),
        "method": ("name", "the method (bench list methods)"),
        "role": ("name", "the cell's part in a comparison: reference (dense), search (a method with a search "
                         "loop), baseline (a one-shot method) or sanity (a sanity-check ablation)"),
        "granularity": ("name", "unstructured (per weight) or structured (per unit)"),
        "regime": ("name", "strong (weights frozen at init), weak (surviving weights trained after the search) "
                           "or joint (weights trained with the mask during the search)"),
        "sanity": ("name", "none, or the sanity check applied to the parent cell's mask: random, shuffle, reinit"),
        "arch": ("name", "architecture"),
        "dataset": ("name", "dataset"),
        "target_sparsity": ("fraction", "target fraction of prunable weights (structured: of units) removed"),
        "sparsity": ("fraction", "achieved fraction of prunable weights removed by the final mask"),
        "unit_sparsity": ("fraction", "achieved fraction of gated units removed (structured cells)"),
        "seed": ("int", "seed of model init, mask init and data order"),
        "epochs": ("epochs", "search epochs asked for"),
        "batch_size": ("examples", "batch size"),
        "test_acc": ("%", "top-1 test accuracy of the final binary mask"),
        "val_acc": ("%", "top-1 validation accuracy of the final binary mask"),
        "sparsity_before_projection": ("fraction", "sparsity of the search's own binary mask before the final projection"),
        "val_acc_before_projection": ("%", "validation accuracy of the search's own binary mask"),
        "val_acc_after_projection": ("%", "validation accuracy just after the projection (before weight training)"),
        "num_classes": ("classes", "the dataset's classes (chance accuracy: 100 / num_classes %)"),
        "prunable_weights": ("weights", "weights of every masked Linear/Conv layer"),
        "kept_weights": ("weights", "weights the final mask keeps"),
        "layer_collapse": ("layers", "layers with every weight pruned"),
        "collapsed_layers": ("names", "those layers, ';'-separated"),
        "flops": ("MACs", "multiply-accumulates of one forward pass on one input, kept weights only (benchmarks/cost.py)"),
        "flops_dense": ("MACs", "the same for the dense model"),
        "bytes_dense": ("bytes", "the model's parameters in fp32"),
        "bytes_ticket": ("bytes", "to rebuild the ticket: strong, seed + LZMA-compressed 1-bit mask; weak and joint, "
                                  "kept fp32 weights + that mask + unmasked trained parameters"),
        "bytes_mask_raw": ("bytes", "the mask at 1 bit per prunable weight"),
        "latency_ms_*": ("ms", "--measure-latency: median CPU time of one forward pass of a form (dense, masked: "
                               "zeros in dense weights, csr: Linear layers as torch.sparse CSR, slim: a structured ticket's "
                               "removed units cut out, when that is exact) at a batch size"),
        "latency_threads": ("int", "--measure-latency: torch CPU threads during the timing"),
        "search_epochs": ("epochs", "epochs spent finding the mask (dense pre-training included)"),
        "search_s": ("s", "wall seconds spent finding the mask (a sanity check: its parent's)"),
        "search_from": ("id", "the parent cell whose search a sanity check resumed from, else empty"),
        "train_epochs": ("epochs", "weight-training epochs after the search (weak regime, dense)"),
        "train_s": ("s", "wall seconds of weight training"),
        "train_*": ("varies", "the weight-training recipe (benchmarks/recipe.py), when weights are trained (weak and "
                               "joint regimes, dense)"),
        "weight_init": ("name", "initial weights"),
        "activation": ("name", "nonlinearity in place of the model's nn.ReLU modules (relu, prelu, leaky)"),
        "exclude": ("patterns", "module-name patterns never masked, ';'-separated"),
        "val_size": ("fraction", "fraction of the training split held out for validation"),
        "train_size": ("examples", "training examples used"),
        "tuned": ("study:trial", "the bench tune configuration the cell ran with, or default"),
        "bn_recalibrated": ("bool", "BatchNorm statistics recomputed under the final mask"),
        "amp": ("bool", "bf16 autocast in training steps"),
        "compile": ("bool", "torch.compile of the training forward"),
        "wall_s": ("s", "wall seconds of the whole cell, earlier interrupted runs included"),
        "device": ("name", "device type and name"),
        "threads": ("int", "torch CPU threads"),
        "mkl_cbwr": ("mode", "Intel MKL's reproducibility mode (MKL_CBWR; AUTO,STRICT: the same bits at any "
                             "thread count)"),
        "torch": ("version", "library version"),
        "torchvision": ("version", "library version"),
        "timm": ("version", "library version"),
        "python": ("version", "Python version"),
        "ticketbench": ("version", "this suite's version"),
        "hp_*": ("varies", "every method hyperparameter and recorded protocol choice"),
        "lambda_final": ("float", "CRBG, CS: the penalty weight lambda the target control ended the search with (a "
                                  "result, not a hyperparameter; hp_lam is where it started)"),
        "status": ("name", "ok, or failed (then error says why and the numbers are absent)"),
        "error": ("text", "first line of the failure"),
    },
    "curves.csv": {
        "cell": ("id", "the cell"), "method": ("name", "method"), "granularity": ("name", "granularity"),
        "regime": ("name", "regime"), "sanity": ("name", "sanity check"),
        "target_sparsity": ("fraction", "target"), "seed": ("int", "seed"),
        "phase": ("name", "pretrain, search or train"), "epoch": ("int", "epoch within the phase, from 1"),
        "train_loss": ("nats", "mean task loss over the epoch's steps (cross-entropy; CTS: its KL to the dense "
                               "net), without any penalty"),
        "penalty": ("float", "search epochs of a method with a penalty (CRBG, CS): its mean value over the epoch's "
                             "steps, lambda included (the search minimised train_loss + penalty)"),
        "val_acc": ("%", "validation accuracy of the binary mask at the end of the epoch"),
        "sparsity": ("fraction", "sparsity of the current binary mask"),
        "lambda": ("float", "penalty weight (CRBG, CS) or balancing coefficient (CTS)"),
        "beta": ("float", "CS temperature"),
        "round": ("float", "IMP round (1-based) the epoch belongs to"),
        "centre": ("float", "CS sigmoid centre and binary threshold (below 0 while the density floor holds)"),
    },
    "layers.csv": {
        "cell": ("id", "the cell"), "layer": ("name", "module name"), "shape": ("shape", "weight shape, out x in"),
        "weights": ("weights", "weights in the layer"), "kept": ("weights", "weights the final mask keeps"),
        "sparsity": ("fraction", "fraction removed"), "units": ("units", "gated units (structured)"),
        "units_kept": ("units", "units kept (structured)"),
        "flops": ("MACs", "the layer's multiply-accumulates for one input, kept weights only"),
        "flops_dense": ("MACs", "the same with every weight"),
    },
}


def describe(file: str, column: str) -> tuple[str, str] | None:
    """(unit, meaning) of `column` in `file`, through a prefix entry when the column has one; None if unknown."""
    table = COLUMNS[file]
    if column in table:
        return table[column]
    prefix = next((p for p in table if p.endswith("_*") and column.startswith(p[:-1])), None)
    return table[prefix] if prefix else None
