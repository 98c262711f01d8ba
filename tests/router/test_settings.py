"""RouterSettings from the launcher's RouterConfig: the served models' own fields
come from `models` only, the default model's on top."""

from __future__ import annotations

import pytest

from embedserve.proto.gen_pb import config_pb2
from embedserve.router.settings import RouterSettings


def _model(name: str, **fields: object) -> config_pb2.ServedModel:
    return config_pb2.ServedModel(name=name, model_id=f"acme/{name}", backend_sockets=[f"/tmp/{name}-backend-0"],
                                  **fields)


def test_the_default_models_fields_on_top_and_one_view_per_model() -> None:
    config = config_pb2.RouterConfig(
        tokenizer_sockets=["/tmp/tok-0"], port=8080, max_client_batch_size=16,
        models=[_model("embedder", pooling="mean", max_batch_tokens=4096, prompts={"query": "q: "}),
                _model("reranker", pooling="cls", max_batch_tokens=8192, model_type="reranker",
                       id2label={"0": "score"}, revision="v2")],
    )
    settings = RouterSettings.from_proto(config)
    assert (settings.served_model_name, settings.model_id, settings.pooling, settings.max_batch_tokens) == (
        "embedder", "acme/embedder", "mean", 4096)
    assert settings.prompts == {"query": "q: "} and settings.backend_sockets == ("/tmp/embedder-backend-0",)
    embedder, reranker = settings.model_views()
    assert embedder.served_model_name == "embedder" and embedder.models == ()
    assert (reranker.served_model_name, reranker.model_type, reranker.max_batch_tokens, reranker.revision) == (
        "reranker", "reranker", 8192, "v2")
    assert reranker.id2label == {"0": "score"} and reranker.prompts == {}
    # The server's own fields are every view's.
    assert {view.max_client_batch_size for view in (settings, embedder, reranker)} == {16}
    assert {view.port for view in (settings, embedder, reranker)} == {8080}


def test_a_config_without_a_model_is_refused() -> None:
    with pytest.raises(ValueError, match="names no model"):
        RouterSettings.from_proto(config_pb2.RouterConfig(tokenizer_sockets=["/tmp/tok-0"]))
