"""Engines by name. Import paths, not classes, so a backend process imports only
the framework it runs (torch or onnxruntime)."""

from __future__ import annotations

import importlib

from embedserve.backends.base import Backend, EngineSpec
from embedserve.backends.dense import with_dense

ENGINES = {
    "torch": "embedserve.backends.torch_backend:TorchBackend",
    "onnx": "embedserve.backends.onnx_backend:OnnxBackend",
    "python": "embedserve.backends.remote_code:RemoteCodeBackend",
    # model2vec's static embeddings: numpy only (backends/static.py).
    "static": "embedserve.backends.static:StaticBackend",
}


def load_engine(name: str, spec: EngineSpec) -> Backend:
    if name not in ENGINES:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(ENGINES)}")
    if spec.causal_rerank is not None and name != "torch":
        raise ValueError(f"causal-LM rerankers run on the torch backend only, not {name}")
    module_name, class_name = ENGINES[name].split(":")
    engine: Backend = getattr(importlib.import_module(module_name), class_name)(spec)
    # Dense modules run on the pooled rows, the same for every engine.
    return with_dense(engine, spec.dense_layers)
