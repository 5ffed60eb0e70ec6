"""The foundation's acceptance runs on MNIST LeNet-300-100 at full length (slow: ``pytest -m slow``)."""

from __future__ import annotations

import csv

import pytest

from benchmarks.cli import main

pytestmark = pytest.mark.slow

FLOORS = {  # (method, target) -> minimum test accuracy %, from the acceptance criteria
    ("edgepopup", 0.5): 97.0, ("edgepopup", 0.8): 95.5, ("edgepopup", 0.9): 91.5,
    ("crbg", 0.8): 96.5, ("crbg", 0.9): 95.5,
}


def test_mnist_lenet300_crbg_and_edgepopup_reach_published_floors(tmp_path, mnist_data_root):
    out = tmp_path / "acc"
    assert main(["run", "--methods", "crbg,edgepopup", "--arch", "lenet300", "--dataset", "mnist",
                 "--sparsity", "0.5,0.8,0.9", "--epochs", "10", "--data-root", str(mnist_data_root),
                 "--out", str(out), "--no-progress"]) == 0
    with open(out / "runs.csv", newline="") as f:
        rows = {(r["method"], float(r["target_sparsity"])): r for r in csv.DictReader(f)}
    assert len(rows) == 6
    for (method, target), floor in FLOORS.items():
        row = rows[(method, target)]
        assert float(row["test_acc"]) >= floor, (method, target, row["test_acc"])
        assert abs(float(row["sparsity"]) - target) <= 0.01


def test_mnist_lenet300_crbg_structured(tmp_path, mnist_data_root):
    """Structured CRBG hits the unit-sparsity target exactly and learns far above chance (10 %).

    The thesis reports 88 % at 77 % structured sparsity; in our strong regime (weights and the 10x100
    classifier frozen at random init, gates only choose hidden units) we reach about 55 %: the training
    loss plateaus near 1.3 even with relaxed gates and lambda near zero, so the limit is what unit
    selection over frozen random weights can express, not the sparsity target.
    """
    out = tmp_path / "struct"
    assert main(["run", "--methods", "crbg", "--granularity", "structured", "--arch", "lenet300",
                 "--dataset", "mnist", "--sparsity", "0.77", "--epochs", "10", "--data-root", str(mnist_data_root),
                 "--out", str(out), "--no-progress"]) == 0
    with open(out / "runs.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert abs(float(row["unit_sparsity"]) - 0.77) <= 0.01
    assert float(row["test_acc"]) >= 45.0


def test_mnist_lenet300_strong_regime_floor_and_searchers(tmp_path, mnist_data_root):
    """Every method at 0.9 in the strong regime (3 epochs): the random floor stays near chance and the four
    mask-search methods are far above it; every row hits its target."""
    out = tmp_path / "strong"
    assert main(["run", "--methods", "crbg,edgepopup,cs,cts,random,magnitude,snip,grasp,synflow",
                 "--regime", "strong", "--arch", "lenet300", "--dataset", "mnist", "--sparsity", "0.9",
                 "--epochs", "3", "--data-root", str(mnist_data_root), "--out", str(out), "--no-progress"]) == 0
    with open(out / "runs.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert len(rows) == 9
    assert all(abs(float(r["sparsity"]) - 0.9) <= 0.01 for r in rows.values())
    assert float(rows["random"]["test_acc"]) < 20.0
    for method in ("crbg", "edgepopup", "cs", "cts"):
        assert float(rows[method]["test_acc"]) > 85.0, (method, rows[method]["test_acc"])
