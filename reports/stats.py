"""The numbers behind every figure and table: seed means with 95 % confidence intervals, Pareto fronts,
sparsity at equal accuracy, and what is missing from a sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st

from reports.load import roles

PANEL = ["dataset", "arch", "regime"]  # one set of figures and tables per panel
SERIES = ["method", "granularity", "sanity"]


def series_label(method: str, granularity: str, sanity: str = "none") -> str:
    label = method if granularity == "unstructured" else f"{method} ({granularity})"
    return label if sanity in ("none", "", None) or sanity != sanity else f"{label} [{sanity}]"


def add_series(df: pd.DataFrame) -> pd.DataFrame:
    """A `series` label per row: the method, its granularity when structured, its sanity check, and
    "(tuned)" for cells run with `bench run --tuned`; with the epoch budget too when the rows have several, so runs of different length are never averaged together."""
    sanity = df["sanity"] if "sanity" in df else pd.Series("none", index=df.index)
    out = df.copy()
    out["series"] = [series_label(m, g, s) for m, g, s in zip(df["method"], df["granularity"], sanity)]
    if "tuned" in df:  # a method run with `bench tune`'s configuration is its own series beside its defaults
        tuned = df["tuned"].fillna("default").astype(str)
        out["series"] = [f"{label} (tuned)" if t not in ("", "default") else label
                         for label, t in zip(out["series"], tuned)]
    if "epochs" in df and pd.to_numeric(df["epochs"], errors="coerce").nunique() > 1:
        out["series"] = [f"{label} ({int(float(e))} ep)" for label, e in zip(out["series"], df["epochs"])]
    return out


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
    """One row per (dataset, arch, series, target): seeds, mean of `metric`, its 95 % t-interval half-width
    and bounds (the bounds clipped to [0, 100] %), mean achieved sparsity."""
    rows = []
    for key, g in add_series(ok).groupby(PANEL + ["series", "target_sparsity"], sort=True):
        mean, lo, hi = ci95(g[metric])
        half = (hi - lo) / 2  # the t-interval's half-width, as tables print it (mean ± half)
        lo, hi = max(lo, 0.0), min(hi, 100.0)  # its bounds never leave [0, 100] % (NaN stays NaN)
        rows.append(dict(zip(PANEL + ["series", "target_sparsity"], key), seeds=len(g), mean=mean, ci_half=half,
                         ci_lo=lo, ci_hi=hi, sparsity=float(g["sparsity"].mean())))
    return pd.DataFrame(rows, columns=PANEL + ["series", "target_sparsity", "seeds", "mean", "ci_half", "ci_lo",
                                               "ci_hi", "sparsity"])


COST = ["flops", "flops_dense", "bytes_ticket", "bytes_dense"]  # `benchmarks.cost`; latency_ms_* when measured


def cost_summary(ok: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per (panel, series, target) with the seed mean of `metric` and of every cost column, and the
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
    out = df.groupby(PANEL + ["series", "target_sparsity"], sort=True)[[metric, *cols]].mean()
    out = out.reset_index().rename(columns={metric: "mean"})
    out["speedup_flops"] = out["flops_dense"] / out["flops"]
    out["compression"] = out["bytes_dense"] / out["bytes_ticket"]
    for c in latency:
        form = c.removeprefix("latency_ms_")
        out[f"speedup_{form}"] = out[f"latency_ms_dense_{form.split('_')[-1]}"] / out[c]
    return out


def pareto_mask(sparsity: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """True for points no other point dominates (at least as sparse and as accurate, better in one)."""
    s, a = np.asarray(sparsity, float), np.asarray(acc, float)
    keep = np.ones(len(s), bool)
    for i in range(len(s)):
        dominated = (s >= s[i]) & (a >= a[i]) & ((s > s[i]) | (a > a[i]))
        keep[i] = not dominated.any()
    return keep


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
