"""A number is a function of its cell: rows are averaged only within one experiment (every setting equal
but the seed), in the report's tables, its figure data and the sweep's summary; series labels name what
differs; a penalty-only lambda grid is one curve; and a setting declared once reaches flags, ids, rows
and the report's grouping."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.results import append_rows
from benchmarks.summary import summary_table
from reports.stats import add_series, summarize


def row(cell: str, seed: int = 0, acc: float = 90.0, **changes) -> dict:
    """A complete runs.csv row of a strong-regime Edge-Popup cell (no `experiment` column: read from its
    identity columns, as for folders written before that column)."""
    base = {"cell": cell, "method": "edgepopup", "role": "search", "granularity": "unstructured", "sanity": "none",
            "arch": "lenet300", "dataset": "mnist", "target_sparsity": 0.9, "seed": seed, "regime": "strong",
            "epochs": 10, "amp": False, "batch_size": 128, "activation": "relu", "val_size": 0.1, "train_size": 0,
            "weight_init": "scaled_signed_constant", "exclude": "", "tuned": "default", "train_epochs": 0,
            "hp_lr": 0.1, "hp_momentum": 0.9, "sparsity": 0.9, "test_acc": acc, "val_acc": acc, "status": "ok"}
    return {**base, **changes}


KINDS = {  # one setting of each kind: a method hyperparameter, the protocol, the data, the budget, the recipe
    "hp_lr": 0.2, "weight_init": "signed_constant", "activation": "prelu", "train_size": 2000, "val_size": 0.2,
    "batch_size": 64, "amp": True, "exclude": "fc3", "epochs": 3, "train_train_lr": 0.01, "granularity": "structured",
}


@pytest.mark.parametrize("column", KINDS)
def test_two_rows_differing_in_one_setting_are_two_series(tmp_path, column):
    name = column.removeprefix("train_") if column == "train_train_lr" else column
    rows = [row("a", acc=30.0), row("a1", seed=1, acc=32.0), row("b", acc=60.0, **{name: KINDS[column]})]
    df = pd.DataFrame(rows)
    named = add_series(df)
    assert named.loc[0, "series"] == named.loc[1, "series"] != named.loc[2, "series"]
    assert named.loc[0, "experiment"] == named.loc[1, "experiment"] != named.loc[2, "experiment"]
    short = name.removeprefix("hp_")
    if name != "granularity":  # the label says what differs
        assert f"{short}=" in named.loc[2, "series"], named.loc[2, "series"]
    summ = summarize(df)
    assert sorted(summ["mean"]) == [31.0, 60.0] and sorted(summ["seeds"]) == [1, 2]
    append_rows(tmp_path / "runs.csv", rows)
    table = summary_table(tmp_path)
    assert "31.00" in table and "60.00" in table and "45." not in table


def test_one_experiments_seeds_are_averaged_whatever_their_results():
    """Seeds of one experiment stay one series even where a recorded protocol choice (hp_fill_used) differs."""
    rows = [row("a", 0, 90.0, hp_fill_used=True), row("b", 1, 92.0, hp_fill_used=False)]
    summ = summarize(pd.DataFrame(rows))
    assert len(summ) == 1 and summ["mean"].iloc[0] == 91.0 and summ["series"].iloc[0] == "edgepopup"


def test_rows_with_an_experiment_id_group_by_it():
    """An `experiment` column (every setting but the seed, hashed from the cell) decides even what no column
    shows: two experiments with equal visible columns are never averaged, their labels are told apart."""
    rows = [row("a", 0, 30.0, experiment="e1"), row("b", 1, 34.0, experiment="e1"), row("c", 0, 60.0, experiment="e2")]
    summ = summarize(pd.DataFrame(rows)).sort_values("mean")
    assert summ["mean"].tolist() == [32.0, 60.0] and summ["series"].nunique() == 2


def test_a_penalty_only_lambda_grid_is_one_curve_of_points(tmp_path):
    """crbg with target_mode=none at two lambdas: one series whose points are its lambdas (achieved sparsity is
    the outcome), two rows in the table, never one average; beside it the target-controlled crbg."""
    from reports import figures
    from reports.tables import markdown

    crbg = dict(method="crbg", hp_target_mode="none", hp_sigma=0.5)
    rows = [row("a", acc=97.0, sparsity=0.3, hp_lam=0.01, **crbg), row("b", acc=60.0, sparsity=0.99, hp_lam=100.0, **crbg),
            row("c", acc=95.0, sparsity=0.9, hp_lam=1.0, **{**crbg, "hp_target_mode": "dual+project"})]
    summ = summarize(pd.DataFrame(rows))
    grid = summ[summ["series"] == "crbg (target_mode=none)"]
    assert sorted(grid["point"]) == ["lam=0.01", "lam=100"] and sorted(grid["mean"]) == [60.0, 97.0]
    md = markdown(summ)
    assert "crbg (target_mode=none) lam=0.01 | **97.00**" in md and "crbg (target_mode=none) lam=100 | 60.00" in md
    drawn = {}
    real = figures.plt.Axes.plot

    def spy(self, x, y, *args, **kwargs):
        drawn.setdefault(kwargs.get("label"), (list(x), list(y)))
        return real(self, x, y, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures.plt.Axes, "plot", spy)
        figures.accuracy_vs_sparsity(summ, pd.DataFrame(), figures.Palette(list(summ["series"])), tmp_path,
                                     "sparsity", "fig")
    assert drawn["crbg (target_mode=none)"] == ([0.3, 0.99], [97.0, 60.0])  # one line along achieved sparsity


@pytest.fixture
def knob():
    """A result-changing setting declared once, as a plugin would (the code that reads it, ``cell.knob``, is
    all it would add)."""
    from benchmarks.settings import CELL_SETTINGS, cell_setting

    declared = cell_setting("knob", 1.0, "a test setting", check=lambda v: None if v > 0 else "must be > 0")
    yield declared
    del CELL_SETTINGS["knob"]


def test_one_declaration_reaches_flags_yaml_ids_rows_tuning_and_the_report(knob, tmp_path, capsys):
    import json

    from benchmarks.cli import make_parser, main
    from benchmarks.export import cell_settings
    from benchmarks.spec import SweepSpec
    from benchmarks.tune import TuneSpec

    for command in ("run", "tune"):  # the flag, with its help
        assert "--knob" in make_parser(command).format_help() or "--knob" in \
            make_parser(command)._subparsers._group_actions[0].choices[command].format_help()
    default, turned = (SweepSpec(methods=["edgepopup"], sparsity=[0.5], **kw).cells()[0] for kw in ({}, {"knob": 2.0}))
    assert default.id == SweepSpec(methods=["edgepopup"], sparsity=[0.5]).cells()[0].id  # at its default: old ids
    assert turned.knob == 2.0 and turned.id != default.id and turned.experiment != default.experiment
    assert turned.tuned_key() != default.tuned_key()  # a configuration tuned at knob 1 is not used at knob 2
    assert TuneSpec(SweepSpec(methods=["crbg"], knob=2.0)).study_name("crbg", 0.9).endswith("_knob=2.0")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("knob: 0\n")
    assert main(["run", "--config", str(cfg), "--dataset", "synthetic"]) == 2  # the YAML key, checked
    assert "knob must be > 0" in capsys.readouterr().err
    out = tmp_path / "r"
    args = ["run", "--methods", "edgepopup", "--arch", "lenet300", "--dataset", "synthetic", "--sparsity", "0.5",
            "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(out)]
    assert main(args) == 0 and main(args + ["--knob", "2"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["knob"]) == [1.0, 2.0] and runs["experiment"].nunique() == 2  # the row's column
    plan = json.loads((out / "plan.json").read_text())
    two = runs.loc[runs["knob"] == 2.0, "cell"].item()
    assert cell_settings(out, two).knob == 2.0 and plan[two]["knob"] == 2.0  # export's rebuild
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    table = pd.read_csv(tmp_path / "rep" / "table_synthetic_lenet300_strong.csv")
    assert sorted(table["series"]) == ["edgepopup (knob=1.0)", "edgepopup (knob=2.0)"]  # the report's grouping


def test_rows_written_before_the_experiment_column_join_their_experiment_through_plan_json(tmp_path):
    """A folder whose first seed was written without the `experiment` column (an older version) and whose
    second seed was written with it: plan.json names the first row's experiment, so the two seeds are one
    series of 2 seeds, not two."""
    from benchmarks.cli import main

    out = tmp_path / "r"
    args = ["run", "--methods", "edgepopup", "--arch", "lenet300", "--dataset", "synthetic", "--sparsity", "0.5",
            "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    old = pd.read_csv(out / "runs.csv").drop(columns="experiment")
    old.to_csv(out / "runs.csv", index=False)
    assert main(args + ["--seeds", "1"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs["experiment"].isna().sum() == 1  # the older row has none
    summ = summarize(add_series(runs.assign(experiment=runs["experiment"].fillna(""))))  # columns alone: apart
    assert len(summ) == 2
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    table = pd.read_csv(tmp_path / "rep" / "table_synthetic_lenet300_strong.csv")
    assert table["series"].tolist() == ["edgepopup"] and table["seeds"].tolist() == [2]
    assert "2" in summary_table(out).splitlines()[1].split()[-1]  # the sweep's summary: 2 seeds
