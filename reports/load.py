"""Read and validate the CSVs of one or more result folders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from benchmarks.errors import UserError
from benchmarks.paths import CURVES, LAYERS, PLAN, RUNS
from benchmarks.results import (CURVE_COLUMNS, LAYER_COLUMNS, OK_RUN_COLUMNS, RUN_COLUMNS, Schema, check_readable,
                                check_rows, duplicate_cells, read_rows)
from benchmarks.console import log

TRIALS = "trials.csv"
TRIAL_COLUMNS: Schema = {"study": (str, None, None), "trial": (int, 0, None), "state": (str, None, None)}


ONE_SHOT = ("random", "magnitude", "snip", "grasp", "synflow")  # the baselines of folders written before `role`


def legacy_role(method: str, sanity: str) -> str:
    """The `role` a row written before that column had (`methods.base.Pruner.role`)."""
    if sanity != "none":
        return "sanity"
    return "reference" if method == "dense" else "baseline" if method in ONE_SHOT else "search"


def roles(runs: pd.DataFrame) -> pd.Series:
    """Each row's `role`: its own, or for rows written before the column the one its method and sanity give."""
    sanity = runs["sanity"].fillna("none") if "sanity" in runs else pd.Series("none", index=runs.index)
    legacy = pd.Series([legacy_role(m, s) for m, s in zip(runs["method"], sanity)], index=runs.index, dtype=object)
    return runs["role"].fillna(legacy) if "role" in runs else legacy


def planned_experiments(folder: Path, cells: Iterable[str]) -> dict[str, str]:
    """The `experiment` id of each of `cells` that the folder's ``plan.json`` describes (rows written before
    runs.csv had that column); cells it lacks, or whose method or settings this installation does not know,
    are left out (the report then reads their settings from their rows' columns)."""
    from benchmarks.spec import Cell

    try:
        plan = json.loads((folder / PLAN).read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for cell in cells:
        try:
            out[cell] = Cell.from_dict(plan[cell]).experiment
        except Exception:  # not planned here, a plugin's method or setting not loaded, another version's field
            continue
    return out


def with_experiments(folder: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with the `experiment` column filled from ``plan.json`` where a row lacks it."""
    own = runs["experiment"] if "experiment" in runs else pd.Series(None, index=runs.index, dtype=object)
    lacking = own.isna() | (own.astype(str) == "")
    if not lacking.any():
        return runs
    planned = planned_experiments(folder, runs.loc[lacking, "cell"])
    return runs.assign(experiment=own.where(~lacking, runs["cell"].map(planned)))


@dataclass
class Results:
    runs: pd.DataFrame      # every row of runs.csv (ok and failed), one per cell
    curves: pd.DataFrame
    layers: pd.DataFrame
    trials: pd.DataFrame    # bench tune's trials.csv rows, when a folder has them
    folders: list[Path]

    @property
    def ok(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]


def _typed(path: Path, rows: list[dict[str, str]], columns: Schema, only_ok: bool = False) -> pd.DataFrame:
    """The rows as a frame with numeric `columns` parsed, once `check_rows` has validated them."""
    check_rows(path, rows, columns, only_ok)
    df = pd.DataFrame(rows, columns=list(rows[0]) if rows else list(columns))
    for col, (typ, _, _) in columns.items():
        if typ is not str and col in df:  # a folder of failed cells only has no result columns
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def load(folders: list[Path]) -> Results:
    """All rows of the given result folders. A cell id seen twice keeps its last row."""
    runs, curves, layers, trials = [], [], [], []
    for folder in folders:
        check_readable(folder)
        if (folder / TRIALS).exists():
            trials.append(_typed(folder / TRIALS, read_rows(folder / TRIALS), TRIAL_COLUMNS))
            if not (folder / RUNS).exists():
                continue
        if not (folder / RUNS).exists():
            raise UserError(f"{folder}: no {RUNS} or {TRIALS} (is this a bench results folder?)")
        rows = read_rows(folder / RUNS)
        copies = duplicate_cells(folder)
        if copies:
            log(f"bench: {folder / RUNS}: {len(copies)} cell(s) have several rows ({', '.join(copies[:5])}"
                f"{', ...' if len(copies) > 5 else ''}); the last row of each is used (bench run on the folder "
                f"removes the copies)")
        runs.append(with_experiments(folder, _typed(folder / RUNS, rows, RUN_COLUMNS)))
        _typed(folder / RUNS, rows, OK_RUN_COLUMNS, only_ok=True)  # failed rows have no numbers
        curves.append(_typed(folder / CURVES, read_rows(folder / CURVES), CURVE_COLUMNS))
        layers.append(_typed(folder / LAYERS, read_rows(folder / LAYERS), LAYER_COLUMNS))
    trial_df = pd.concat(trials, ignore_index=True) if trials else pd.DataFrame(columns=list(TRIAL_COLUMNS))
    if not runs:
        empty = pd.DataFrame(columns=list(RUN_COLUMNS) + list(OK_RUN_COLUMNS) + ["sanity", "role"])
        return Results(empty, pd.DataFrame(columns=list(CURVE_COLUMNS)), pd.DataFrame(columns=list(LAYER_COLUMNS)),
                       trial_df, folders)
    run_df = pd.concat(runs, ignore_index=True).drop_duplicates("cell", keep="last")
    run_df["sanity"] = run_df["sanity"].fillna("none") if "sanity" in run_df else "none"  # older folders
    run_df["role"] = roles(run_df)
    for col in OK_RUN_COLUMNS:
        run_df[col] = pd.to_numeric(run_df.get(col), errors="coerce")
    known = set(run_df["cell"])
    curve_df = pd.concat(curves, ignore_index=True)
    layer_df = pd.concat(layers, ignore_index=True)
    # Curves and layers count only for cells that finished (a killed cell may have left some).
    if "phase" not in curve_df:
        curve_df["phase"] = "search"
    curve_df["phase"] = curve_df["phase"].fillna("search")
    curve_df = curve_df[curve_df["cell"].isin(known)].drop_duplicates(["cell", "phase", "epoch"], keep="last")
    layer_df = layer_df[layer_df["cell"].isin(known)].drop_duplicates(["cell", "layer"], keep="last")
    return Results(run_df.reset_index(drop=True), curve_df, layer_df, trial_df, folders)
