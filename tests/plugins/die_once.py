"""A test plugin: the method `dieonce` kills its own worker process the first time it runs (the flag file
in $DIE_ONCE_FLAG records that), then behaves as Edge-Popup. Used to show that Ray retries a cell whose
worker died."""

from __future__ import annotations

import os
from pathlib import Path

from methods import register
from methods.edgepopup import EdgePopup


class DieOnce(EdgePopup):
    """Edge-Popup whose first run kills its worker process."""

    name = "dieonce"

    def prepare(self, ctx) -> None:
        flag = Path(os.environ["DIE_ONCE_FLAG"])
        if not flag.exists():
            flag.write_text("died\n")
            os._exit(1)


register(DieOnce)
