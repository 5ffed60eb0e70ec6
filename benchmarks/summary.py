"""The summary table printed at the end of a sweep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.results import RUNS, read_rows


def summary_table(out: Path) -> str:
    """Mean test accuracy (and achieved sparsity) per method and target, over finished seeds; regime and
    sanity check are columns when the folder holds more than one of them."""
    rows = [r for r in read_rows(out / RUNS) if r["status"] == "ok"]
    if not rows:
        return "no finished cell"
    df = pd.DataFrame(rows)
    for col in ("target_sparsity", "sparsity", "test_acc"):
        df[col] = df[col].astype(float)
    keys = ["arch", "dataset", "method", "granularity"]
    keys += [k for k in ("regime", "sanity") if k in df and df[k].nunique() > 1]
    g = df.groupby(keys + ["target_sparsity"])
    table = g.agg(test_acc=("test_acc", "mean"), test_std=("test_acc", "std"), sparsity=("sparsity", "mean"),
                  seeds=("seed", "count")).reset_index()
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}")
