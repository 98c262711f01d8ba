"""`bench/gpu_check.py --smoke`: issue 12's load table on CPU with the near-free model
and a few clients, so the GPU run's code has run before a GPU is lent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu_check import main


def test_smoke_table_reports_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUT", str(tmp_path))
    assert main(["--smoke"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["load matrix rows"]
    assert [(r["workload"], r["clients"]) for r in rows] == [
        ("mixed 1-8", 4), ("mixed 1-8", 16), ("bulk 32", 4), ("bulk 32", 16)]
    for row in rows:
        assert row["failures"] == {} and row["requests"] > 0 and row["tokens_per_s"] > 0
        assert row["p50_ms"] <= row["p99_ms"]
        assert row["gpu_busy"] is None and row["gpu_busy_source"] in ("none", "nvidia-smi", "nvml")
        assert {"router", "tokenizer_pool", "backends", "load generator"} <= set(row["cores"])
    bulk = [r for r in rows if r["workload"] == "bulk 32"]
    assert all(r["texts"] == r["requests"] * 32 for r in bulk)
