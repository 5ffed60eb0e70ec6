"""ticketbench benchmarks: model zoo, datasets, trainer, sweeps and the ``bench`` command line.

Register your own model and dataset so that ``bench run --arch mynet --dataset mine`` works::

    from benchmarks import register_model, register_dataset, Splits

    @register_model("mynet")
    def mynet(num_classes, input_shape): ...

    @register_dataset("mine")
    def mine(root, download, val_size): return Splits(train, val, test, num_classes, input_shape)

and import that module before running (``bench`` imports the modules named in ``$TICKETBENCH_PLUGINS``).
"""

__version__ = "0.1.0"

from benchmarks.data import Splits, register_dataset  # noqa: E402
from benchmarks.zoo import register_model  # noqa: E402

__all__ = ["Splits", "register_dataset", "register_model", "__version__"]
