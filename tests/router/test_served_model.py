"""Choosing a model by name (router/served_model.py) and labelled /metrics (router/metrics.py)."""

from __future__ import annotations

from typing import Any

import pytest

from embedserve.router.errors import ModelNotFoundError
from embedserve.router.metrics import Metrics, merge_models, render_models, snapshot_models
from embedserve.router.served_model import ModelRegistry, ServedModel


def _model(index: int, name: str) -> ServedModel:
    unused: Any = None
    return ServedModel(index, name, unused, Metrics(512), [], unused, unused, unused, unused)


REGISTRY = ModelRegistry([_model(0, "embedder"), _model(1, "org/reranker"), _model(2, "org/reranker/v2")])


def test_the_default_is_the_first_and_names_are_exact() -> None:
    assert REGISTRY.choose(None).name == "embedder"
    assert REGISTRY.choose("org/reranker").index == 1
    with pytest.raises(ModelNotFoundError) as missing:
        REGISTRY.choose("Embedder")
    assert missing.value.status == 404 and "Embedder" in missing.value.message
    assert missing.value.to_openai_body()["error"] == {
        "message": missing.value.message, "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


@pytest.mark.parametrize(("path", "name", "route"), [
    ("/models/embedder/embed", "embedder", "/embed"),
    ("/models/embedder", "embedder", "/"),
    ("/models/org/reranker/rerank", "org/reranker", "/rerank"),
    ("/models/org/reranker/v2/rerank", "org/reranker/v2", "/rerank"),
    ("/models/embedder/v1/embeddings", "embedder", "/v1/embeddings"),
])
def test_path_prefix_takes_the_longest_served_name(path: str, name: str, route: str) -> None:
    split = REGISTRY.split_path(path)
    assert split is not None and (split[0].name, split[1]) == (name, route)


def test_paths_without_a_prefix_or_with_an_unknown_name() -> None:
    assert REGISTRY.split_path("/embed") is None
    for path in ("/models/nope/embed", "/models/org/embed", "/models/embedderx/embed"):
        with pytest.raises(ModelNotFoundError):
            REGISTRY.split_path(path)


def test_one_model_renders_as_ever_several_carry_a_model_label() -> None:
    first, second = Metrics(512), Metrics(512)
    first.request_count.inc(method="batch")
    second.queue_size.set(3)
    assert render_models([("a", first)]) == first.render()
    text = render_models([("a", first), ("b", second)])
    assert 'te_request_count{model="a",method="batch"} 1' in text
    assert 'te_queue_size{model="b"} 3' in text and 'te_queue_size{model="a"} 0' in text
    assert 'te_request_duration_bucket{model="a",le="+Inf"} 0' in text
    assert text.count("# TYPE te_queue_size gauge") == 1


def test_snapshots_merge_per_model() -> None:
    first, second = Metrics(512), Metrics(512)
    second.embed_success.inc(4)
    merged = [Metrics(512), Metrics(512)]
    merge_models(merged, snapshot_models([first, second]))
    merge_models(merged, snapshot_models([first, second]))
    assert merged[0].embed_success.value() == 0 and merged[1].embed_success.value() == 8
