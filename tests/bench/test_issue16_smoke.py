"""`bench/issue16.py --smoke`: the device check's engine section (bench/gpu_issue16.sh)
on CPU with a tiny model, so the one GPU run's code has run before a GPU is lent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.issue16 import main


def test_engine_section_reports_each_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUT", str(tmp_path))
    rows = "modules:off:float32:512,fused:on:float32:256,nonsense:off:float32:256"
    assert main(["--smoke", "--rows", rows, "--texts", "24", "--seconds", "0.4"]) == 0
    report = json.loads((tmp_path / "issue16.json").read_text())
    eager, graphed, broken = report["rows"]
    for row in (eager, graphed):
        assert row["parity_ok"] and row["min_cosine"] >= 0.999
        assert row["sync_tokens_per_s"] > 0 and row["pipelined_tokens_per_s"] > 0
        assert row["startup_s"] >= 0 and row["first_batch_s"] >= 0
    assert eager["attention"] == "varlen (reference)" and "capture_s" not in eager
    assert graphed["graphs_captured"] == graphed["graph_buckets"] > 0 and graphed["graph_failure"] is None
    assert graphed["forwards_replayed"] > 0 and "fused layers" in graphed["attention"]
    # A failing row is reported and the next rows still run.
    assert "choose from modules, fused, epilogue, compiled" in broken["error"]
    assert report["best"]["row"] in (eager["row"], graphed["row"])
