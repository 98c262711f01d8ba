"""The tei.v1 gRPC API against real servers on real ports, with stubs generated
from the proto: every RPC, streams included, equal to the HTTP answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import BULK, RunningServer, start_server, wait_for

TEXTS = ["grpc clients work unchanged", "Zürich 東京", "a third, somewhat longer input text for the stream"]
QUERY = "what is served over grpc"
LONG_TEXT = " ".join(["streams keep their order while the queue batches their items"] * 30)


def _channel(server: RunningServer) -> grpc.Channel:
    return grpc.insecure_channel(server.grpc_target)


def _http(server: RunningServer, path: str, body: object, **kwargs: object) -> object:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------ embedding model


def test_info(server: RunningServer) -> None:
    with _channel(server) as channel:
        info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest())
    http = httpx.get(f"{server.url}/info").json()
    assert info.model_type == tei_pb2.MODEL_TYPE_EMBEDDING
    assert (info.model_id, info.model_dtype, info.max_input_length) == (
        http["model_id"], http["model_dtype"], http["max_input_length"])
    assert not info.HasField("max_batch_requests") and not info.HasField("model_sha")


def test_embed_unary_and_stream_equal_http(server: RunningServer) -> None:
    expected = np.asarray(_http(server, "/embed", {"inputs": TEXTS}))
    with _channel(server) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        response, call = stub.Embed.with_call(tei_pb2.EmbedRequest(inputs=TEXTS[0]))
        np.testing.assert_allclose(response.embeddings, expected[0], atol=1e-6)
        assert response.metadata.compute_tokens == 7 and response.metadata.inference_time_ns > 0
        headers = dict(call.initial_metadata())
        assert headers["x-compute-tokens"] == "7" and "x-inference-time" in headers
        streamed = list(stub.EmbedStream(iter([tei_pb2.EmbedRequest(inputs=t) for t in TEXTS * 4])))
    assert len(streamed) == 12
    for i, item in enumerate(streamed):  # order kept
        np.testing.assert_allclose(item.embeddings, expected[i % 3], atol=1e-6)


def test_embed_options(server: RunningServer) -> None:
    raw = np.asarray(_http(server, "/embed", {"inputs": TEXTS[2], "normalize": False, "truncate": True})[0])
    cut = np.asarray(_http(server, "/embed", {"inputs": TEXTS[2], "dimensions": 64})[0])
    with _channel(server) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        got = stub.Embed(tei_pb2.EmbedRequest(inputs=TEXTS[2], normalize=False))
        np.testing.assert_allclose(got.embeddings, raw, atol=1e-5)
        got = stub.Embed(tei_pb2.EmbedRequest(inputs=TEXTS[2], dimensions=64))
        np.testing.assert_allclose(got.embeddings, cut, atol=1e-6)


def test_embed_all_unary_and_stream(server: RunningServer) -> None:
    expected = _http(server, "/embed_all", {"inputs": TEXTS[1]})
    with _channel(server) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        unary = stub.EmbedAll(tei_pb2.EmbedAllRequest(inputs=TEXTS[1]))
        [streamed] = list(stub.EmbedAllStream(iter([tei_pb2.EmbedAllRequest(inputs=TEXTS[1])])))
    for response in (unary, streamed):
        got = np.asarray([token.embeddings for token in response.token_embeddings])
        np.testing.assert_allclose(got, np.asarray(expected)[0], atol=1e-5)


def test_tokenize_and_decode(server: RunningServer) -> None:
    http_tokens = _http(server, "/tokenize", {"inputs": TEXTS[1]})[0]
    ids = [t["id"] for t in http_tokens]
    with _channel(server) as channel:
        stub = tei_pb2_grpc.TokenizeStub(channel)
        unary = stub.Tokenize(tei_pb2.EncodeRequest(inputs=TEXTS[1], add_special_tokens=True))
        [streamed] = list(stub.TokenizeStream(iter([tei_pb2.EncodeRequest(inputs=TEXTS[1], add_special_tokens=True)])))
        plain = stub.Tokenize(tei_pb2.EncodeRequest(inputs=TEXTS[1]))  # proto3 default: no special tokens
        decoded = stub.Decode(tei_pb2.DecodeRequest(ids=ids, skip_special_tokens=True))
        [decoded_stream] = list(stub.DecodeStream(iter([tei_pb2.DecodeRequest(ids=ids)])))
    for response in (unary, streamed):
        assert [
            {"id": t.id, "text": t.text, "special": t.special,
             "start": t.start if t.HasField("start") else None, "stop": t.stop if t.HasField("stop") else None}
            for t in response.tokens
        ] == http_tokens
    assert not any(t.special for t in plain.tokens)
    assert decoded.text == _http(server, "/decode", {"ids": ids})[0]
    assert decoded_stream.text == _http(server, "/decode", {"ids": ids, "skip_special_tokens": False})[0]


def test_errors_map_to_tei_status_codes(server: RunningServer) -> None:
    with _channel(server) as channel:
        embed = tei_pb2_grpc.EmbedStub(channel)
        cases = [
            (lambda: embed.Embed(tei_pb2.EmbedRequest(inputs="")), grpc.StatusCode.INVALID_ARGUMENT,
             "Input validation error: `inputs` cannot be empty"),
            # truncate defaults to false over gRPC: too long is an error, not a cut.
            (lambda: embed.Embed(tei_pb2.EmbedRequest(inputs=LONG_TEXT)), grpc.StatusCode.INVALID_ARGUMENT,
             "Input validation error: `inputs` must have less than 256 tokens"),
            (lambda: embed.Embed(tei_pb2.EmbedRequest(inputs="x", dimensions=0)), grpc.StatusCode.INVALID_ARGUMENT,
             "`dimensions` should be positive"),
            (lambda: embed.EmbedSparse(tei_pb2.EmbedSparseRequest(inputs="x")), grpc.StatusCode.FAILED_PRECONDITION,
             "Model is not an embedding model with SPLADE pooling"),
            (lambda: tei_pb2_grpc.PredictStub(channel).Predict(tei_pb2.PredictRequest(inputs="x")),
             grpc.StatusCode.FAILED_PRECONDITION, "Model is not a classifier model"),
            (lambda: tei_pb2_grpc.RerankStub(channel).Rerank(tei_pb2.RerankRequest(query="q", texts=["a"])),
             grpc.StatusCode.FAILED_PRECONDITION, "model is not a re-ranker model"),
            (lambda: list(embed.EmbedStream(iter([tei_pb2.EmbedRequest(inputs="ok"), tei_pb2.EmbedRequest()]))),
             grpc.StatusCode.INVALID_ARGUMENT, "`inputs` cannot be empty"),
        ]
        for call, code, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == code, message
            assert message in info.value.details()
        assert len(embed.Embed(tei_pb2.EmbedRequest(inputs=LONG_TEXT, truncate=True)).embeddings) == 384


def test_health_per_service_and_reflection(server: RunningServer) -> None:
    with _channel(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {
            name: health.Check(health_pb2.HealthCheckRequest(service=name)).status
            for name in ("", "tei.v1.Info", "tei.v1.Tokenize", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank")
        }
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert statuses == {"": serving, "tei.v1.Info": serving, "tei.v1.Tokenize": serving, "tei.v1.Embed": serving,
                        "tei.v1.Predict": not_serving, "tei.v1.Rerank": not_serving}
    listed = {service.name for service in answer.list_services_response.service}
    assert {"tei.v1.Info", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank", "tei.v1.Tokenize",
            "grpc.health.v1.Health"} <= listed


# ------------------------------------------------------------------ reranker and SPLADE models


@pytest.fixture(scope="module")
def reranker(reranker_server: RunningServer) -> RunningServer:
    return reranker_server  # the session's (conftest): default flags


@pytest.fixture(scope="module")
def splade(splade_server: RunningServer) -> RunningServer:
    return splade_server  # the session's (conftest): --pooling splade


def test_rerank_unary_and_stream(reranker: RunningServer) -> None:
    expected = _http(reranker, "/rerank", {"query": QUERY, "texts": TEXTS, "return_text": True})
    with _channel(reranker) as channel:
        stub = tei_pb2_grpc.RerankStub(channel)
        unary = stub.Rerank(tei_pb2.RerankRequest(query=QUERY, texts=TEXTS, return_text=True))
        streamed = stub.RerankStream(iter(
            [tei_pb2.RerankStreamRequest(query=QUERY, text=t, return_text=(i == 0)) for i, t in enumerate(TEXTS)]
        ))
    for response in (unary, streamed):
        got = [{"index": r.index, "score": pytest.approx(r.score, abs=1e-5), "text": r.text} for r in response.ranks]
        assert got == expected
        assert response.metadata.compute_tokens > 0


def test_predict_rpcs(reranker: RunningServer) -> None:
    single = _http(reranker, "/predict", {"inputs": TEXTS[0]})
    pair = _http(reranker, "/predict", {"inputs": [QUERY, TEXTS[0]], "raw_scores": True})
    with _channel(reranker) as channel:
        stub = tei_pb2_grpc.PredictStub(channel)
        got_single = stub.Predict(tei_pb2.PredictRequest(inputs=TEXTS[0]))
        got_pair = stub.PredictPair(tei_pb2.PredictPairRequest(inputs=[QUERY, TEXTS[0]], raw_scores=True))
        [stream_single] = list(stub.PredictStream(iter([tei_pb2.PredictRequest(inputs=TEXTS[0])])))
        [stream_pair] = list(stub.PredictPairStream(iter(
            [tei_pb2.PredictPairRequest(inputs=[QUERY, TEXTS[0]], raw_scores=True)])))
        for bad in ([], ["a", "b", "c"]):
            with pytest.raises(grpc.RpcError) as info:
                stub.PredictPair(tei_pb2.PredictPairRequest(inputs=bad))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for got, expected in ((got_single, single), (stream_single, single), (got_pair, pair), (stream_pair, pair)):
        assert [{"score": pytest.approx(p.score, abs=1e-5), "label": p.label} for p in got.predictions] == expected
    with _channel(reranker) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="tei.v1.Rerank"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_embed_sparse_unary_and_stream(splade: RunningServer) -> None:
    expected = _http(splade, "/embed_sparse", {"inputs": TEXTS[0]})[0]
    with _channel(splade) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        unary = stub.EmbedSparse(tei_pb2.EmbedSparseRequest(inputs=TEXTS[0]))
        [streamed] = list(stub.EmbedSparseStream(iter([tei_pb2.EmbedSparseRequest(inputs=TEXTS[0])])))
    for response in (unary, streamed):
        got = [{"index": v.index, "value": pytest.approx(v.value, abs=1e-5)} for v in response.sparse_embeddings]
        assert got == expected


# ------------------------------------------------------------------ auth and cancelled streams

KEY = "grpc-secret"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ("--api-key", KEY, "--max-batch-requests", "1", "--max-client-batch-size", "64")
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("grpc-guarded")) as running:
        yield running


def test_auth(guarded: RunningServer) -> None:
    request = tei_pb2.EmbedRequest(inputs="key please")
    with _channel(guarded) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as info:
                stub.Embed(request, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert info.value.details() == "No valid auth token"
            with pytest.raises(grpc.RpcError) as info:
                list(stub.EmbedStream(iter([request]), metadata=metadata))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len(stub.Embed(request, metadata=(("authorization", f"Bearer {KEY}"),)).embeddings) == 384
        # Health and reflection stay open.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_cancelled_stream_items_never_reach_the_backend(guarded: RunningServer) -> None:
    server = guarded
    auth = {"Authorization": f"Bearer {KEY}"}
    sequences_before = server.backend_counters().sequences_run
    enqueued_before = server.metric("te_request_input_length_count")
    dropped_before = server.metric('te_request_failure{err="dropped"}')

    blocker_statuses: list[int] = []

    def block() -> None:
        response = httpx.post(f"{server.url}/embed", json={"inputs": [LONG_TEXT] * 60}, headers=auth, timeout=300)
        blocker_statuses.append(response.status_code)

    blocker = threading.Thread(target=block)
    blocker.start()
    wait_for(lambda: server.metric("te_request_input_length_count") >= enqueued_before + 60, 60, "the backlog")

    channel = _channel(server)
    stub = tei_pb2_grpc.EmbedStub(channel)
    requests = [tei_pb2.EmbedRequest(inputs=f"stream item {i}", truncate=True) for i in range(25)]
    stream = stub.EmbedStream(iter(requests), metadata=(("authorization", f"Bearer {KEY}"), *BULK.items()))
    wait_for(lambda: server.metric("te_request_input_length_count") >= enqueued_before + 85, 30, "stream queued")
    assert server.metric("te_queue_size") > 25, "the stream items must still wait behind the backlog"
    stream.cancel()
    channel.close()

    blocker.join(timeout=300)
    assert blocker_statuses == [200]
    wait_for(lambda: server.metric('te_request_failure{err="dropped"}') >= dropped_before + 25, 30, "drops")
    assert server.backend_counters().sequences_run - sequences_before == 60
    assert server.metric("te_queue_size") == 0
