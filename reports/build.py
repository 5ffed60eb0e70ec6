"""`bench report`: result folders -> figures, tables and an index (Markdown and HTML)."""

from __future__ import annotations

import html
import platform
import re
import shlex
import sys
from pathlib import Path

import pandas as pd

from benchmarks.errors import UserError
from benchmarks.results import prepare_out
from reports import figures, tables
from reports.load import load
from reports.stats import (COLLAPSE_FACTOR, add_series, ci95, collapse_floor, cost_summary, equal_accuracy,
                           missing_cells, point_labels, summarize)

X_MODES = ("sparsity", "density-log")


def inline_html(text: str) -> str:
    """Markdown's inline marks as HTML: `code` and **bold**, the rest escaped."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def table_html(markdown: str) -> str:
    """A Markdown pipe table (header, separator, rows) as an HTML table; other text as paragraphs."""
    lines = [line.strip() for line in markdown.strip().splitlines()]
    if len(lines) < 2 or not all(line.startswith("|") for line in lines[:2]):
        return "".join(f"<p>{inline_html(line)}</p>" for line in lines if line)

    def cells(line: str) -> list[str]:
        return [inline_html(c.strip()) for c in line.strip("|").split("|")]

    head = "".join(f"<th>{c}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(line)) + "</tr>" for line in lines[2:]
                   if line.startswith("|"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Index:
    """Collects sections for index.md and index.html."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{inline_html(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{inline_html(text)}</p>")

    def figure(self, paths: list[Path], caption: str) -> None:
        png, pdf = paths[0].name, paths[1].name
        self.md.append(f"![{caption}]({png})\n\n{caption} ([PDF]({pdf}))\n")
        self.html.append(f'<figure><img src="{png}" width="640"><figcaption>{inline_html(caption)} '
                         f'(<a href="{pdf}">PDF</a>)</figcaption></figure>')

    def table(self, markdown: str, frame: pd.DataFrame | None = None, files: list[str] = ()) -> None:
        links = " ".join(f"[{f}]({f})" for f in files)
        self.md.append(markdown + ("\n\n" + links if links else "") + "\n")
        body = frame.to_html(escape=True) if frame is not None else table_html(markdown)
        self.html.append(body + "".join(f' <a href="{f}">{f}</a>' for f in files))

    def write(self, out: Path) -> None:
        (out / "index.md").write_text("\n".join(self.md))
        (out / "index.html").write_text("<!doctype html><meta charset='utf-8'><title>ticketbench report</title>"
                                        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
                                        "table{border-collapse:collapse}td,th{padding:2px 8px;border:1px solid #ccc}"
                                        "</style>\n" + "\n".join(self.html))


def versions(runs: pd.DataFrame) -> str:
    import matplotlib
    import seaborn

    seen = {col: sorted(runs[col].dropna().astype(str).unique()) for col in ("torch", "torchvision", "timm", "device")
            if col in runs}
    run_part = "; ".join(f"{k} {', '.join(v)}" for k, v in seen.items())
    return (f"runs: {run_part}. report: python {platform.python_version()}, pandas {pd.__version__}, "
            f"matplotlib {matplotlib.__version__}, seaborn {seaborn.__version__}.")


def with_series(frame: pd.DataFrame, panel: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frame` (curves or layers) for the panel's cells, with target and series taken from runs.csv;
    the series names the point too where its points are not its targets (so a lambda grid's are not averaged)."""
    cols = ["series", "target_sparsity"]
    labels = panel.assign(series=point_labels(panel))
    return frame.drop(columns=[c for c in cols if c in frame]).merge(labels[["cell", *cols]], on="cell")


def build_report(folders: list[Path], out: Path, x_mode: str = "sparsity", layer_target: float | None = None,
                 metric: str = "test_acc", reference: str = "crbg") -> Path:
    if x_mode not in X_MODES:
        raise UserError(f"--x must be one of {', '.join(X_MODES)}, got {x_mode!r}")
    res = load(folders)
    if res.ok.empty and res.trials.empty:
        failed = int((res.runs["status"] != "ok").sum())
        raise UserError("no finished (status ok) cell or tuning trial in " + ", ".join(map(str, folders))
                        + (f" ({failed} failed cell(s): their errors are in runs.csv, bench status lists them)"
                           if failed else ""))
    if layer_target is not None and not (res.layers["cell"].isin(res.ok.loc[
            res.ok["target_sparsity"].sub(layer_target).abs() < 1e-9, "cell"])).any():
        found = sorted(res.ok["target_sparsity"].unique())
        raise UserError(f"--layer-target {layer_target}: no finished cell with per-layer rows has that target "
                        f"(targets: {', '.join(f'{t:g}' for t in found)})")
    prepare_out(out)
    searched = res.ok[res.ok["role"].isin(("search", "baseline"))]
    sanity = res.ok[res.ok["role"] == "sanity"]
    dense = res.ok[res.ok["role"] == "reference"]
    summary = summarize(searched, metric)
    named = add_series(res.runs)
    palette = figures.Palette(list(dict.fromkeys([*named["series"], *point_labels(named)])))
    idx = Index()
    idx.heading("ticketbench report", 1)
    idx.text(f"Command: {shlex.join(['bench', *sys.argv[1:]]) if sys.argv[0].endswith('bench') else 'bench report'}")
    idx.text("Sources: " + ", ".join(str(f) for f in folders) + f". {len(res.ok)} finished cells. " + versions(res.runs))
    idx.text(f"Accuracy is {metric.replace('_', ' ')} in %, mean over seeds; bands and ± are 95 % t-intervals "
             "(none with one seed; in figures only from 3 seeds, with every seed drawn as a dot). Sparsity is the achieved fraction of prunable weights removed.")

    for (dataset, arch, regime), slug, panel in figures.panels(searched):
        psum = summary[(summary.dataset == dataset) & (summary.arch == arch) & (summary.regime == regime)]
        pdense = dense[(dense.dataset == dataset) & (dense.arch == arch) & (dense.regime == regime)]
        title = f"{arch} on {dataset}, {regime} regime"
        idx.heading(title)
        floor = collapse_floor(panel)
        paths = figures.accuracy_vs_sparsity(psum, pdense, palette, out, x_mode, f"acc_vs_sparsity_{slug}",
                                             seeds=panel, metric=metric, title=title, floor=floor)
        seeds = int(psum["seeds"].max())
        spread = ("one seed per point (no dots, no band)" if seeds == 1 else
                  "each seed a small dot, and a 95 % band where a target has "
                  f"{figures.BAND_MIN_SEEDS} seeds or more (with fewer the t-interval spans tens of points)")
        collapsed = f", none at or below {floor:.3g} % ({COLLAPSE_FACTOR:g}x chance: a collapsed ticket)" if floor else ""
        idx.figure(paths, f"Test accuracy against achieved sparsity for each method on {arch}/{dataset}: seed mean "
                          f"at each target, {spread}; ringed points form the Pareto front (no other point is both "
                          f"sparser and more accurate{collapsed})"
                          + ("; dashed: the trained dense model." if len(pdense) else "."))
        grid, _ = tables.accuracy_grid(psum)
        tables_csv = f"table_{slug}.csv"
        psum.to_csv(out / tables_csv, index=False)
        (out / f"table_{slug}.md").write_text(tables.markdown(psum) + "\n")
        (out / f"table_{slug}.tex").write_text(tables.latex(psum, f"Test accuracy (\\%) of {arch} on {dataset} at "
                                                                  "each target sparsity; mean $\\pm$ 95\\% CI over "
                                                                  "seeds, best in bold.") + "\n")
        idx.text("Accuracy at each target sparsity (best per column in bold):")
        idx.table(tables.markdown(psum), grid, [tables_csv, f"table_{slug}.md", f"table_{slug}.tex"])
        if len(pdense):
            mean, lo, hi = ci95(pdense[metric])
            spread = f" ± {(hi - lo) / 2:.2f}" if lo == lo else ""
            idx.text(f"Dense reference (all weights, trained): {mean:.2f}{spread} % over {len(pdense)} seed(s).")
        eq = equal_accuracy(psum)
        eq.to_csv(out / f"equal_accuracy_{slug}.csv", index=False)
        ref = None if eq.empty else (reference if (eq["reference"] == reference).any() else eq["reference"].iloc[0])
        if ref is not None:
            idx.text(f"Sparsity at equal accuracy, both ways against {ref} (every pair is in the CSV): for each point "
                     f"of the reference, the sparsity the other reaches at the same accuracy (interpolated between its "
                     f"targets, never extrapolated) and how many times fewer weights it keeps. ≥ marks a bound: the "
                     f"method was still more accurate at its sparsest target, so it may go further than measured.")
            both = eq[(eq["reference"] == ref) | (eq["method"] == ref)].sort_values(["reference", "method"])
            idx.table(tables.equal_accuracy_markdown(both), None, [f"equal_accuracy_{slug}.csv"])
        costs = cost_summary(panel, metric)
        if len(costs):
            paths = figures.accuracy_vs_cost(costs, palette, out, f"cost_{slug}", title=title, floor=floor)
            idx.figure(paths, "Test accuracy against what the ticket costs: multiply-adds for one input (kept weights "
                              "only) and bytes to store it (strong regime: seed + compressed mask; weak: kept "
                              f"weights + mask), seed means; ringed: the Pareto front{collapsed}; dashed: the dense "
                              "model.")
            costs.to_csv(out / f"cost_{slug}.csv", index=False)
            shown = ["series", "target_sparsity", "point", "mean", "speedup_flops", "compression",
                     *[c for c in costs if c.startswith("speedup_") and c != "speedup_flops"]]
            idx.text("What each ticket buys against the dense model: fewer multiply-adds (x), smaller storage (x) "
                     "and, where `--measure-latency` timed them, the measured CPU speed-up of each deployable form "
                     "(masked: zeros in dense weights; csr: Linear layers as torch.sparse CSR; slim: a structured ticket's "
                     "removed units cut out) at batch 1 and 64.")
            idx.table(tables.frame_markdown(costs[shown].round(2)), None, [f"cost_{slug}.csv"])
        psanity = sanity[(sanity.dataset == dataset) & (sanity.arch == arch) & (sanity.regime == regime)]
        if len(psanity):
            masks = panel[panel["method"].isin(psanity["method"].unique())]
            ssum = summarize(pd.concat([masks, psanity]), metric)
            ssum.to_csv(out / f"sanity_{slug}.csv", index=False)
            idx.text("Sanity checks (Frankle et al. 2021): each found mask against a random mask with the same "
                     "layer sparsities ([random]), the mask shuffled within each unit ([shuffle]) and the same mask "
                     "on re-drawn weights ([reinit]). A method whose accuracy survives an ablation did not need "
                     "what that ablation destroys.")
            idx.table(tables.markdown(ssum), None, [f"sanity_{slug}.csv"])

        players = with_series(res.layers, panel)
        if len(players):
            targets = sorted(players["target_sparsity"].unique())
            t = next((x for x in targets if layer_target is not None and abs(x - layer_target) < 1e-9), targets[-1])
            paths = figures.layer_sparsity(players[players.target_sparsity == t], palette, out, f"layers_{slug}", t,
                                           title=title)
            idx.figure(paths, f"Per-layer sparsity at target {t:g} (mean over seeds): where each method prunes.")
        pcurves = with_series(res.curves, panel)
        if len(pcurves):
            paths = figures.training_curves(pcurves, palette, out, f"curves_{slug}", title=title)
            idx.figure(paths, "Validation accuracy and current sparsity of the binary mask per epoch "
                              "(dotted: the target), mean over seeds.")

    for (dataset, regime, series), g in summary[summary["point"] == ""].groupby(["dataset", "regime", "series"]):
        if g["arch"].nunique() < 2:
            continue
        size = pd.to_numeric(res.ok["prunable_weights"], errors="coerce").groupby(res.ok["arch"]).max()  # small first
        archs = sorted(g["arch"].unique(), key=lambda a: (size.get(a, 0), a))
        g = g.set_index("arch").loc[archs].reset_index()
        slug = f"{dataset}_{regime}_{series}".replace(" ", "_").replace("(", "").replace(")", "").replace(":", "_")
        idx.heading(f"{series} across architectures, {dataset}, {regime} regime")
        paths = figures.accuracy_by_arch(g, out, f"by_arch_{slug}")
        g.to_csv(out / f"by_arch_{slug}.csv", index=False)
        idx.figure(paths, f"{series}: test accuracy against the target on each architecture (a base-network-size "
                          f"sweep where the archs are one family at several widths), seed mean with 95 % band.")

    if not res.trials.empty:
        trials = res.trials.copy()
        for col in ("val_acc", "sparsity"):
            trials[col] = pd.to_numeric(trials.get(col), errors="coerce")
        idx.heading("Tuning")
        paths = figures.tuning_progress(trials, out, "tuning")
        idx.figure(paths, "Validation accuracy of every completed Optuna trial (dots) and the best trial so far that "
                          "reached the target sparsity (line), per study.")
        trials.to_csv(out / "tuning_trials.csv", index=False)
        top = trials[(trials.state == "COMPLETE") & (trials.feasible.astype(str) == "True")]
        top = top.sort_values("val_acc", ascending=False).groupby("study").head(5)
        cols = ["study", "trial", "val_acc", "sparsity", *[c for c in trials if c.startswith("hp_")]]
        idx.text("Best five feasible trials per study (validation accuracy; the test set is never used in tuning):")
        idx.table(tables.frame_markdown(top[cols].round(5)), top[cols], ["tuning_trials.csv"])

    gaps = missing_cells(res.runs)
    idx.heading("Missing and failed cells")
    if gaps.empty:
        idx.text("None: every series has every target and seed of its panel.")
    else:
        gaps.to_csv(out / "missing.csv", index=False)
        idx.text(f"{len(gaps)} grid points have no finished row; they are gaps in the figures and '–' in the tables "
                 "(never zeros). Failed cells' errors are in runs.csv.")
        idx.table(tables.frame_markdown(gaps), gaps, ["missing.csv"])
    idx.write(out)
    return out
