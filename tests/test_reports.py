"""`bench report`: the numbers behind the figures and tables, checked against hand-computed values,
plus every output file and clear errors for malformed CSVs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.results import append_rows
from reports.stats import ci95, equal_accuracy, missing_cells, pareto_mask, sparsity_at_accuracy, summarize
from reports import figures
from reports.tables import equal_accuracy_markdown, latex, markdown


def run_row(method, target, seed, acc, sparsity=None, status="ok", gran="unstructured"):
    return {"cell": f"{method}-{gran}-{target}-{seed}", "method": method, "granularity": gran, "regime": "strong",
            "arch": "lenet300", "dataset": "mnist", "target_sparsity": target, "seed": seed, "status": status,
            "sparsity": target if sparsity is None else sparsity, "test_acc": acc, "val_acc": acc - 0.5,
            "torch": "2.x", "device": "cpu"}


def fake_results(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    append_rows(folder / "runs.csv", rows)
    append_rows(folder / "curves.csv", [{"cell": r["cell"], "method": r["method"], "target_sparsity": r["target_sparsity"],
                                         "seed": r["seed"], "epoch": e, "train_loss": 1.0 / e, "val_acc": r["test_acc"] - 3 + e,
                                         "sparsity": r["target_sparsity"]} for r in rows if r["status"] == "ok"
                                        for e in (1, 2, 3)])
    append_rows(folder / "layers.csv", [{"cell": r["cell"], "layer": name, "shape": "1x1", "weights": 100,
                                         "kept": int(100 * (1 - r["target_sparsity"] * f)), "sparsity": r["target_sparsity"] * f}
                                        for r in rows if r["status"] == "ok" for name, f in (("1", 1.0), ("3", 0.5))])
    return folder


def test_ci95_matches_t_interval_by_hand():
    mean, lo, hi = ci95(pd.Series([90.0, 92.0, 94.0]))
    # sd = 2, n = 3, t(0.975, 2) = 4.302653: half-width = 4.302653 * 2 / sqrt(3) = 4.968275
    assert mean == 92.0
    assert lo == pytest.approx(92.0 - 4.968275, abs=1e-5) and hi == pytest.approx(92.0 + 4.968275, abs=1e-5)
    assert all(math.isnan(v) for v in ci95(pd.Series([91.0]))[1:])  # one seed: no band


def test_pareto_membership_small_example():
    s = np.array([0.5, 0.8, 0.9, 0.5, 0.8, 0.95])
    a = np.array([97.0, 96.0, 93.0, 96.0, 96.0, 90.0])
    # (0.5, 96) is dominated by (0.5, 97); the two (0.8, 96) points are equal: neither dominates the other
    assert pareto_mask(s, a).tolist() == [True, True, True, False, True, True]


def test_summary_series_means_and_gaps():
    rows = [run_row("crbg", 0.5, 0, 96.0), run_row("crbg", 0.5, 1, 98.0), run_row("crbg", 0.9, 0, 95.0),
            run_row("crbg", 0.9, 1, 0.0, status="failed"), run_row("edgepopup", 0.5, 0, 97.0),
            run_row("edgepopup", 0.5, 1, 97.0), run_row("edgepopup", 0.9, 0, 91.0, sparsity=0.899),
            run_row("edgepopup", 0.9, 1, 93.0, sparsity=0.901)]
    df = pd.DataFrame(rows)
    ok = df[df.status == "ok"]
    summ = summarize(ok).set_index(["series", "target_sparsity"])
    assert summ.loc[("crbg", 0.5), "mean"] == 97.0 and summ.loc[("crbg", 0.5), "seeds"] == 2
    assert summ.loc[("crbg", 0.9), "mean"] == 95.0 and math.isnan(summ.loc[("crbg", 0.9), "ci_lo"])  # failed seed not a zero
    assert summ.loc[("edgepopup", 0.9), "sparsity"] == pytest.approx(0.9)
    gaps = missing_cells(df)
    assert gaps[["series", "target_sparsity", "seed", "state"]].values.tolist() == [["crbg", 0.9, 1, "failed"]]
    md = markdown(summarize(ok))
    assert "**97.00 ± 12.71**" in md  # crbg at 0.5: mean 97, half-width t(0.975,1) * sqrt(2) / sqrt(2) = 12.706
    assert "| edgepopup | 97.00 ± 0.00 | 92.00 ± 12.71 |" in md
    assert r"\toprule" in latex(summarize(ok), "c") and r"\textbf{95.00}" in latex(summarize(ok), "c")


def test_sparsity_at_equal_accuracy_interpolates_never_extrapolates():
    curve = pd.DataFrame({"sparsity": [0.5, 0.8, 0.9], "mean": [98.0, 97.0, 95.0]})
    assert sparsity_at_accuracy(curve, 96.0) == pytest.approx(0.85)  # halfway between 0.8 (97) and 0.9 (95)
    assert sparsity_at_accuracy(curve, 97.5) == pytest.approx(0.65)
    assert sparsity_at_accuracy(curve, 90.0) == pytest.approx(0.9)   # above every point: sparsest measured
    assert math.isnan(sparsity_at_accuracy(curve, 99.0))              # never reached
    summ = pd.DataFrame({"dataset": "mnist", "arch": "lenet300", "regime": "strong", "series": ["a"] * 3 + ["b"] * 3,
                         "target_sparsity": [0.5, 0.8, 0.9] * 2, "sparsity": [0.5, 0.8, 0.9] * 2,
                         "mean": [98.0, 97.0, 95.0, 97.0, 95.0, 90.0]})
    eq = equal_accuracy(summ)
    row = eq[(eq.method == "a") & (eq.reference == "b") & (eq.reference_sparsity == 0.8)].iloc[0]
    assert row.sparsity == pytest.approx(0.9) and row.density_ratio == pytest.approx(0.2 / 0.1)
    assert not row.bound  # a's sweep reached b's 95 % exactly at its sparsest target
    past = eq[(eq.method == "a") & (eq.reference == "b") & (eq.reference_sparsity == 0.9)].iloc[0]
    assert past.sparsity == pytest.approx(0.9) and past.bound  # a still at 95 > 90 % where its sweep stopped
    reverse = eq[(eq.method == "b") & (eq.reference == "a") & (eq.reference_sparsity == 0.8)].iloc[0]
    assert reverse.sparsity == pytest.approx(0.5) and not reverse.bound  # b falls below a's 97 % after 0.5
    text = equal_accuracy_markdown(eq[eq.method == "a"])
    assert "| 0.900 | 90.00 | ≥ 0.900 | ≥ 1.00 |" in text and "| 0.800 | 95.00 | 0.900 | 2.00 |" in text


def test_bench_report_writes_every_item(tmp_path, capsys):
    rows = [run_row(m, t, s, acc) for m, base in (("crbg", 97.0), ("edgepopup", 96.0), ("cs", 95.0))
            for t, drop in ((0.5, 0.0), (0.8, 1.0), (0.9, 3.0)) for s, acc in ((0, base - drop), (1, base - drop + 0.4))]
    folder = fake_results(tmp_path / "res", rows)
    out = tmp_path / "rep"
    assert main(["report", str(folder), "--out", str(out), "--x", "density-log"]) == 0
    for stem in ("acc_vs_sparsity_mnist_lenet300_strong", "layers_mnist_lenet300_strong", "curves_mnist_lenet300_strong"):
        assert (out / f"{stem}.png").stat().st_size > 5000 and (out / f"{stem}.pdf").stat().st_size > 1000
    for name in ("table_mnist_lenet300_strong.md", "table_mnist_lenet300_strong.tex", "table_mnist_lenet300_strong.csv",
                 "equal_accuracy_mnist_lenet300_strong.csv", "index.md", "index.html"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "table_mnist_lenet300_strong.csv")
    crbg = table[(table.series == "crbg") & (table.target_sparsity == 0.8)].iloc[0]
    assert crbg["mean"] == pytest.approx(96.2) and crbg.seeds == 2
    index = (out / "index.md").read_text()
    assert "acc_vs_sparsity_mnist_lenet300_strong.png" in index and "Pareto" in index and "torch 2.x" in index
    assert "None: every series" in index
    assert "both ways against crbg" in index and "| edgepopup | crbg |" in index and "| crbg | edgepopup |" in index
    assert main(["report", str(folder), "--out", str(tmp_path / "rep2"), "--reference", "edgepopup"]) == 0
    for rep, ref in ((out, "crbg"), (tmp_path / "rep2", "edgepopup")):
        text = (rep / "index.md").read_text()
        assert f"both ways against {ref}" in text
        claims = text.split(f"both ways against {ref}")[1].split("\n\n", 2)[1]  # the table after the sentence
        pairs = [line.split("|")[1:3] for line in claims.splitlines()[2:] if line.startswith("|")]
        assert len(pairs) == 2 * 2 * 3  # both directions, two other methods, three targets
        assert all(ref in (m.strip(), r.strip()) for m, r in pairs), pairs  # every claim involves the reference


@pytest.mark.parametrize("damage,message", [
    (lambda text: text + "crbg-x,crbg,unstructured\n", "runs.csv: line 4: wrong number of fields"),
    (lambda text: text.replace("97.0", "ninety", 1), "runs.csv: line 2: column 'test_acc' is not a float"),
    (lambda text: text.replace("target_sparsity", "target", 1), "no column target_sparsity"),
])
def test_malformed_csv_one_line_error(tmp_path, capsys, damage, message):
    folder = fake_results(tmp_path / "res", [run_row("crbg", 0.5, 0, 97.0), run_row("crbg", 0.9, 0, 95.0)])
    runs = folder / "runs.csv"
    runs.write_text(damage(runs.read_text()))
    assert main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_value_after_a_failed_row_names_the_right_line(tmp_path, capsys):
    folder = fake_results(tmp_path / "res", [run_row("crbg", 0.5, 0, 0.0, status="failed"),
                                             run_row("crbg", 0.9, 0, 95.0)])
    runs = folder / "runs.csv"
    runs.write_text(runs.read_text().replace("95.0", "oops"))
    assert main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 2
    assert "runs.csv: line 3: column 'test_acc'" in capsys.readouterr().err


def test_truncated_curves_csv_names_file_and_line(tmp_path, capsys):
    folder = fake_results(tmp_path / "res", [run_row("crbg", 0.5, 0, 97.0)])
    curves = folder / "curves.csv"
    curves.write_text(curves.read_text()[:-25])  # cut inside the last line
    assert main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 2
    assert "curves.csv: line 4" in capsys.readouterr().err


def test_report_on_folder_without_runs(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    assert "no runs.csv" in capsys.readouterr().err


def test_missing_target_is_a_gap_in_the_line(tmp_path, monkeypatch):
    """A series without any finished seed at a target has NaN there, so its line breaks instead of bridging."""
    from reports import figures

    drawn = {}
    real_plot = figures.plt.Axes.plot

    def spy(self, x, y, *args, **kwargs):
        drawn.setdefault(kwargs.get("label"), (list(x), list(y)))
        return real_plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(figures.plt.Axes, "plot", spy)
    summ = summarize(pd.DataFrame([run_row("crbg", 0.5, 0, 97.0), run_row("crbg", 0.9, 0, 95.0),
                                   run_row("edgepopup", 0.5, 0, 96.0), run_row("edgepopup", 0.8, 0, 95.5),
                                   run_row("edgepopup", 0.9, 0, 93.0)]))
    figures.accuracy_vs_sparsity(summ, pd.DataFrame(), figures.Palette(["crbg", "edgepopup"]), tmp_path,
                                 "sparsity", "fig")
    x, y = drawn["crbg"]
    assert x[0] == 0.5 and math.isnan(x[1]) and x[2] == 0.9
    assert y[0] == 97.0 and math.isnan(y[1]) and y[2] == 95.0
    assert drawn["edgepopup"][1] == [96.0, 95.5, 93.0]


def test_seeds_are_dots_and_the_band_needs_three_seeds(tmp_path, monkeypatch):
    """Every seed is drawn as a dot; the 95 % band only where a target has 3 seeds or more (a 2-seed
    t-interval spans tens of points and tinted the whole plot)."""
    from reports import figures
    from reports.stats import add_series

    bands, dots = {}, {}
    real_fill, real_scatter = figures.plt.Axes.fill_between, figures.plt.Axes.scatter

    def fill(self, x, lo, hi, *args, **kwargs):
        bands[kwargs["color"]] = list(lo)
        return real_fill(self, x, lo, hi, *args, **kwargs)

    def scatter(self, x, y, *args, **kwargs):
        dots[kwargs["color"]] = sorted(y)
        return real_scatter(self, x, y, *args, **kwargs)

    monkeypatch.setattr(figures.plt.Axes, "fill_between", fill)
    monkeypatch.setattr(figures.plt.Axes, "scatter", scatter)
    rows = [run_row("crbg", 0.5, s, 97.0 + s) for s in range(3)] + [run_row("crbg", 0.9, s, 90.0 + 10 * s)
                                                                    for s in range(2)]
    rows += [run_row("edgepopup", 0.5, 0, 96.0), run_row("edgepopup", 0.9, 0, 93.0)]
    runs = add_series(pd.DataFrame(rows))
    palette = figures.Palette(["crbg", "edgepopup"])
    figures.accuracy_vs_sparsity(summarize(runs), pd.DataFrame(), palette, tmp_path, "sparsity", "fig", seeds=runs)
    crbg, ep = palette.color["crbg"], palette.color["edgepopup"]
    assert dots[crbg] == [90.0, 97.0, 98.0, 99.0, 100.0] and ep not in dots  # one seed: the line is the seed
    assert not math.isnan(bands[crbg][0]) and math.isnan(bands[crbg][1]) and ep not in bands


def test_report_includes_tuning_trials(tmp_path, capsys):
    folder = tmp_path / "tune"
    folder.mkdir()
    pd.DataFrame({"study": "s", "trial": [0, 1, 2, 3], "state": ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"],
                  "val_acc": [90.0, None, 93.0, 95.0], "sparsity": [0.9, None, 0.9, 0.85],
                  "feasible": [True, False, True, False], "hp_lam": [1.0, 2.0, 3.0, 4.0]}).to_csv(folder / "trials.csv",
                                                                                               index=False)
    out = tmp_path / "rep"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    assert (out / "tuning.png").exists() and (out / "tuning.pdf").exists()
    index = (out / "index.md").read_text()
    # the best feasible trial is 2 (93 %); trial 3 is more accurate but missed the sparsity target
    table = index[index.index("Best five feasible"):]
    assert "| s | 2 | 93.0 | 0.9 | 3.0 |" in table and "| s | 3 |" not in table


def test_regimes_are_panels_sanity_has_its_table_and_epoch_budgets_stay_apart(tmp_path):
    rows = []
    for regime in ("strong", "weak"):
        for t in (0.5, 0.9):
            rows.append({**run_row("crbg", t, 0, 90.0 + t), "cell": f"crbg-{regime}-{t}", "regime": regime,
                         "sanity": "none", "epochs": 10})
            rows.append({**run_row("crbg", t, 0, 80.0), "cell": f"crbg-{regime}-{t}-shuffle", "regime": regime,
                         "sanity": "shuffle", "epochs": 10})
        rows.append({**run_row("dense", 0.0, 0, 98.0), "cell": f"dense-{regime}", "regime": regime, "sanity": "none",
                     "epochs": 10})
    folder = fake_results(tmp_path / "res", rows)
    out = tmp_path / "rep"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    for regime in ("strong", "weak"):
        assert (out / f"acc_vs_sparsity_mnist_lenet300_{regime}.png").exists()
        sanity = pd.read_csv(out / f"sanity_mnist_lenet300_{regime}.csv")
        assert set(sanity.series) == {"crbg", "crbg [shuffle]"}
        main_table = pd.read_csv(out / f"table_mnist_lenet300_{regime}.csv")
        assert set(main_table.series) == {"crbg"}  # neither sanity rows nor dense in the main table
    assert "None: every series" in (out / "index.md").read_text()  # dense at 0 and sanity are not "missing"
    assert (out / "index.md").read_text().count("Dense reference (all weights, trained): 98.00 % over 1 seed(s).") == 2
    # the same method at two epoch budgets: two series, never one average
    more = [{**r, "cell": r["cell"] + "-5ep", "epochs": 5, "test_acc": 50.0} for r in rows if r["method"] == "crbg"]
    folder2 = fake_results(tmp_path / "res2", rows + more)
    assert main(["report", str(folder2), "--out", str(tmp_path / "rep2")]) == 0
    series = set(pd.read_csv(tmp_path / "rep2" / "table_mnist_lenet300_strong.csv").series)
    assert series == {"crbg (epochs=10)", "crbg (epochs=5)"}


def test_palette_is_fixed_per_method_name_and_intervals_stay_within_0_100():
    one, other = figures.Palette(["crbg", "edgepopup"]), figures.Palette(["cts", "zzz", "edgepopup", "crbg (tuned)"])
    assert one.color["edgepopup"] == other.color["edgepopup"] and one.marker["edgepopup"] == other.marker["edgepopup"]
    assert other.color["crbg (tuned)"] == one.color["crbg"] and other.marker["crbg (tuned)"] != one.marker["crbg"]
    from methods import METHODS

    every = figures.Palette(list(METHODS))  # imp had no slot and took another method's colour and marker
    pairs = [(every.color[m], every.marker[m]) for m in METHODS]
    assert len(set(pairs)) == len(pairs)
    assert figures.Palette(["edgepopup"]).color["edgepopup"] == every.color["edgepopup"]  # the same in any report
    rows = pd.DataFrame({"dataset": "d", "arch": "a", "regime": "strong", "method": "cs", "granularity": "unstructured",
                         "sanity": "none", "target_sparsity": 0.5, "sparsity": 0.5, "test_acc": [99.9, 90.0, 99.0],
                         "seed": [0, 1, 2]})
    row = summarize(rows).iloc[0]
    assert row["ci_hi"] == 100.0 and 0.0 <= row["ci_lo"] < row["mean"] and row["ci_half"] > 100 - row["mean"]


def test_base_network_size_sweep_gets_one_figure_with_a_line_per_arch(tmp_path):
    rows = []
    for arch, width, base in (("lenet300x0.5", 150, 95.0), ("lenet300", 300, 97.0), ("lenet300x0.25", 75, 90.0)):
        for t in (0.5, 0.77):
            for s in (0, 1):
                r = run_row("crbg", t, s, base - 10 * t + s, gran="structured")
                rows.append({**r, "cell": f"{r['cell']}-{arch}", "arch": arch, "prunable_weights": width * 1000})
    folder = fake_results(tmp_path / "res", rows)
    out = tmp_path / "rep"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    stem = "by_arch_mnist_strong_crbg_structured"
    assert (out / f"{stem}.png").stat().st_size > 5000
    table = pd.read_csv(out / f"{stem}.csv")
    assert list(dict.fromkeys(table.arch)) == ["lenet300x0.25", "lenet300x0.5", "lenet300"]  # by size
    assert table.loc[(table.arch == "lenet300") & (table.target_sparsity == 0.77), "mean"].item() == pytest.approx(89.8)
    assert "crbg (structured) across architectures" in (out / "index.md").read_text()


def test_report_shows_what_each_ticket_buys(tmp_path):
    rows = []
    for m, base in (("crbg", 97.0), ("edgepopup", 96.0)):
        for t in (0.5, 0.9):
            for s in (0, 1):
                rows.append({**run_row(m, t, s, base - 5 * t), "flops": round(266200 * (1 - t)), "flops_dense": 266200,
                             "bytes_ticket": round(33275 * (0.9 if t == 0.5 else 0.4)) + 8, "bytes_dense": 1064800,
                             "latency_ms_dense_b1": 0.2, "latency_ms_masked_b1": 0.2, "latency_ms_csr_b1": 0.4 - 0.3 * t})
    folder = fake_results(tmp_path / "res", rows)
    out = tmp_path / "rep"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    assert (out / "cost_mnist_lenet300_strong.png").stat().st_size > 5000
    costs = pd.read_csv(out / "cost_mnist_lenet300_strong.csv")
    row = costs[(costs.series == "crbg") & (costs.target_sparsity == 0.9)].iloc[0]
    assert row.speedup_flops == pytest.approx(10.0, rel=1e-3) and row.compression == pytest.approx(1064800 / 13318)
    assert row.speedup_csr_b1 == pytest.approx(0.2 / 0.13) and row.speedup_masked_b1 == pytest.approx(1.0)
    assert "What each ticket buys" in (out / "index.md").read_text()


def test_roles_come_from_the_method_class_and_drive_the_report(tmp_path):
    """Each row's `role` is the method class's (reference, search, baseline, sanity), and the report splits rows
    by role, not by name: a reference row under another name is the dashed dense line, not a series; a folder
    written before the column gets the same roles from its method names."""
    from methods import METHODS
    from reports.load import legacy_role, load

    for name, cls in METHODS.items():
        assert cls.role() == legacy_role(name, "none"), name
        assert cls.role("shuffle") == "sanity"
    assert {METHODS["dense"].role(), METHODS["crbg"].role(), METHODS["snip"].role()} == {"reference", "search", "baseline"}
    rows = [{**run_row("crbg", t, 0, 90.0 + t), "role": "search", "sanity": "none"} for t in (0.5, 0.9)]
    rows.append({**run_row("full", 0.0, 0, 98.0), "role": "reference", "sanity": "none"})
    folder = fake_results(tmp_path / "res", rows)
    out = tmp_path / "rep"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "table_mnist_lenet300_strong.csv").series) == {"crbg"}
    assert "Dense reference (all weights, trained): 98.00 %" in (out / "index.md").read_text()
    old = fake_results(tmp_path / "old", [{**run_row("dense", 0.0, 0, 98.0), "sanity": "none"},
                                          {**run_row("snip", 0.9, 0, 90.0), "sanity": "none"},
                                          {**run_row("crbg", 0.9, 0, 80.0), "cell": "c-r", "sanity": "random"}])
    runs = load([old]).runs
    roles = dict(zip(runs["method"] + runs["sanity"], runs["role"]))
    assert roles == {"densenone": "reference", "snipnone": "baseline", "crbgrandom": "sanity"}


def test_report_over_two_folders_with_missing_failed_and_duplicate_cells(tmp_path, capsys):
    """End to end over two folders: a failed seed is neither a zero nor a finished seed, a grid point with no
    row at all is listed in missing.csv (state missing) beside the failed one (state failed), and a cell found in
    both folders counts once, with the later folder's row."""
    a = [run_row("crbg", 0.5, 0, 90.0), run_row("crbg", 0.5, 1, 92.0), run_row("crbg", 0.9, 0, 88.0),
         run_row("crbg", 0.9, 1, 0.0, status="failed"), run_row("edgepopup", 0.5, 0, 91.0),
         run_row("edgepopup", 0.5, 1, 93.0), run_row("edgepopup", 0.9, 0, 89.0),  # edgepopup 0.9 seed 1: no row
         run_row("cts", 0.5, 0, 90.0), run_row("cts", 0.5, 1, 90.0)]  # cts at 0.9: no row at all
    b = [run_row("crbg", 0.5, 0, 94.0)]  # the same cell id as in a, rerun
    folders = [fake_results(tmp_path / "a", a), fake_results(tmp_path / "b", b)]
    out = tmp_path / "rep"
    assert main(["report", *map(str, folders), "--out", str(out)]) == 0
    table = pd.read_csv(out / "table_mnist_lenet300_strong.csv").set_index(["series", "target_sparsity"])
    assert table.loc[("crbg", 0.5), "mean"] == pytest.approx(93.0)  # (94 from b + 92) / 2, not 90 from a
    assert table.loc[("crbg", 0.9), "mean"] == 88.0 and table.loc[("crbg", 0.9), "seeds"] == 1
    assert table.loc[("edgepopup", 0.9), "seeds"] == 1
    gaps = pd.read_csv(out / "missing.csv")
    assert sorted(map(tuple, gaps[["series", "target_sparsity", "seed", "state"]].values.tolist())) == [
        ("crbg", 0.9, 1, "failed"), ("cts", 0.9, 0, "missing"), ("cts", 0.9, 1, "missing"),
        ("edgepopup", 0.9, 1, "missing")]
    index = (out / "index.md").read_text()
    assert "4 grid points have no finished row" in index and "| crbg | 0.9 | 1 | failed |" in index.replace("0.90", "0.9")
    md = (out / "table_mnist_lenet300_strong.md").read_text()
    assert "| cts | 90.00 ± 0.00 | – |" in md  # a target without any finished seed: a dash, never a zero


def test_figures_read_as_a_reader_needs(tmp_path, monkeypatch):
    """Issue 28, point 19, on a one-epoch, one-target-per-series report with a collapsed ticket: every figure has
    its panel's title; the cost axes carry a few distinct round labels and no minor ones (they overlapped);
    a one-epoch curve sits on the tick 1 (the axis was 0.95-1.05); the collapsed ticket (9.8 % on 10 classes)
    is ringed on no Pareto front though it is the sparsest and cheapest; index.html renders the Markdown."""
    figs = {}
    real_save = figures.save

    def keep(fig, out, stem):
        figs[stem.split("_mnist")[0]] = {
            "titles": [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""],
            "xlabels": [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes],
            "minor": [[t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()] for ax in fig.axes],
            "xlim": [ax.get_xlim() for ax in fig.axes],
            "rings": [[(x, y) for line in ax.get_lines() if line.get_label() == "Pareto front"
                       for x, y in zip(line.get_xdata(), line.get_ydata())] for ax in fig.axes]}
        return real_save(fig, out, stem)

    monkeypatch.setattr(figures, "save", keep)
    rows = []
    for m, t, acc in (("crbg", 0.85, 95.0), ("crbg", 0.99, 9.8), ("edgepopup", 0.9, 94.0)):
        rows.append({**run_row(m, t, 0, acc), "num_classes": 10, "flops": round(266200 * (1 - t)),
                     "flops_dense": 266200, "bytes_ticket": round(33275 * (1 - t)) + 8, "bytes_dense": 1064800})
    folder = fake_results(tmp_path / "res", rows)
    curves = pd.read_csv(folder / "curves.csv")
    curves[curves.epoch == 1].to_csv(folder / "curves.csv", index=False)  # a one-epoch run
    out = tmp_path / "rep"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    title = "lenet300 on mnist, strong regime"
    for name in ("acc_vs_sparsity", "cost", "layers", "curves"):
        assert any(title in t for t in figs[name]["titles"]), (name, figs[name]["titles"])
    for labels, minor in zip(figs["cost"]["xlabels"], figs["cost"]["minor"]):
        shown = [label for label in labels if label]
        assert 2 <= len(shown) <= 6 and len(set(shown)) == len(shown) and not minor, labels
    assert figs["curves"]["xlabels"][-1] == ["1"] and figs["curves"]["xlim"][-1] == (0.5, 1.5)
    assert all(y > 20 for ax in figs["acc_vs_sparsity"]["rings"] + figs["cost"]["rings"] for _, y in ax)
    assert any(y == 95.0 for ax in figs["acc_vs_sparsity"]["rings"] for _, y in ax)
    page = (out / "index.html").read_text()
    assert "<pre>" not in page and "| ---" not in page and "`" not in page
    assert page.count("<table>") >= 2 and "<code>--measure-latency</code>" in page
    assert "none at or below 20 % (2x chance: a collapsed ticket)" in (out / "index.md").read_text()


def test_the_front_leaves_out_collapsed_tickets():
    from reports.stats import collapse_floor

    s, a = np.array([0.5, 0.9, 0.99]), np.array([96.0, 95.0, 9.8])
    assert list(pareto_mask(s, a)) == [True, True, True]
    assert list(pareto_mask(s, a, floor=20.0)) == [True, True, False]
    assert collapse_floor(pd.DataFrame({"num_classes": [100, 100]})) == pytest.approx(2.0)
    assert collapse_floor(pd.DataFrame({"test_acc": [1.0]})) is None  # rows before the column: no floor
