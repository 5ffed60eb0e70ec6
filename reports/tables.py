"""Paper tables: accuracy at each target (mean +- 95 % CI half-width over seeds, best per column in bold)
as Markdown, LaTeX (booktabs) and CSV; and the sparsity reached at equal accuracy."""

from __future__ import annotations

import math

import pandas as pd

from reports.stats import point_labels


def _fmt(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "–"  # a gap, never a zero
    return f"{mean:.2f}" if math.isnan(half) else f"{mean:.2f} ± {half:.2f}"


def accuracy_grid(summary: pd.DataFrame) -> tuple[pd.DataFrame, dict[float, str]]:
    """Rows = series (with the point where a series' points are not its targets: a lambda grid), columns =
    target sparsity, text cells; and the best row per column."""
    summary = summary.assign(series=point_labels(summary)) if "point" in summary else summary
    targets = sorted(summary["target_sparsity"].unique())
    series = sorted(summary["series"].unique())
    grid = pd.DataFrame(index=series, columns=[f"{t:g}" for t in targets], dtype=object)
    best: dict[float, str] = {}
    for t in targets:
        col = summary[summary["target_sparsity"] == t].set_index("series")
        if col["mean"].notna().any():
            best[t] = col["mean"].idxmax()
        for s in series:
            r = col.loc[s] if s in col.index else None
            grid.loc[s, f"{t:g}"] = _fmt(*(r[["mean", "ci_half"]] if r is not None else (math.nan,) * 2))
    return grid, best


def markdown(summary: pd.DataFrame) -> str:
    grid, best = accuracy_grid(summary)
    head = "| method | " + " | ".join(f"sparsity {c}" for c in grid.columns) + " |"
    lines = [head, "|" + "---|" * (len(grid.columns) + 1)]
    for s, row in grid.iterrows():
        cells = [f"**{v}**" if best.get(float(c)) == s else v for c, v in row.items()]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latex(summary: pd.DataFrame, caption: str) -> str:
    grid, best = accuracy_grid(summary)
    cols = "l" + "c" * len(grid.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\begin{{tabular}}{{{cols}}}",
             r"\toprule", "Method & " + " & ".join(f"{c}" for c in grid.columns) + r" \\",
             r"\midrule"]
    for s, row in grid.iterrows():
        cells = [v.replace("±", r"$\pm$").replace("–", "--") for v in row]
        cells = [rf"\textbf{{{v}}}" if best.get(float(c)) == s else v for c, v in zip(row.index, cells)]
        lines.append(f"{s.replace('_', r'_')} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def equal_accuracy_markdown(table: pd.DataFrame) -> str:
    """The claim table: ">=" marks a lower bound (the method was still more accurate at its sparsest target)."""
    if table.empty:
        return "(needs at least two methods)"
    lines = ["| method | reference | reference sparsity | reference acc % | method's sparsity at that acc | "
             "x fewer weights |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        ge = "≥ " if r.get("bound", False) and not math.isnan(r["sparsity"]) else ""
        s = "not reached" if math.isnan(r["sparsity"]) else f"{ge}{r['sparsity']:.3f}"
        x = "–" if math.isnan(r["density_ratio"]) else f"{ge}{r['density_ratio']:.2f}"
        lines.append(f"| {r['method']} | {r['reference']} | {r['reference_sparsity']:.3f} | "
                     f"{r['reference_acc']:.2f} | {s} | {x} |")
    return "\n".join(lines)


def frame_markdown(df: pd.DataFrame) -> str:
    """Any small frame as a Markdown table."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
