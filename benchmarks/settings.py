"""Settings declared once.

Two kinds. A dataclass field made with `setting` carries its flag's help and choices; `add_flags` turns the
fields of a settings class into command-line flags (``--train-size`` for ``train_size``; lists
comma-separated, booleans switches). A *cell setting* (`cell_setting`) is a result-changing setting every
cell of a sweep shares (regime, epochs, batch size, ...): its one declaration makes it a ``bench run`` and
``bench tune`` flag and YAML key (`add_cell_setting_flags`), a setting of every `benchmarks.spec.Cell` and
so part of its id, a column of every row, part of the report's grouping (`reports.stats`) and, unless it
is a budget, of the key by which `bench run --tuned` finds a tuned configuration. A plugin may declare its
own the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

SCALARS: dict[str, type] = {"int": int, "float": float, "str": str}


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None, metavar: str | None = None) -> Any:
    """A settings field with its flag's help text (the default is appended) and allowed values."""
    meta = {"help": help, "choices": choices, "metavar": metavar}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class CellSetting:
    """One cell setting (see the module docstring). `since_start`: cell ids always name it (the settings of
    the first ids); else only when it differs from its default, so older ids stay. `budget`: how long or on
    how much a cell trains; a tuned configuration found at one budget is used at any other. `check` returns
    a one-line problem with a value, or None."""

    name: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    since_start: bool = False
    budget: bool = False
    check: Callable[[Any], str | None] | None = None

    @property
    def kind(self) -> type:
        return type(self.default)

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` (already of `kind`), or None."""
        if self.choices is not None and value not in self.choices:
            return f"unknown {self.name.replace('_', ' ')} {value!r}; choose from {', '.join(self.choices)}"
        return self.check(value) if self.check is not None else None


CELL_SETTINGS: dict[str, CellSetting] = {}


def cell_setting(name: str, default: Any, help: str, choices: tuple[str, ...] | None = None, *,
                 since_start: bool = False, budget: bool = False,
                 check: Callable[[Any], str | None] | None = None) -> CellSetting:
    """Declare a cell setting (see the module docstring); a name already taken is refused."""
    if name in CELL_SETTINGS:
        raise ValueError(f"cell setting {name!r} is already declared")
    if type(default) not in (bool, int, float, str):
        raise ValueError(f"cell setting {name!r}: the default must be a bool, int, float or str")
    declared = CellSetting(name, default, help, choices, since_start, budget, check)
    CELL_SETTINGS[name] = declared
    return declared


def at_least(low: float, what: str = "") -> Callable[[Any], str | None]:
    """A `check`: the value is at least `low` (`what` says what `low` means, e.g. "or 0 for all")."""
    return lambda v: None if v >= low else f"must be at least {low:g}{what}, got {v}"


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


def _shown(value: Any) -> str:
    return (",".join(map(str, value)) or "none") if isinstance(value, list) else str(value)


def _add_flag(parser: argparse.ArgumentParser, flag: str, dest: str, kind: str, default: Any, help: str,
              choices: tuple[str, ...] | None, metavar: str | None, defaults: bool) -> None:
    # None: the help says what happens; a switch is off unless given
    shown = "" if default is None or isinstance(default, bool) else f" (default {_shown(default)})"
    kwargs: dict[str, Any] = {"dest": dest, "help": help + shown}
    if kind == "bool":
        kwargs.update(action="store_true", default=default if defaults else None)
    else:
        kwargs["type"] = csv_list(SCALARS[kind[5:-1]]) if kind.startswith("list[") else SCALARS[kind]
        kwargs.update(default=default if defaults else None, choices=choices,
                      metavar=metavar or (None if choices else dest.rsplit(".", 1)[-1].upper()))
    parser.add_argument(flag, **kwargs)


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", dest_prefix: str = "",
              defaults: bool = False, skip: tuple[str, ...] = ()) -> None:
    """One flag per `setting` field of `cls` (except those named in `skip`): ``--<prefix><name>`` into
    ``<dest_prefix><name>``. With `defaults` False every flag defaults to None (not given), so a YAML file's
    values survive underneath."""
    for f in flag_fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        _add_flag(parser, f"--{prefix}{f.name.replace('_', '-')}", dest_prefix + f.name,
                  str(f.type).replace(" | None", ""), default, f.metadata["help"], f.metadata["choices"],
                  f.metadata["metavar"], defaults)


def add_cell_setting_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per declared cell setting (default None: not given)."""
    for s in CELL_SETTINGS.values():
        if s.name not in skip:
            _add_flag(parser, f"--{s.name.replace('_', '-')}", s.name, s.kind.__name__, s.default,
                      s.help + " (part of the cell id)", s.choices, None, False)
