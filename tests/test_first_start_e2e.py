"""What a new user sees on the first start, and what a second clone reuses."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server

# Our own log format (proto/child.py): anything else on the console is a third
# party printing past our logging.
OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|DEBUG) +\[[\w-]+\] ")


def _start_up_lines(log: str) -> list[str]:
    lines = log.splitlines()
    ready = next(i for i, line in enumerate(lines) if " ready in " in line)
    return lines[: ready + 1]


def test_first_start_prints_only_our_own_info_lines_and_a_copy_reuses_the_export(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(cache))
    # int8 runs every step a first start can run: export, fusions, quantization.
    with start_server("--dtype", "int8", tmp_dir=tmp_path) as server:
        assert httpx.post(f"{server.url}/embed", json={"inputs": "hello"}).status_code == 200
        first_log = server.log()
    assert "exporting it once" in first_log
    strangers = [line for line in _start_up_lines(first_log) if not OWN_LINE.match(line)]
    assert strangers == [], "\n".join(strangers)
    entries = sorted(p.name for p in (cache / "onnx").iterdir() if p.is_dir())
    assert len(entries) == 3  # export, optimized, int8

    # A second clone holds the same files at another path: same entries, no export.
    clone = tmp_path / "second-clone" / "model"
    shutil.copytree(model_dir, clone)
    with start_server("--model-id", str(clone), "--dtype", "int8", tmp_dir=tmp_path) as server:
        assert httpx.post(f"{server.url}/embed", json={"inputs": "hello"}).status_code == 200
        second_log = server.log()
    assert "reusing the ONNX export cached at" in second_log
    assert "exporting it once" not in second_log
    assert sorted(p.name for p in (cache / "onnx").iterdir() if p.is_dir()) == entries


def test_the_cache_cap_evicts_exports_of_other_models(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(cache))
    stale = cache / "onnx" / "an-old-model"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"x" * 1_000_000)
    # A cap below one export: the old entry goes, the ones in use stay.
    monkeypatch.setenv("EMBEDSERVE_CACHE_MAX_GB", "0.001")
    with start_server(tmp_dir=tmp_path) as server:
        assert httpx.post(f"{server.url}/embed", json={"inputs": "hello"}).status_code == 200
        log = server.log()
    assert not stale.exists()
    assert "evicted an-old-model" in log
    assert len([p for p in (cache / "onnx").iterdir() if p.is_dir()]) == 2  # export and optimized
