"""ticketbench benchmarks: model zoo, datasets, trainer, sweeps and the ``bench`` command line.

Register your own model and dataset so that ``bench run --arch mynet --dataset mine`` works::

    from benchmarks import register_model, register_dataset, Splits

    @register_model("mynet")
    def mynet(num_classes, input_shape): ...

    @register_dataset("mine")
    def mine(root, download, val_size): return Splits(train, val, test, num_classes, input_shape)

and import that module before running (``bench`` imports the modules named in ``$TICKETBENCH_PLUGINS``).
A ticket written by ``bench export`` loads as a plain module: ``from benchmarks import load_ticket``.
"""

import os

__version__ = "0.1.0"

# Intel MKL's strict reproducibility mode: its matrix products (PyTorch's CPU Linear layers) give the same bits
# at any thread count, so a cell's row does not depend on the executor that ran it (sequential, --workers,
# Ray give their cells different thread counts). MKL reads it once, at its first call: this import must come
# before any CPU matrix product of the process. Set MKL_CBWR yourself to choose otherwise.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

_LAZY = {"Splits": "benchmarks.data", "register_dataset": "benchmarks.data", "register_model": "benchmarks.zoo",
         "load_ticket": "benchmarks.export"}


def __getattr__(name: str):
    """The public API, imported on first use (so `bench status` and `bench list` need no torch)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'benchmarks' has no attribute {name!r}")


__all__ = ["Splits", "load_ticket", "register_dataset", "register_model", "__version__"]
