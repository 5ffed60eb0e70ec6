"""The shipped paper sweeps parse, and each states its cell count (checked) and its GPU hours."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.spec import SweepSpec

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "sweeps").glob("*.yaml"))


def test_every_paper_figure_has_a_sweep_file():
    names = {p.stem for p in SWEEPS}
    assert {"mnist_lenet300", "cifar10_conv", "cifar10_resnet", "imagenet_vit_swin"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_parses_and_states_cells_and_gpu_hours(path):
    text = path.read_text()
    assert re.search(r"^# GPU hours: ", text, re.M), "state the expected GPU hours"
    declared = int(re.search(r"^# cells: (\d+)", text, re.M).group(1))
    assert len(SweepSpec.from_sources(path, {}).cells()) == declared
