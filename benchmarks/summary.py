"""The summary table printed at the end of a sweep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.paths import RUNS
from benchmarks.results import read_rows


def summary_table(out: Path, cells: set[str] | None = None) -> str:
    """Test accuracy (%, mean and standard deviation over seeds; no deviation for one seed) and achieved
    sparsity (fraction) per method and target, over the finished cells among `cells` (default: all of the
    folder's); regime, sanity check and tuned-or-default are columns when they vary. Ends with where the files are."""
    rows = {r["cell"]: r for r in read_rows(out / RUNS) if cells is None or r["cell"] in cells}  # last row per cell
    ok = [r for r in rows.values() if r["status"] == "ok"]
    files = (f"files: {out / RUNS} (one row per cell; columns in README), curves.csv, layers.csv, masks/\n"
             f"next:  bench report {out}")
    if not ok:
        return f"no finished cell\n{files}"
    df = pd.DataFrame(ok)
    for col in ("target_sparsity", "sparsity", "test_acc"):
        df[col] = df[col].astype(float)
    if "tuned" in df:  # tuned and default cells of one method are separate rows, never pooled as seeds
        df["tuned"] = df["tuned"].fillna("default").map(lambda t: "default" if t in ("", "default") else "tuned")
    keys = ["arch", "dataset", "method", "granularity"]
    keys += [k for k in ("regime", "sanity", "tuned") if k in df and df[k].nunique() > 1]
    g = df.groupby(keys + ["target_sparsity"])
    table = g.agg(test_acc=("test_acc", "mean"), test_std=("test_acc", "std"), sparsity=("sparsity", "mean"),
                  seeds=("seed", "count")).reset_index()
    table["test_acc"] = table["test_acc"].map("{:.2f}".format)
    table["test_std"] = table["test_std"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    table["sparsity"] = table["sparsity"].map("{:.4f}".format)
    table = table.rename(columns={"target_sparsity": "target", "test_acc": "test_acc_%", "test_std": "std"})
    return f"{table.to_string(index=False)}\n{files}"
