"""The speed tools run end to end (their numbers are measured by hand: `pytest benchmarks/perf`)."""

from __future__ import annotations

import json

import pytest

from benchmarks.perf import epoch


def test_epoch_benchmark_times_harness_and_plain_loop(capsys):
    epoch.main(["--arch", "conv2", "--method", "edgepopup", "--batch", "64", "--images", "256", "--device", "cpu"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["images"] == 256 and row["device"] == "cpu"
    assert row["plain_s"] > 0 and row["harness_s"] > 0
    assert abs(row["plain_img_s"] - 256 / row["plain_s"]) < 0.1 * row["plain_img_s"]
    assert abs(row["harness_over_plain"] - row["harness_s"] / row["plain_s"]) < 0.01


def test_gpu_check_reports_every_stage_and_installs_only_from_its_wheels(monkeypatch, tmp_path):
    """Issue 30, point 4: the GPU command's table carries each stage's exit, both ratio columns and the epoch
    rows; a missing dependency without a wheels folder is one clear stop, never a download."""
    from benchmarks.perf import gpu_check

    status = {"cuda tests": (0, "5 passed"), "steps fp32": (1, "1 failed, 11 passed"), "epoch conv4": (0, "ok")}
    text = gpu_check.table(status, {("lenet300", "crbg"): 2.43}, {("lenet300", "crbg"): 2.99, ("conv4", "cs"): 1.15},
                           [{"arch": "conv4", "device": "cpu", "plain_s": 2.6, "harness_s": 2.8,
                             "harness_over_plain": 1.05, "harness_img_s": 183.5}])
    assert "| steps fp32 | 1 | 1 failed, 11 passed |" in text
    assert "| lenet300 | crbg | 2.43 | 2.99 |" in text and "| conv4 | cs | – | 1.15 |" in text
    assert "| conv4 | cpu | 2.6 | 2.8 | 1.05 | 183.5 |" in text
    monkeypatch.setitem(gpu_check.NEEDED, "no_such_module_xyz", "no-such-module-xyz")
    calls = []
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *a, **k: calls.append(a))
    with pytest.raises(SystemExit, match="missing no-such-module-xyz and no --wheels folder"):
        gpu_check.install_missing(None)
    (tmp_path / "w").mkdir()
    assert gpu_check.install_missing(tmp_path / "w") == ["no-such-module-xyz"]
    (cmd,) = calls
    assert cmd[0][-4:] == ["--no-index", "--find-links", str(tmp_path / "w"), "no-such-module-xyz"]
