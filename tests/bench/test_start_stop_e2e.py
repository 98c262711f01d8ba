"""`python -m bench start-stop` end to end, one measured run: real starts of this tree."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main


def test_one_run_reports_ready_and_stop_times(tmp_path: Path) -> None:
    out = tmp_path / "start.json"
    assert main(["start-stop", "--runs", "1", "--json-out", str(out)]) == 0
    [run] = json.loads(out.read_text())["runs"]
    assert run["exit_code"] == 0 and run["ready_s"] > 0 and run["stop_s"] > 0
