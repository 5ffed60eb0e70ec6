"""Progress and warning lines on stderr (stdout carries results), written so they do not break progress bars."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)
