"""The speed tools run end to end (their numbers are measured by hand: `pytest benchmarks/perf`)."""

from __future__ import annotations

import json

from benchmarks.perf import epoch


def test_epoch_benchmark_times_harness_and_plain_loop(capsys):
    epoch.main(["--arch", "conv2", "--method", "edgepopup", "--batch", "64", "--images", "256", "--device", "cpu"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["images"] == 256 and row["device"] == "cpu"
    assert row["plain_s"] > 0 and row["harness_s"] > 0
    assert abs(row["plain_img_s"] - 256 / row["plain_s"]) < 0.1 * row["plain_img_s"]
    assert abs(row["harness_over_plain"] - row["harness_s"] / row["plain_s"]) < 0.01
