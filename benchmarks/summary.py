"""The summary table printed at the end of a sweep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.paths import RUNS
from benchmarks.results import read_rows


def summary_table(out: Path, cells: set[str] | None = None) -> str:
    """Test accuracy (%, mean and standard deviation over seeds; no deviation for one seed) and achieved
    sparsity (fraction) per experiment, over the finished cells among `cells` (default: all of the folder's).
    Rows are the report's series and points (`reports.stats.add_series`): only seeds of one experiment are
    averaged, and a series names what differs from its method's others. Ends with where the files are."""
    from reports.load import with_experiments
    from reports.stats import PANEL, POINT, add_series, point_labels

    rows = {r["cell"]: r for r in read_rows(out / RUNS) if cells is None or r["cell"] in cells}  # last row per cell
    files = (f"files: {out / RUNS} (one row per cell; columns: bench list columns), curves.csv, layers.csv, "
             f"masks/\nnext:  bench report {out}")
    ok = [r for r in rows.values() if r["status"] == "ok"]
    if not ok:
        return f"no finished cell\n{files}"
    df = pd.DataFrame(ok)
    for col in ("target_sparsity", "sparsity", "test_acc"):
        df[col] = df[col].astype(float)
    df = add_series(with_experiments(out, df))
    keys = [k for k in PANEL if k in df and (k != "regime" or df[k].nunique() > 1)]
    table = df.groupby(keys + POINT, sort=True).agg(test_acc=("test_acc", "mean"), test_std=("test_acc", "std"),
                                                     sparsity=("sparsity", "mean"), seeds=("seed", "count"))
    table = table.reset_index()
    table["series"] = point_labels(table)
    table = table.drop(columns="point")
    table["test_acc"] = table["test_acc"].map("{:.2f}".format)
    table["test_std"] = table["test_std"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    table["sparsity"] = table["sparsity"].map("{:.4f}".format)
    table = table.rename(columns={"target_sparsity": "target", "test_acc": "test_acc_%", "test_std": "std"})
    return f"{table.to_string(index=False)}\n{files}"
