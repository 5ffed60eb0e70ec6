"""User extensions: modules named in ``$TICKETBENCH_PLUGINS`` (comma-separated) are imported so their
`register`, `register_model` and `register_dataset` calls apply, in the driver and in every worker."""

from __future__ import annotations

import importlib
import os

from benchmarks.errors import UserError


def load_plugins() -> None:
    for name in filter(None, (n.strip() for n in os.environ.get("TICKETBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as e:  # not found, a syntax error, a name taken, anything its import raises
            first = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"plugin module {name!r} from $TICKETBENCH_PLUGINS failed to import: "
                            f"{type(e).__name__}: {first}") from None
