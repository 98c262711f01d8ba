"""Several models in one server (issue 15), with real processes: an embedder (the
bundled MiniLM), a tiny reranker and a tiny classifier, each reached by name over
HTTP (path prefix, x-model header, OpenAI `model`) and gRPC (x-model metadata),
answers checked against transformers; unknown names; /v1/models; /info and
/metrics per model; one model's backlog never holding another's requests; and
the same with --router-workers 2."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import yaml

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import RunningServer, start_server, wait_for
from tests.models import CLASSIFIER_LABELS, build_tiny_model, classifier_logits

QUERY = "what is the capital of france"
TEXTS = ["Paris is the capital of France.", "Berlin is in Germany.", "bananas are yellow"]
LONG_TEXT = " ".join(["retrieval augmented generation pipelines embed passages"] * 40)  # > 256 tokens
NAMES = ("embedder", "reranker", "classifier")


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_tiny_model("reranker", tmp_path_factory.mktemp("models") / "reranker", model_dir)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_tiny_model("classifier", tmp_path_factory.mktemp("models") / "classifier", model_dir, seed=1)


def _models_file(path: Path, models: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"models": models}))
    return path


@pytest.fixture(scope="module")
def multi(model_dir: Path, reranker_dir: Path, classifier_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("multi")
    config = _models_file(tmp / "models.yaml", [
        # One input per batch: a backlog on the embedder takes seconds to drain.
        {"model_id": str(model_dir), "name": "embedder", "max_batch_requests": 1},
        {"model_id": str(reranker_dir), "name": "reranker"},
        {"model_id": str(classifier_dir), "name": "classifier", "max_concurrent_requests": 64},
    ])
    args = ("--models-config", str(config), "--backend", "torch", "--max-client-batch-size", "64",
            "--tokenization-workers", "1")
    with start_server(*args, tmp_dir=tmp) as running:
        yield running


def _post(server: RunningServer, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=120)


def _check_embeddings(vectors: list[list[float]], sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    expected = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(np.array(vectors), expected, atol=2e-3)


def _check_ranks(ranks: list[dict[str, float]], reranker_dir: Path) -> None:
    expected = {i: 1 / (1 + np.exp(-classifier_logits(reranker_dir, QUERY, text)[0])) for i, text in enumerate(TEXTS)}
    assert sorted(int(r["index"]) for r in ranks) == [0, 1, 2]
    for rank in ranks:
        assert rank["score"] == pytest.approx(expected[int(rank["index"])], abs=1e-4)


def _check_prediction(predictions: list[dict[str, object]], classifier_dir: Path) -> None:
    logits = classifier_logits(classifier_dir, QUERY)
    probabilities = np.exp(logits) / np.exp(logits).sum()
    assert {p["label"] for p in predictions} == set(CLASSIFIER_LABELS.values())
    by_label = {p["label"]: p["score"] for p in predictions}
    for index, label in CLASSIFIER_LABELS.items():
        assert by_label[label] == pytest.approx(probabilities[index], abs=1e-4)


def test_each_model_by_path_prefix_and_header(multi: RunningServer, reranker_dir: Path, classifier_dir: Path,
                                              sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    for via_prefix in (True, False):
        def post(name: str, route: str, body: object) -> httpx.Response:
            if via_prefix:
                return _post(multi, f"/models/{name}{route}", body)
            return _post(multi, route, body, {"x-model": name})

        embedded = post("embedder", "/embed", {"inputs": TEXTS})
        assert embedded.status_code == 200, embedded.text
        _check_embeddings(embedded.json(), sentence_transformer)
        ranked = post("reranker", "/rerank", {"query": QUERY, "texts": TEXTS})
        assert ranked.status_code == 200, ranked.text
        _check_ranks(ranked.json(), reranker_dir)
        predicted = post("classifier", "/predict", {"inputs": QUERY})
        assert predicted.status_code == 200, predicted.text
        _check_prediction(predicted.json(), classifier_dir)
        # POST / is the chosen model's own route.
        assert len(post("reranker", "/", {"query": QUERY, "texts": TEXTS}).json()) == 3
        # Tokenizer routes use the chosen model's tokenizer.
        assert post("classifier", "/tokenize", {"inputs": "hello"}).status_code == 200


def test_no_name_is_the_first_model(multi: RunningServer, sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    response = _post(multi, "/embed", {"inputs": TEXTS})
    assert response.status_code == 200
    _check_embeddings(response.json(), sentence_transformer)
    assert httpx.get(f"{multi.url}/info").json()["served_model_name"] == "embedder"


def test_a_route_the_model_does_not_serve_answers_as_a_single_server(multi: RunningServer) -> None:
    response = _post(multi, "/models/reranker/embed", {"inputs": "x"})
    assert response.status_code == 424 and response.json()["error_type"] == "Backend"
    response = _post(multi, "/predict", {"inputs": "x"}, {"x-model": "embedder"})
    assert response.status_code == 424 and response.json()["error_type"] == "Backend"


def test_openai_model_field_picks_the_model(multi: RunningServer, sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    response = _post(multi, "/v1/embeddings", {"input": TEXTS, "model": "embedder"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "embedder"
    _check_embeddings([d["embedding"] for d in response.json()["data"]], sentence_transformer)
    # The classifier has no embeddings: the same answer as a classifier server's.
    wrong_type = _post(multi, "/v1/embeddings", {"input": "x", "model": "classifier"})
    assert wrong_type.status_code == 424
    unknown = _post(multi, "/v1/embeddings", {"input": "x", "model": "text-embedding-3-small"})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {
        "message": unknown.json()["error"]["message"], "type": "invalid_request_error", "param": "model",
        "code": "model_not_found"}}
    assert "text-embedding-3-small" in unknown.json()["error"]["message"]


def test_v1_rerank_model_field_picks_the_model(multi: RunningServer, reranker_dir: Path) -> None:
    response = _post(multi, "/v1/rerank", {"query": QUERY, "documents": TEXTS, "model": "reranker"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "reranker"
    scores = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    expected = {i: 1 / (1 + np.exp(-classifier_logits(reranker_dir, QUERY, text)[0])) for i, text in enumerate(TEXTS)}
    assert scores == pytest.approx(expected, abs=1e-4)
    unknown = _post(multi, "/v1/rerank", {"query": QUERY, "documents": TEXTS, "model": "rerank-english-v3.0"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_unknown_names_are_404_in_tei_shape(multi: RunningServer) -> None:
    for response in (_post(multi, "/models/nope/embed", {"inputs": "x"}),
                     _post(multi, "/embed", {"inputs": "x"}, {"x-model": "nope"}),
                     httpx.get(f"{multi.url}/models/nope/info"),
                     httpx.get(f"{multi.url}/info", headers={"x-model": "nope"})):
        assert response.status_code == 404
        body = response.json()
        assert set(body) == {"error", "error_type"} and body["error_type"] == "NotFound"
        assert "nope" in body["error"]
    prefixed = _post(multi, "/models/nope/v1/embeddings", {"input": "x"})
    assert prefixed.status_code == 404 and prefixed.json()["error"]["code"] == "model_not_found"


def test_v1_models_lists_every_model(multi: RunningServer) -> None:
    listing = httpx.get(f"{multi.url}/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == list(NAMES)
    for card in listing["data"]:
        assert card["object"] == "model" and isinstance(card["created"], int) and card["owned_by"]
    assert httpx.get(f"{multi.url}/v1/models/reranker").json()["id"] == "reranker"
    missing = httpx.get(f"{multi.url}/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_info_per_model(multi: RunningServer, model_dir: Path, classifier_dir: Path) -> None:
    embedder = httpx.get(f"{multi.url}/models/embedder/info").json()
    assert embedder["model_id"] == str(model_dir) and embedder["model_type"] == {"embedding": {"pooling": "mean"}}
    assert embedder["max_batch_requests"] == 1
    classifier = httpx.get(f"{multi.url}/info", headers={"x-model": "classifier"}).json()
    assert classifier["model_id"] == str(classifier_dir) and classifier["served_model_name"] == "classifier"
    assert classifier["model_type"]["classifier"]["id2label"] == {str(k): v for k, v in CLASSIFIER_LABELS.items()}
    assert classifier["max_concurrent_requests"] == 64 and classifier["max_batch_requests"] is None
    reranker = httpx.get(f"{multi.url}/models/reranker/info").json()
    assert "reranker" in reranker["model_type"] and reranker["max_concurrent_requests"] == 512


def test_metrics_carry_a_model_label(multi: RunningServer) -> None:
    assert _post(multi, "/models/classifier/predict", {"inputs": QUERY}).status_code == 200
    text = httpx.get(f"{multi.url}/metrics").text
    for name in NAMES:
        assert f'te_queue_size{{model="{name}"}}' in text
    assert text.count("# TYPE te_queue_size gauge") == 1
    assert multi.metric('te_predict_success{model="classifier"}') >= 1
    assert 'te_request_duration_bucket{model="classifier",le="+Inf"}' in text
    assert not [line for line in text.splitlines()
                if line.startswith("te_") and 'model="' not in line]


def test_grpc_metadata_picks_the_model(multi: RunningServer, reranker_dir: Path, classifier_dir: Path,
                                       sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(multi.grpc_target) as channel:
        embedded = tei_pb2_grpc.EmbedStub(channel).Embed(
            tei_pb2.EmbedRequest(inputs=TEXTS[0]), metadata=(("x-model", "embedder"),), timeout=60)
        expected = sentence_transformer.encode([TEXTS[0]], normalize_embeddings=True)[0]
        np.testing.assert_allclose(np.array(embedded.embeddings), expected, atol=2e-3)
        ranked = tei_pb2_grpc.RerankStub(channel).Rerank(
            tei_pb2.RerankRequest(query=QUERY, texts=TEXTS), metadata=(("x-model", "reranker"),), timeout=60)
        _check_ranks([{"index": r.index, "score": r.score} for r in ranked.ranks], reranker_dir)
        predicted = tei_pb2_grpc.PredictStub(channel).Predict(
            tei_pb2.PredictRequest(inputs=QUERY), metadata=(("x-model", "classifier"),), timeout=60)
        _check_prediction([{"label": p.label, "score": p.score} for p in predicted.predictions], classifier_dir)
        info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), metadata=(("x-model", "classifier"),))
        assert info.model_type == tei_pb2.MODEL_TYPE_CLASSIFIER
        assert tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest()).model_type == tei_pb2.MODEL_TYPE_EMBEDDING
        with pytest.raises(grpc.RpcError) as refused:
            tei_pb2_grpc.EmbedStub(channel).Embed(
                tei_pb2.EmbedRequest(inputs="x"), metadata=(("x-model", "nope"),), timeout=60)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in (refused.value.details() or "")


async def _fire(url: str, bodies: list[dict[str, object]]) -> list[int]:
    async with httpx.AsyncClient(timeout=300) as client:
        responses = await asyncio.gather(*(client.post(f"{url}/models/embedder/embed", json=b) for b in bodies))
        return [r.status_code for r in responses]


def test_a_backlog_on_one_model_does_not_hold_another(multi: RunningServer) -> None:
    """Fill the embedder's queue (one long input per batch), then ask the classifier:
    its answers arrive while the embedder's backlog is still queued."""
    backlog_label = 'te_queue_size{model="embedder"}'
    enqueued_before = multi.metric('te_request_input_length_count{model="embedder"}')
    bodies: list[dict[str, object]] = [{"inputs": [LONG_TEXT] * 32} for _ in range(6)]
    statuses: list[int] = []
    blocker = threading.Thread(target=lambda: statuses.extend(asyncio.run(_fire(multi.url, bodies))))
    blocker.start()
    try:
        wait_for(lambda: multi.metric('te_request_input_length_count{model="embedder"}') >= enqueued_before + 192,
                 120, "the embedder's backlog")
        assert multi.metric(backlog_label) > 50
        for _ in range(5):
            answer = _post(multi, "/models/classifier/predict", {"inputs": [QUERY, "another text"]})
            assert answer.status_code == 200, answer.text
        still_queued = multi.metric(backlog_label)
        assert still_queued > 0, "the classifier's answers must not have waited for the embedder's backlog"
        assert multi.metric('te_queue_size{model="classifier"}') == 0
    finally:
        blocker.join(timeout=600)
    assert statuses == [200] * 6
    assert multi.metric(backlog_label) == 0


@pytest.fixture(scope="module")
def multi_workers(model_dir: Path, classifier_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Two models behind two fronts and one queue owner."""
    tmp = tmp_path_factory.mktemp("multi-workers")
    config = _models_file(tmp / "models.yaml", [
        {"model_id": str(model_dir), "name": "embedder", "max_batch_requests": 1},
        {"model_id": str(classifier_dir), "name": "classifier"},
    ])
    args = ("--models-config", str(config), "--backend", "torch", "--router-workers", "2",
            "--tokenization-workers", "1", "--max-client-batch-size", "64")
    with start_server(*args, tmp_dir=tmp) as running:
        yield running


def test_router_workers_serve_every_model(multi_workers: RunningServer, classifier_dir: Path,
                                          sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    server = multi_workers
    for _ in range(4):  # several connections: both fronts answer
        with httpx.Client(timeout=120) as client:
            embedded = client.post(f"{server.url}/embed", json={"inputs": TEXTS}, headers={"x-model": "embedder"})
            assert embedded.status_code == 200, embedded.text
            _check_embeddings(embedded.json(), sentence_transformer)
            predicted = client.post(f"{server.url}/models/classifier/predict", json={"inputs": QUERY})
            assert predicted.status_code == 200, predicted.text
            _check_prediction(predicted.json(), classifier_dir)
    assert httpx.get(f"{server.url}/models/classifier/info").json()["served_model_name"] == "classifier"
    assert httpx.get(f"{server.url}/models/embedder/info").json()["max_batch_requests"] == 1
    # Every front's counters, merged by the owner, per model.
    assert server.metric('te_predict_success{model="classifier"}') == 4
    assert server.metric('te_embed_success{model="embedder"}') == 12
    with grpc.insecure_channel(server.grpc_target) as channel:
        predicted = tei_pb2_grpc.PredictStub(channel).Predict(
            tei_pb2.PredictRequest(inputs=QUERY), metadata=(("x-model", "classifier"),), timeout=60)
        assert {p.label for p in predicted.predictions} == set(CLASSIFIER_LABELS.values())
