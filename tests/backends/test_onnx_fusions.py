"""The ONNX engine's CPU graph keeps LayerNormalization and Add apart: the fused
graph it caches has no SkipLayerNormalization, and `cpu_session` keeps onnxruntime
from fusing them again (a misspelt optimizer name would let it, silently)."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from embedserve.backends.onnx_backend import cpu_session, optimized_model, resolve_onnx_model
from embedserve.backends.onnx_cache import OnnxCache
from tests.models import build_family_model


@pytest.fixture(scope="module")
def fused_graph(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    bert = build_family_model("bert", tmp_path_factory.mktemp("fusions") / "bert", model_dir)
    # The session's cache (conftest), which the family parity tests fill with the same export.
    cache = OnnxCache.at(Path(os.environ["EMBEDSERVE_CACHE_DIR"]), 0)
    config = json.loads((bert / "config.json").read_text())
    return optimized_model(resolve_onnx_model(bert, "feature-extraction", cache), config, cache)


def _ops(path: Path) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def _as_the_session_runs_it(path: Path, target: Path, fuse_skip_layer_norm: bool) -> collections.Counter[str]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    cpu_session(path, options, fuse_skip_layer_norm=fuse_skip_layer_norm)
    return _ops(target)


def test_the_cached_graph_is_fused_but_for_skip_layer_norm(fused_graph: Path) -> None:
    ops = _ops(fused_graph)
    assert ops["Attention"] > 0 and ops["LayerNormalization"] > 0
    assert ops["SkipLayerNormalization"] == 0


def test_the_session_leaves_layer_norm_unfused_only_when_told(fused_graph: Path, tmp_path: Path) -> None:
    told = _as_the_session_runs_it(fused_graph, tmp_path / "told.onnx", fuse_skip_layer_norm=False)
    assert told["SkipLayerNormalization"] == 0 and told["LayerNormalization"] > 0
    untold = _as_the_session_runs_it(fused_graph, tmp_path / "untold.onnx", fuse_skip_layer_norm=True)
    assert untold["SkipLayerNormalization"] > 0
