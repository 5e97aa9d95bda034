"""bench.e2e's --tiny path (CI's check of the benchmark): two tasks at smoke size through the real run path, the bare
loop and the model alone, each timed; the numbers themselves are not asserted (timing belongs in bench/, not tests)."""
from __future__ import annotations

import torch

from bench import e2e


def test_the_tiny_benchmark_times_every_stage_of_two_tasks(workdir):
    threads = torch.get_num_threads()
    rows = e2e.main(["--tiny", "--threads", "1", "logger=none"])
    assert torch.get_num_threads() == threads  # the test process's threads back (the tests after it ran on 1)
    assert [r["task"] for r in rows] == e2e.TINY
    for r in rows:
        assert all(r[k] > 0 for k in ("real", "bare", "model", "real_val", "bare_val")), r
        assert r["batches"][0] >= 2 and r["batches"][1] >= 2, r  # the real path's batches were seen
    text = "\n".join(e2e.lines(rows, "header"))
    assert "real/bare" in text and text.count("\n| ") == len(rows) + 1
