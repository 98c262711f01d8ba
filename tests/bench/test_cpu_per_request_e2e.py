"""`python -m bench cpu-per-request` end to end, cut short: one fresh server on the
near-free model, a small corpus, every role's CPU read from /proc."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main


def test_one_short_run_reports_each_role(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    code = main(["cpu-per-request", "--runs", "1", "--texts", "120", "--clients", "8", "--load-processes", "1",
                 "--warmup-texts", "0", "--idle-s", "0.1",
                 "--json-out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["failures"] == {} and run["requests"] == report["config"]["requests"]
    ms = run["ms_per_request"]
    # Every part of the path did work for these requests; clock ticks are 10 ms per
    # process, so only "some" is certain at this size, not how much.
    assert ms["router"] > 0 and ms["tokenizer_pool"] > 0 and ms["backends"] > 0
    assert abs(ms["server total"] - (ms["router"] + ms["tokenizer_pool"] + ms["backends"])) < 0.01
    # The backend's model CPU comes from its own count (ns, not ticks): some, and the
    # columns outside the model are the totals less it.
    assert ms["backend model"] > 0
    assert abs(ms["backend outside model"] - (ms["backends"] - ms["backend model"])) < 0.01
    assert abs(ms["server outside model"] - (ms["server total"] - ms["backend model"])) < 0.01
