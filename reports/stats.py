"""The numbers behind every figure and table: seed means with 95 % confidence intervals, Pareto fronts,
sparsity at equal accuracy, and what is missing from a sweep."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats as st

from reports.load import roles

PANEL = ["dataset", "arch", "regime"]  # one set of figures and tables per panel
SERIES = ["method", "granularity", "sanity"]  # what every series label names
POINT = ["series", "target_sparsity", "point"]  # one experiment: a point of a series


def series_label(method: str, granularity: str, sanity: str = "none") -> str:
    label = method if granularity == "unstructured" else f"{method} ({granularity})"
    return label if sanity in ("none", "", None) or sanity != sanity else f"{label} [{sanity}]"


def identity_columns(df: pd.DataFrame) -> list[str]:
    """The columns of `df` that carry a cell's identity (`benchmarks.spec.Cell`): one per cell setting, the
    hyperparameters of its method as ``hp_<name>`` (not the results a method records beside them, such as
    ``hp_fill_used``) and the weight-training recipe as ``train_<name>``."""
    from benchmarks.recipe import Recipe
    from benchmarks.settings import CELL_SETTINGS
    from benchmarks.spec import Cell
    from methods import METHODS

    names = [f.name for f in dataclasses.fields(Cell) if f.name not in ("hparams", "train", "settings")]
    names += list(CELL_SETTINGS)
    hparams: set[str] = set()
    for method in df["method"].dropna().unique() if "method" in df else ():
        cls = METHODS.get(method)
        known = [f"hp_{f.name}" for f in dataclasses.fields(cls.Hparams)] if cls else [c for c in df if c.startswith("hp_")]
        hparams.update(known)
    names += sorted(hparams) + [f"train_{f.name}" for f in dataclasses.fields(Recipe)]
    return [c for c in dict.fromkeys(names) if c in df]


def _text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else
                      f"{v:g}" if isinstance(v, float) else str(v))


def experiments(df: pd.DataFrame) -> pd.Series:
    """Each row's experiment: its ``experiment`` column (the hash of every setting but the seed), or for rows
    written before that column the same settings read from its identity columns."""
    from benchmarks.spec import digest

    cols = [c for c in identity_columns(df) if c != "seed"]
    values = {c: _text(df[c]) for c in cols}  # an empty value (a column of another method) names nothing
    legacy = pd.Series([digest({c: values[c][i] for c in cols if values[c][i] != ""}) for i in df.index],
                       index=df.index, dtype=object)
    if "experiment" not in df:
        return legacy
    own = df["experiment"].astype(object)
    return own.where(own.notna() & (own.astype(str) != ""), legacy)


def _point_axis(row: pd.Series) -> str | None:
    """The column a penalty-only search sweeps instead of the target (its lambda with target_mode none)."""
    from methods import METHODS

    cls = METHODS.get(row.get("method"))
    axis = getattr(cls, "penalty_weight", None)
    return f"hp_{axis}" if axis and str(row.get("hp_target_mode")) == "none" else None


def add_series(df: pd.DataFrame) -> pd.DataFrame:
    """Per row: its `experiment`, a `series` (a line in a figure) and a `point` on it. The series label is the
    method, its granularity when structured, its sanity check and "(tuned)" for `bench run --tuned` cells,
    plus every identity setting that differs between the series of that method in its panel, e.g.
    "edgepopup (weight_init=signed_constant)" or "crbg (epochs=3)". The points of a series are its targets,
    or, for a penalty-only search (``target_mode=none``), its lambdas ("lam=0.01"): achieved sparsity is
    then the outcome. Rows of different experiments never share a (series, target, point)."""
    out = df.copy()
    out["experiment"] = experiments(df)
    if df.empty:
        return out.assign(series=pd.Series(dtype=object), point=pd.Series(dtype=object))
    # one row per experiment names it: a finished one where there is one (failed rows lack results)
    ok_first = out["status"].ne("ok") if "status" in out else pd.Series(False, index=out.index)
    rep = out.loc[ok_first.sort_values(kind="stable").index].drop_duplicates("experiment")
    sanity = rep["sanity"] if "sanity" in rep else pd.Series("none", index=rep.index)
    tuned = ~_text(rep["tuned"]).isin(["", "default"]) if "tuned" in rep else pd.Series(False, index=rep.index)
    base = pd.Series([series_label(m, g, s) + (" (tuned)" if t else "")
                      for m, g, s, t in zip(rep["method"], rep["granularity"], sanity, tuned)], index=rep.index)
    axes = pd.Series([_point_axis(r) for _, r in rep.iterrows()], index=rep.index, dtype=object)
    point = pd.Series([f"{a.removeprefix('hp_')}={_text(rep.loc[[i], a]).iloc[0]}" if a else ""
                       for i, a in axes.items()], index=rep.index, dtype=object)
    cols = [c for c in identity_columns(rep) if c not in ("seed", "target_sparsity", "tuned", *SERIES, *PANEL)]
    text = {c: _text(rep[c]) for c in cols}
    for i in rep.index:  # a tuned cell's hyperparameters are tuning's outcome; a penalty search's lambda, its point
        for c in cols:
            if (c.startswith("hp_") and tuned[i]) or c == axes[i]:
                text[c][i] = "*"
    series = base.copy()
    for _, idx in base.groupby([*(rep[c].astype(str) for c in PANEL if c in rep), base]).groups.items():
        varying = [c for c in cols if text[c][idx].nunique() > 1]
        for i in idx:
            shown = [f"{c.removeprefix('hp_')}={text[c][i]}" for c in varying if text[c][i] != "*"]
            series[i] = f"{base[i]} ({', '.join(shown)})" if shown else base[i]
    panel = [c for c in PANEL if c in rep]
    named = pd.DataFrame({"experiment": rep["experiment"], "series": series, "point": point,
                          "at": rep["target_sparsity"].astype(str), **{c: rep[c].astype(str) for c in panel}})
    clash = named.groupby([*panel, "series", "at", "point"])["experiment"].transform("size") > 1  # unseen settings
    named.loc[clash, "series"] += " [" + named.loc[clash, "experiment"].str[-6:] + "]"
    named = named.set_index("experiment")
    out["series"] = out["experiment"].map(named["series"])
    out["point"] = out["experiment"].map(named["point"])
    return out


def point_labels(frame: pd.DataFrame) -> list[str]:
    """Per row of `frame` (with `series` and `point`): its series, and the point when the series' points are not
    its targets (a table row; a lambda grid's points are never averaged)."""
    return [f"{s} {p}" if p else s for s, p in zip(frame["series"], frame["point"])]


def ci95(values: pd.Series) -> tuple[float, float, float]:
    """Mean and the bounds of its 95 % t-interval; a single seed has no interval (NaN bounds)."""
    x = values.dropna().to_numpy(dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(st.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def summarize(ok: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per experiment (dataset, arch, regime, series, target, point): seeds, mean of `metric`, its
    95 % t-interval half-width and bounds (the bounds clipped to [0, 100] %), mean achieved sparsity."""
    rows = []
    for key, g in add_series(ok).groupby(PANEL + POINT, sort=True):
        mean, lo, hi = ci95(g[metric])
        half = (hi - lo) / 2  # the t-interval's half-width, as tables print it (mean ± half)
        lo, hi = max(lo, 0.0), min(hi, 100.0)  # its bounds never leave [0, 100] % (NaN stays NaN)
        rows.append(dict(zip(PANEL + POINT, key), experiment=g["experiment"].iloc[0], seeds=len(g), mean=mean,
                         ci_half=half, ci_lo=lo, ci_hi=hi, sparsity=float(g["sparsity"].mean())))
    return pd.DataFrame(rows, columns=PANEL + POINT + ["experiment", "seeds", "mean", "ci_half", "ci_lo", "ci_hi",
                                                       "sparsity"])


COST = ["flops", "flops_dense", "bytes_ticket", "bytes_dense"]  # `benchmarks.cost`; latency_ms_* when measured


def cost_summary(ok: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per experiment (panel, series, target, point) with the seed mean of `metric` and of every cost column, and the
    ratios against dense: ``speedup_flops`` (flops_dense / flops), ``compression`` (bytes_dense / bytes_ticket)
    and, where latency was measured, ``speedup_<form>_b<batch>`` (dense time / the form's time)."""
    if "flops" not in ok:
        return pd.DataFrame()
    timed = sorted(c for c in ok if c.startswith("latency_ms_"))
    latency = [c for c in timed if not c.startswith("latency_ms_dense_")]
    cols = [c for c in COST if c in ok] + timed
    df = add_series(ok)
    for c in cols:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    out = df.groupby(PANEL + POINT, sort=True)[[metric, *cols]].mean()
    out = out.reset_index().rename(columns={metric: "mean"})
    out["speedup_flops"] = out["flops_dense"] / out["flops"]
    out["compression"] = out["bytes_dense"] / out["bytes_ticket"]
    for c in latency:
        form = c.removeprefix("latency_ms_")
        out[f"speedup_{form}"] = out[f"latency_ms_dense_{form.split('_')[-1]}"] / out[c]
    return out


def pareto_mask(sparsity: np.ndarray, acc: np.ndarray, floor: float | None = None) -> np.ndarray:
    """True for points no other point dominates (at least as sparse and as accurate, better in one). With a
    `floor`, points at or below it (collapsed tickets, `collapse_floor`) are never on the front."""
    s, a = np.asarray(sparsity, float), np.asarray(acc, float)
    alive = a > floor if floor is not None else np.ones(len(s), bool)
    keep = alive.copy()
    for i in np.flatnonzero(alive):
        dominated = alive & (s >= s[i]) & (a >= a[i]) & ((s > s[i]) | (a > a[i]))
        keep[i] = not dominated.any()
    return keep


COLLAPSE_FACTOR = 2.0  # a ticket no better than this many times chance accuracy is collapsed


def collapse_floor(rows: pd.DataFrame) -> float | None:
    """The accuracy (%) at or below which the panel's tickets count as collapsed: `COLLAPSE_FACTOR` x chance
    (100 / num_classes); None for rows written before the num_classes column."""
    classes = pd.to_numeric(rows["num_classes"], errors="coerce").max() if "num_classes" in rows else math.nan
    return COLLAPSE_FACTOR * 100.0 / classes if classes == classes and classes > 0 else None


def sparsity_at_accuracy(curve: pd.DataFrame, accuracy: float) -> float:
    """Largest achieved sparsity at which the series' mean accuracy is still >= `accuracy`, linearly
    interpolated between measured targets; NaN when the series never reaches it (no extrapolation)."""
    c = curve.sort_values("sparsity")
    s, a = c["sparsity"].to_numpy(float), c["mean"].to_numpy(float)
    best = math.nan
    for i in range(len(s)):
        if a[i] >= accuracy:
            best = s[i] if math.isnan(best) else max(best, s[i])
        if i + 1 < len(s) and (a[i] - accuracy) * (a[i + 1] - accuracy) < 0:
            crossing = s[i] + (accuracy - a[i]) * (s[i + 1] - s[i]) / (a[i + 1] - a[i])
            best = crossing if math.isnan(best) else max(best, crossing)
    return best


def equal_accuracy(summary: pd.DataFrame) -> pd.DataFrame:
    """For each panel, each ordered pair (A, B) and each point of B: the sparsity A reaches at B's accuracy,
    and how many times fewer weights A keeps there ((1 - s_B) / (1 - s_A)). `bound` is True where A is still
    above B's accuracy at A's sparsest measured point: A's sparsity there is only a lower bound (and the ratio
    too), since the sweep stopped before A fell to that accuracy."""
    rows = []
    for key, panel in summary.groupby(PANEL):
        curves = {name: g for name, g in panel.groupby("series")}
        for b_name, b in curves.items():
            for _, point in b.sort_values("target_sparsity").iterrows():
                for a_name, a in curves.items():
                    if a_name == b_name:
                        continue
                    s_a = sparsity_at_accuracy(a, point["mean"])
                    sparsest = a.loc[a["sparsity"].idxmax()]
                    rows.append(dict(zip(PANEL, key), method=a_name, reference=b_name,
                                     reference_sparsity=point["sparsity"], reference_acc=point["mean"],
                                     sparsity=s_a, density_ratio=(1 - point["sparsity"]) / (1 - s_a)
                                     if not math.isnan(s_a) else math.nan,
                                     bound=bool(sparsest["mean"] > point["mean"])))
    return pd.DataFrame(rows)


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Grid points without an ok row: per panel, every series x target x seed seen among series of its kind
    (the mask methods, each sanity check, and dense at target 0 are separate grids)."""
    df = add_series(runs)
    sanity = df["sanity"] if "sanity" in df else pd.Series("none", index=df.index)
    df["_kind"] = ["reference" if r == "reference" else f"sanity:{s}" for r, s in zip(roles(df), sanity)]
    out = []
    for key, panel in df.groupby(PANEL + ["_kind"]):
        key = key[:-1]
        ok = set(zip(panel.loc[panel.status == "ok", "series"], panel.loc[panel.status == "ok", "target_sparsity"],
                     panel.loc[panel.status == "ok", "seed"]))
        failed = set(zip(panel.loc[panel.status != "ok", "series"], panel.loc[panel.status != "ok", "target_sparsity"],
                         panel.loc[panel.status != "ok", "seed"]))
        for s in sorted(panel["series"].unique()):
            for t in sorted(panel["target_sparsity"].unique()):
                for seed in sorted(panel["seed"].unique()):
                    if (s, t, seed) not in ok:
                        out.append(dict(zip(PANEL, key), series=s, target_sparsity=t, seed=seed,
                                        state="failed" if (s, t, seed) in failed else "missing"))
    return pd.DataFrame(out, columns=PANEL + ["series", "target_sparsity", "seed", "state"])
