"""Figures at paper column width, PNG and PDF, one colour and marker per series across every figure."""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.stats import PANEL, add_series, pareto_mask  # noqa: E402

COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight", "savefig.dpi": 200,
         "pdf.fonttype": 42}


# The first slots keep the colours reports have always given these methods; every other registered method
# follows in registration order, so a method keeps its colour and marker in every report whatever else is in it.
FIRST_SLOTS = ("crbg", "edgepopup", "cs", "cts", "dense", "random", "magnitude", "snip", "grasp", "synflow")


def method_slot(base: str) -> int:
    """A method's palette slot: its place in `FIRST_SLOTS` then the method registry (no two registered methods
    share one); a name the registry does not know gets one past them from a stable hash of the name."""
    from methods import METHODS

    order = list(dict.fromkeys([*FIRST_SLOTS, *METHODS]))
    return order.index(base) if base in order else len(order) + zlib.crc32(base.encode()) % len(MARKERS)


class Palette:
    """A colour-blind-safe colour and a marker per series, fixed by the method's name (not by which series a
    report happens to hold): slot s has colour s mod 10 and marker s + s // 10, so the registered methods'
    (colour, marker) pairs are all different; a method's variants ("crbg (tuned)", "crbg [random]") share its
    colour and take other markers."""

    def __init__(self, names: list[str]) -> None:
        colors = sns.color_palette("colorblind", 10)
        self.color: dict[str, tuple] = {}
        self.marker: dict[str, str] = {}
        for name in names:
            base = name.split(" ")[0]
            slot = method_slot(base)
            variant = 0 if name == base else 1 + zlib.crc32(name.encode()) % (len(MARKERS) - 1)
            self.color[name] = colors[slot % len(colors)]
            self.marker[name] = MARKERS[(slot + slot // len(colors) + variant) % len(MARKERS)]


def save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")  # legends may sit outside the axes
    plt.close(fig)
    return paths


def _x(sparsity: pd.Series | np.ndarray, mode: str) -> np.ndarray:
    return np.asarray(sparsity, float) if mode == "sparsity" else 1.0 - np.asarray(sparsity, float)


def _sparsity_axis(ax: plt.Axes, mode: str, values: np.ndarray) -> None:
    if mode == "sparsity":
        ax.set_xlabel("sparsity (fraction of weights removed)")
        return
    ax.set_xscale("log")
    ax.invert_xaxis()  # sparser to the right, as on a linear sparsity axis
    ticks = sorted(set(np.round(values, 4)))
    ax.set_xticks([1 - t for t in ticks])
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sparsity (log density axis)")


BAND_MIN_SEEDS = 3  # fewer seeds: a t-interval spans tens of points (t = 12.7 for 2), so the seeds are shown alone


def log_ticks(ax: plt.Axes, values: np.ndarray) -> None:
    """A log x axis labelled at a few round values: decades where the data span several, else about four
    values across the data (matplotlib's minor labels, "3x10^4 4x10^4", overlap inside one decade)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if len(v) and v.max() / v.min() < 100:
        ticks = sorted({float(f"{t:.2g}") for t in np.geomspace(v.min(), v.max(), 4)})
        ax.set_xticks(ticks)
        ax.set_xticklabels([matplotlib.ticker.EngFormatter(sep="")(t) for t in ticks])
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=6))


def accuracy_vs_sparsity(summary: pd.DataFrame, dense: pd.DataFrame, palette: Palette, out: Path, mode: str,
                         stem: str, seeds: pd.DataFrame | None = None, metric: str = "test_acc", title: str = "",
                         floor: float | None = None) -> list[Path]:
    """One line per series: seed mean at each achieved sparsity, every seed as a small dot (`seeds`: the
    panel's runs, a `series` column), the 95 % CI band where a target has `BAND_MIN_SEEDS` seeds or more,
    Pareto front ringed (never a collapsed ticket: accuracy at or below `floor`)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
        ax.set_title(title)
        targets = sorted(summary["target_sparsity"].unique())
        for name, g in summary.groupby("series"):
            if "point" in g and (g["point"] != "").any():  # a lambda grid: its points in order of sparsity
                g = g.sort_values("sparsity")
            else:  # every target of the panel, NaN where this series has none: the line breaks there (a gap)
                g = g.set_index("target_sparsity").reindex(targets)
            x = _x(g["sparsity"], mode)
            ax.plot(x, g["mean"], marker=palette.marker[name], color=palette.color[name], label=name, ms=4, lw=1.2)
            banded = g["seeds"] >= BAND_MIN_SEEDS
            if (banded & g["ci_lo"].notna()).any():
                ax.fill_between(x, g["ci_lo"].where(banded).clip(0, 100), g["ci_hi"].where(banded).clip(0, 100),
                                color=palette.color[name], alpha=0.2, lw=0)
            if seeds is not None:
                own = seeds[seeds["series"] == name]
                if (own.groupby(["target_sparsity", "point"]).size() > 1).any():  # one seed is the line itself
                    ax.scatter(_x(own["sparsity"], mode), own[metric], s=5, color=palette.color[name], alpha=0.45,
                               lw=0, zorder=1)
        front = summary[pareto_mask(summary["sparsity"].to_numpy(), summary["mean"].to_numpy(), floor)]
        front = front.sort_values("sparsity")
        ax.plot(_x(front["sparsity"], mode), front["mean"], ls="none", marker="o", ms=8, mfc="none", mec="black",
                mew=0.8, label="Pareto front")
        if len(dense):
            ax.axhline(dense["test_acc"].mean(), color="0.3", ls="--", lw=1, label="dense (trained)")
        _sparsity_axis(ax, mode, summary["sparsity"].to_numpy())
        # the means set the scale: a wide band from few seeds is clipped, not allowed to flatten the lines
        lo, hi = summary["mean"].min(), summary["mean"].max()
        pad = max(1.0, 0.25 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
        ax.set_ylabel("test accuracy (%)")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
        return save(fig, out, stem)


def accuracy_vs_cost(costs: pd.DataFrame, palette: Palette, out: Path, stem: str, title: str = "",
                     floor: float | None = None) -> list[Path]:
    """Two panels: accuracy against the ticket's multiply-adds and against its stored bytes (log axes), a line
    per series, the Pareto front (cheaper and more accurate than every other point, never a collapsed ticket
    at or below `floor`) ringed."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH, 2.6), sharey=True)
        fig.suptitle(title)
        for ax, col, label in zip(axes, ("flops", "bytes_ticket"), ("multiply-adds per input", "ticket bytes")):
            for name, g in costs.groupby("series"):
                g = g.sort_values(col)
                ax.plot(g[col], g["mean"], marker=palette.marker[name], color=palette.color[name], label=name,
                        ms=4, lw=1.2)
            front = costs[pareto_mask(-costs[col].to_numpy(float), costs["mean"].to_numpy(float), floor)]
            ax.plot(front[col], front["mean"], ls="none", marker="o", ms=8, mfc="none", mec="black", mew=0.8,
                    label="Pareto front")
            dense = costs[{"flops": "flops_dense", "bytes_ticket": "bytes_dense"}[col]].max()
            ax.axvline(dense, color="0.3", ls="--", lw=1, label="dense model")
            ax.set_xscale("log")
            log_ticks(ax, np.append(costs[col].to_numpy(float), dense))
            ax.set_xlabel(label)
        axes[0].set_ylabel("test accuracy (%)")
        axes[1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
        return save(fig, out, stem)


def accuracy_by_arch(summary: pd.DataFrame, out: Path, stem: str) -> list[Path]:
    """One series on several architectures (a base-network-size sweep): a line per arch against the target
    (for structured series the fraction of units removed), seed mean with its 95 % band."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
        colors = sns.color_palette("viridis", summary["arch"].nunique())
        for (arch, g), color, marker in zip(summary.groupby("arch", sort=False), colors, MARKERS):
            g = g.sort_values("target_sparsity")
            ax.plot(g["target_sparsity"], g["mean"], marker=marker, color=color, label=arch, ms=4, lw=1.2)
            if g["ci_lo"].notna().any():
                ax.fill_between(g["target_sparsity"], g["ci_lo"], g["ci_hi"], color=color, alpha=0.2, lw=0)
        ax.set_xlabel("target sparsity (structured: fraction of units removed)")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
        return save(fig, out, stem)


def layer_sparsity(layers: pd.DataFrame, palette: Palette, out: Path, stem: str, target: float,
                   title: str = "") -> list[Path]:
    """Per-layer sparsity (mean over seeds) of each series at one target: where each method prunes."""
    layers = layers.assign(layer=[f"{n}\n{s}" if "shape" in layers else n for n, s in
                                  zip(layers["layer"], layers.get("shape", layers["layer"]))])
    order = list(dict.fromkeys(layers["layer"]))
    means = layers.groupby(["series", "layer"], sort=False)["sparsity"].mean().reset_index()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.2 + 0.05 * len(order)))
        sns.barplot(data=means, x="layer", y="sparsity", hue="series", order=order, palette=palette.color, ax=ax)
        ax.set_ylim(0, 1)
        ax.set_ylabel("layer sparsity")
        ax.set_xlabel("layer and weight shape (out x in), in network order")
        ax.set_title(f"{title}: target sparsity {target:g}" if title else f"target sparsity {target:g}")
        if len(order) > 6:
            ax.tick_params(axis="x", rotation=90)
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # never over a bar
        return save(fig, out, stem)


def training_curves(curves: pd.DataFrame, palette: Palette, out: Path, stem: str, title: str = "") -> list[Path]:
    """Validation accuracy (top) and current sparsity (bottom) per epoch, one column per target. Phases
    (dense pre-training, search, weight training) follow each other on one epoch axis."""
    curves = curves.copy()
    if "phase" in curves:  # epochs count within a phase: lay the phases end to end
        order = {"pretrain": 0, "search": 1, "train": 2}
        curves["_order"] = curves["phase"].map(order).fillna(1)
        curves = curves.sort_values(["cell", "_order", "epoch"])
        curves["epoch"] = curves.groupby("cell").cumcount() + 1
    targets = sorted(curves["target_sparsity"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(targets), figsize=(max(COLUMN_WIDTH, 1.9 * len(targets)), 3.4),
                                 sharex=True, squeeze=False)
        for j, t in enumerate(targets):
            sub = curves[curves["target_sparsity"] == t]
            for name, g in sub.groupby("series"):
                m = g.groupby("epoch")[["val_acc", "sparsity"]].mean()
                kw = dict(color=palette.color[name], marker=palette.marker[name], ms=2.5, lw=1, label=name)
                axes[0, j].plot(m.index, m["val_acc"], **kw)
                axes[1, j].plot(m.index, m["sparsity"], **kw)
            axes[1, j].axhline(t, color="0.5", ls=":", lw=0.8)
            axes[0, j].set_title(f"target {t:g}")
            axes[1, j].set_xlabel("epoch")
        last = int(curves["epoch"].max())  # whole epochs on the axis (one epoch: a point, not 0.95 to 1.05)
        axes[1, 0].xaxis.set_major_locator(matplotlib.ticker.FixedLocator(range(1, last + 1)) if last <= 10
                                           else matplotlib.ticker.MaxNLocator(integer=True))
        axes[1, 0].set_xlim(0.5, last + 0.5)
        axes[0, 0].set_ylabel("val accuracy (%)")
        axes[1, 0].set_ylabel("sparsity")
        axes[0, -1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return save(fig, out, stem)


def panels(df: pd.DataFrame):
    """Iterate ((dataset, arch, regime), slug, rows) over the figure panels."""
    for key, g in add_series(df).groupby(PANEL):
        yield key, "_".join(key).replace(":", "-").replace("/", "-"), g


def tuning_progress(trials: pd.DataFrame, out: Path, stem: str) -> list[Path]:
    """Validation accuracy of each completed trial and the best feasible one so far, per study."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.4))
        colors = sns.color_palette("colorblind", max(3, trials["study"].nunique()))
        for color, (study, g) in zip(colors, trials.groupby("study")):
            g = g.sort_values("trial")
            done = g[g["state"] == "COMPLETE"]
            ax.scatter(done["trial"], done["val_acc"], s=8, color=color, alpha=0.5)
            best = done["val_acc"].where(done["feasible"].astype(str) == "True").cummax()
            ax.step(done["trial"], best, where="post", color=color, lw=1.2, label=f"{study} (best feasible)")
        ax.set_xlabel("trial")
        ax.set_ylabel("val accuracy (%)")
        ax.legend(frameon=False, fontsize=6)
        return save(fig, out, stem)
