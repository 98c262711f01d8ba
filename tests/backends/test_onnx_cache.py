"""The ONNX cache: entries named by content, reused across copies, capped by size."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from embedserve.backends.onnx_cache import LAST_USED, OnnxCache


def _model(folder: Path, weights: bytes = b"w" * 1000) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text("not part of the key")
    return folder


def _entry(cache: OnnxCache, name: str, size: int, used_at: float) -> Path:
    entry = cache.root / name
    entry.mkdir(parents=True)
    (entry / "model.onnx").write_bytes(b"x" * size)
    (entry / LAST_USED).touch()
    os.utime(entry / LAST_USED, (used_at, used_at))
    return entry


def test_a_copy_of_the_model_elsewhere_has_the_same_entry(tmp_path: Path) -> None:
    cache = OnnxCache.at(tmp_path / "cache", 0)
    first = _model(tmp_path / "clone-a" / "model")
    second = tmp_path / "clone-b" / "model"
    shutil.copytree(first, second)
    os.utime(second / "model.safetensors", (1, 1))  # another mtime, same bytes
    (second / "README.md").write_text("edited")
    assert cache.export_entry(first, "feature-extraction") == cache.export_entry(second, "feature-extraction")


def test_changed_weights_or_task_make_a_new_entry(tmp_path: Path) -> None:
    cache = OnnxCache.at(tmp_path / "cache", 0)
    model = _model(tmp_path / "model")
    before = cache.export_entry(model, "feature-extraction")
    assert cache.export_entry(model, "fill-mask") != before
    (model / "model.safetensors").write_bytes(b"v" * 1000)
    assert cache.export_entry(model, "feature-extraction") != before


def test_digests_are_remembered_until_the_file_changes(tmp_path: Path) -> None:
    cache = OnnxCache.at(tmp_path / "cache", 0)
    weights = _model(tmp_path / "model") / "model.safetensors"
    digest = cache.file_digest(weights)
    assert (cache.root / "file-digests.json").is_file()
    assert cache.file_digest(weights) == digest
    weights.write_bytes(b"other")
    assert cache.file_digest(weights) != digest


def test_eviction_removes_least_recently_used_entries_until_under_the_cap(tmp_path: Path) -> None:
    cache = OnnxCache.at(tmp_path / "cache", max_bytes=2500)
    now = time.time()
    oldest = _entry(cache, "a", 1000, now - 300)
    in_use_but_old = _entry(cache, "b", 1000, now - 200)
    recent = _entry(cache, "c", 1000, now - 100)
    cache.evict(in_use=[in_use_but_old])
    assert not oldest.exists()
    assert in_use_but_old.exists() and recent.exists()


def test_no_cap_keeps_everything_and_stale_scratch_folders_go(tmp_path: Path) -> None:
    cache = OnnxCache.at(tmp_path / "cache", max_bytes=0)
    kept = _entry(cache, "a", 1000, time.time() - 10_000)
    stale = cache.scratch_dir()
    os.utime(stale, (1, 1))
    fresh = cache.scratch_dir()  # an export under way in another process
    cache.evict(in_use=[])
    assert kept.exists() and fresh.exists() and not stale.exists()
