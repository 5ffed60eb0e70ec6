"""Settings declared once: a dataclass field made with `setting` carries its help and choices, and
`add_flags` turns the fields of a settings class into command-line flags (``--train-size`` for
``train_size``; lists comma-separated, booleans switches). A new setting is one field."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

SCALARS: dict[str, type] = {"int": int, "float": float, "str": str}


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None, metavar: str | None = None,
            cell: bool = False) -> Any:
    """A settings field with its flag's help text (the default is appended) and allowed values. `cell`: the
    value is copied unchanged into every cell (a `Cell` field of the same name: part of the cell's identity)
    and written as a column of its rows (`cell_fields`)."""
    meta = {"help": help, "choices": choices, "metavar": metavar, "cell": cell}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def csv_list(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")

    return parse


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` declared with `setting` (those that are flags)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def cell_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` declared with ``setting(..., cell=True)``: copied into cells and rows as they are."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cell")]


def _shown(value: Any) -> str:
    return (",".join(map(str, value)) or "none") if isinstance(value, list) else str(value)


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", dest_prefix: str = "",
              defaults: bool = False) -> None:
    """One flag per `setting` field of `cls`: ``--<prefix><name>`` into ``<dest_prefix><name>``. With
    `defaults` False every flag defaults to None (not given), so a YAML file's values survive underneath."""
    for f in flag_fields(cls):
        kind = str(f.type).replace(" | None", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # None: the help says what happens; a switch is off unless given
        shown = "" if default is None or isinstance(default, bool) else f" (default {_shown(default)})"
        kwargs: dict[str, Any] = {"dest": dest_prefix + f.name, "help": f.metadata["help"] + shown}
        if kind == "bool":
            kwargs.update(action="store_true", default=default if defaults else None)
        else:
            if kind.startswith("list["):
                kwargs["type"] = csv_list(SCALARS[kind[5:-1]])
            else:
                kwargs["type"] = SCALARS[kind]
            kwargs.update(default=default if defaults else None, choices=f.metadata["choices"],
                          metavar=f.metadata["metavar"] or (None if f.metadata["choices"] else f.name.upper()))
        parser.add_argument(f"--{prefix}{f.name.replace('_', '-')}", **kwargs)
