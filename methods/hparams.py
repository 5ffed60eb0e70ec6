"""Hyperparameter dataclasses and the rule by which settings enter a cell id (`later`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


def later(default: Any) -> Any:
    """Declare a dataclass field added after results were published: cell ids omit it while it holds its
    default, so old results keep their ids (every field of a `Hparams` or `Cell` added from now on uses it)."""
    return field(default=default, metadata={"omit_if_default": True})


def without_later_defaults(settings: dict[str, Any], cls: Any) -> dict[str, Any]:
    """`settings` (field -> value of dataclass `cls`) as they enter a cell id: `later` fields at their
    default are left out."""
    omit = {f.name: f.default for f in fields(cls) if f.metadata.get("omit_if_default")}
    return {k: v for k, v in settings.items() if k not in omit or v != omit[k]}


def identity(obj: Any) -> dict[str, Any]:
    """A dataclass's settings as they enter a cell id: every field, except `later` ones at their default."""
    return without_later_defaults({f.name: getattr(obj, f.name) for f in fields(obj)}, type(obj))


@dataclass
class Hparams:
    """Base for a method's hyperparameters: a typed dataclass that is the single source of truth."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_regime(self, regime: str) -> None:
        """Raise ValueError where these settings have no meaning in `regime` (checked before a sweep runs)."""
