"""The runs `make bench` compares, each server run against the in-process
sentence-transformers baseline of the same engine.

    torch        server --backend torch        vs  ST backend="torch"   (target 0.80)
    onnx         server --backend onnx         vs  ST backend="onnx"    (target 1.10, issue 16)
    onnx-int8    server --backend onnx --dtype int8: speed-up and cosine vs onnx float32 (INT8_TARGETS)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    server_args: tuple[str, ...]
    baseline_backend: str | None  # the ST backend to compare with; None: compared with another scenario
    target_ratio: float | None


SCENARIOS = {
    "torch": Scenario("torch", ("--backend", "torch"), "torch", 0.80),
    "onnx": Scenario("onnx", ("--backend", "onnx"), "onnx", 1.10),
    "onnx-int8": Scenario("onnx-int8", ("--backend", "onnx", "--dtype", "int8"), None, None),
}
DEFAULT_SCENARIOS = ("torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class Int8Targets:
    """Issue 16's bar for `--dtype int8` against the float32 ONNX server."""

    speedup: float = 1.70
    mean_cosine: float = 0.99
    min_cosine: float = 0.975


INT8_TARGETS = Int8Targets()
