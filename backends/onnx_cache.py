"""The folder of ONNX exports and conversions kept between starts.

An entry is named after what went into it, never after where the model lies:
the model files' contents, the task, the recipe's format and the versions of
the tools that made it. A second clone of the same model, or the same model in
another Hub snapshot folder, reuses the entry; a changed weight file or a new
exporter makes a new one. Hashing a large checkpoint on every start would cost
seconds, so a file's digest is remembered against its path, size and mtime.

The folder is capped in size: after a new entry is written, the least recently
used entries are removed until the total fits, never an entry this process uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_FORMAT = "3"  # bump when the export or optimisation recipe changes
# Files of a model directory that can change an export.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".onnx", ".onnx_data")
# The tools whose versions change what an export or conversion produces.
EXPORT_TOOLS = ("optimum", "optimum-onnx", "transformers", "torch", "onnx")
CONVERSION_TOOLS = ("onnx", "onnxruntime")
DIGEST_MEMO = "file-digests.json"
LAST_USED = ".last-used"
# An export scratch folder older than this was left by a crash.
STALE_SCRATCH_S = 6 * 3600.0
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class OnnxCache:
    root: Path  # <cache_dir>/onnx
    max_bytes: int  # 0: no cap

    @classmethod
    def at(cls, cache_dir: Path, max_bytes: int) -> OnnxCache:
        return cls(cache_dir / "onnx", max_bytes)

    def export_entry(self, model_dir: Path, task: str) -> Path:
        """The entry folder for exporting `model_dir` with `task` (may not exist yet)."""
        files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(MODEL_FILE_SUFFIXES))
        parts = [f"format={CACHE_FORMAT}", f"task={task}", *_versions(EXPORT_TOOLS)]
        parts += [f"{p.name}={self.file_digest(p)}" for p in files]
        return self.root / _key(parts)

    def derived_entry(self, source: Path, step: str) -> Path:
        """The entry folder for converting the ONNX file `source` by `step` (optimized, int8)."""
        parts = [f"format={CACHE_FORMAT}", f"step={step}", *_versions(CONVERSION_TOOLS),
                 f"source={self.file_digest(source)}"]
        return self.root / f"{_key(parts)}-{step}"

    def file_digest(self, path: Path) -> str:
        stat = path.stat()
        memo_key = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns]
        memo = self._read_memo()
        known = memo.get(memo_key)
        if isinstance(known, list) and known[:2] == stamp and len(known) == 3:
            return str(known[2])
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
        memo[memo_key] = [*stamp, digest.hexdigest()]
        self._write_memo(memo)
        return digest.hexdigest()

    def mark_used(self, entry: Path) -> None:
        (entry / LAST_USED).touch()

    def scratch_dir(self) -> Path:
        """A fresh folder beside the entries, renamed into place once complete."""
        import tempfile

        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.root, prefix=".export-"))

    def evict(self, in_use: Iterable[Path]) -> None:
        """Remove least recently used entries until the cache fits `max_bytes`,
        and scratch folders that crashed exports left behind."""
        if not self.root.is_dir():
            return
        keep = {p.resolve() for p in in_use}
        now = time.time()
        entries: list[tuple[float, int, Path]] = []
        for child in self.root.iterdir():
            if not child.is_dir():
                continue
            if child.name.startswith("."):
                if now - child.stat().st_mtime > STALE_SCRATCH_S:
                    shutil.rmtree(child, ignore_errors=True)
                continue
            marker = child / LAST_USED
            used = marker.stat().st_mtime if marker.exists() else child.stat().st_mtime
            entries.append((used, _tree_bytes(child), child))
        total = sum(size for _, size, _ in entries)
        if not self.max_bytes or total <= self.max_bytes:
            return
        for _, size, entry in sorted(entries):
            if total <= self.max_bytes:
                break
            if entry.resolve() in keep:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
            logger.info("evicted %s (%.0f MB) from the ONNX cache", entry.name, size / 1e6)
        if total > self.max_bytes:
            logger.warning("the ONNX cache holds %.0f MB, over its cap of %.0f MB, in entries in use",
                           total / 1e6, self.max_bytes / 1e6)

    def _read_memo(self) -> dict[str, object]:
        try:
            memo = json.loads((self.root / DIGEST_MEMO).read_text())
        except (OSError, ValueError):
            return {}
        return memo if isinstance(memo, dict) else {}

    def _write_memo(self, memo: dict[str, object]) -> None:
        # Several backends (one per GPU) may write at once: the last rename wins,
        # and a lost entry only costs one more hash on a later start.
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = self.root / f".{DIGEST_MEMO}.{os.getpid()}.tmp"
        scratch.write_text(json.dumps(memo))
        os.replace(scratch, self.root / DIGEST_MEMO)


def _versions(tools: Iterable[str]) -> list[str]:
    found = []
    for tool in tools:
        try:
            found.append(f"{tool}={metadata.version(tool)}")
        except metadata.PackageNotFoundError:
            found.append(f"{tool}=none")
    return found


def _key(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
