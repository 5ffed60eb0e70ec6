"""Progress and warning lines on stderr (stdout carries results), written so they do not break progress bars."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def count(n: int, noun: str) -> str:
    """`n` and `noun`, plural unless n is 1: "1 epoch", "2 epochs", "1 study", "3 studies"."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else f"{n} {noun}s"
