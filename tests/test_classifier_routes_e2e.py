"""/predict, /rerank and /v1/rerank on tiny real classifier and reranker models, against transformers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import RunningServer, start_server
from tests.models import CLASSIFIER_LABELS, build_tiny_model, classifier_logits

QUERY = "what is the capital of france"
TEXTS = ["Paris is the capital of France.", "Berlin is in Germany.", "bananas are yellow", "the eiffel tower"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_tiny_model("classifier", tmp_path_factory.mktemp("models") / "classifier", model_dir, seed=1)


@pytest.fixture(scope="module")
def reranker(reranker_server: RunningServer) -> RunningServer:
    return reranker_server  # the session's server on `reranker_dir` (conftest)


@pytest.fixture(scope="module")
def classifier(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server("--model-id", str(classifier_dir), tmp_dir=tmp_path_factory.mktemp("cls")) as running:
        yield running


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_rerank_matches_transformers(reranker: RunningServer, reranker_dir: Path) -> None:
    response = _post(reranker, "/rerank", {"query": QUERY, "texts": TEXTS})
    assert response.status_code == 200, response.text
    assert "x-inference-time" in response.headers and "x-compute-tokens" in response.headers
    ranks = response.json()
    expected = {i: 1 / (1 + np.exp(-classifier_logits(reranker_dir, QUERY, t)[0])) for i, t in enumerate(TEXTS)}
    assert sorted(r["index"] for r in ranks) == list(range(len(TEXTS)))
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    for rank in ranks:
        assert set(rank) == {"index", "score"}
        assert rank["score"] == pytest.approx(expected[rank["index"]], abs=1e-4)


def test_rerank_raw_scores_and_text(reranker: RunningServer, reranker_dir: Path) -> None:
    ranks = _post(reranker, "/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True, "return_text": True}).json()
    for rank in ranks:
        assert rank["text"] == TEXTS[rank["index"]]
        assert rank["score"] == pytest.approx(classifier_logits(reranker_dir, QUERY, rank["text"])[0], abs=1e-4)


def test_rerank_errors(reranker: RunningServer) -> None:
    empty = _post(reranker, "/rerank", {"query": QUERY, "texts": []})
    assert (empty.status_code, empty.json()) == (400, {"error": "`texts` cannot be empty", "error_type": "Empty"})
    too_many = _post(reranker, "/rerank", {"query": QUERY, "texts": ["x"] * 33})
    assert too_many.status_code == 422 and too_many.json()["error_type"] == "Validation"
    wrong_route = _post(reranker, "/embed", {"inputs": "x"})
    assert wrong_route.status_code == 424
    assert wrong_route.json() == {"error": "Backend error: Model is not an embedding model", "error_type": "Backend"}


def test_reranker_predict_and_default_route(reranker: RunningServer, reranker_dir: Path) -> None:
    predictions = _post(reranker, "/predict", {"inputs": [QUERY, TEXTS[0]]}).json()
    expected = 1 / (1 + np.exp(-classifier_logits(reranker_dir, QUERY, TEXTS[0])[0]))
    assert predictions == [{"score": pytest.approx(expected, abs=1e-4), "label": "LABEL_0"}]
    default = _post(reranker, "/", {"query": QUERY, "texts": TEXTS[:2]})
    assert default.status_code == 200 and len(default.json()) == 2
    info = httpx.get(f"{reranker.url}/info").json()
    assert info["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()  # type: ignore[no-any-return]


def test_predict_single_pair_and_batch(classifier: RunningServer, classifier_dir: Path) -> None:
    single = _post(classifier, "/predict", {"inputs": "I love this"}).json()
    expected = _softmax(classifier_logits(classifier_dir, "I love this"))
    assert [p["label"] for p in single] == [CLASSIFIER_LABELS[i] for i in np.argsort(-expected)]
    for prediction in single:
        index = {v: k for k, v in CLASSIFIER_LABELS.items()}[prediction["label"]]
        assert prediction["score"] == pytest.approx(expected[index], abs=1e-4)

    pair = _post(classifier, "/predict", {"inputs": ["premise text", "hypothesis text"], "raw_scores": True}).json()
    raw = classifier_logits(classifier_dir, "premise text", "hypothesis text")
    assert sorted(p["score"] for p in pair) == pytest.approx(sorted(raw.tolist()), abs=1e-4)

    batch = _post(classifier, "/predict", {"inputs": [["I love this"], ["premise text", "hypothesis text"]]})
    assert batch.status_code == 200
    body = batch.json()
    assert len(body) == 2 and all(len(predictions) == 3 for predictions in body)
    assert body[0][0]["label"] == single[0]["label"]
    assert body[0][0]["score"] == pytest.approx(single[0]["score"], abs=1e-5)


def test_predict_errors(classifier: RunningServer) -> None:
    three = _post(classifier, "/predict", {"inputs": ["a", "b", "c"]})
    assert three.status_code == 422 and three.json()["error_type"] == "Validation"
    assert _post(classifier, "/predict", {"inputs": ""}).json()["error_type"] == "Empty"
    assert _post(classifier, "/predict", {"inputs": [["a"]] * 33}).status_code == 422
    rerank = _post(classifier, "/rerank", {"query": "q", "texts": ["a"]})
    assert rerank.status_code == 424
    assert rerank.json()["error"] == "Backend error: model is not a re-ranker model"
    assert _post(classifier, "/v1/embeddings", {"input": "x"}).json()["code"] == 424


def test_classifier_default_routes(classifier: RunningServer) -> None:
    for path in ("/", "/invocations"):
        response = _post(classifier, path, {"inputs": "route me"})
        assert response.status_code == 200 and len(response.json()) == 3
    vertex = _post(classifier, "/vertex", {"instances": [{"inputs": "one"}, {"query": "q", "texts": ["a"]}]})
    assert vertex.status_code == 424  # the rerank instance on a classifier
    vertex = _post(classifier, "/vertex", {"instances": [{"inputs": "one"}, {"inputs": ["a", "b"]}]})
    assert vertex.status_code == 200 and len(vertex.json()["predictions"]) == 2


def test_v1_rerank_shape_matches_rerank(reranker: RunningServer, reranker_dir: Path) -> None:
    """Jina's shape (TEI PR #797), sorted by score; the scores are /rerank's, sigmoid of the first logit."""
    response = _post(reranker, "/v1/rerank", {"model": "anything", "query": QUERY, "documents": TEXTS,
                                              "max_chunks_per_doc": 3})
    assert response.status_code == 200, response.text
    assert "x-compute-tokens" in response.headers
    body = response.json()
    assert set(body) == {"model", "results", "usage"}
    assert body["model"] == str(reranker_dir)  # the served model name, whatever the client asked for
    ranks = _post(reranker, "/rerank", {"query": QUERY, "texts": TEXTS}).json()
    assert [r["index"] for r in body["results"]] == [r["index"] for r in ranks]
    for result, rank in zip(body["results"], ranks):
        # Jina's default returns the documents.
        assert result == {"index": rank["index"], "relevance_score": pytest.approx(rank["score"], abs=1e-6),
                          "document": {"text": TEXTS[rank["index"]]}}
        expected = 1 / (1 + np.exp(-classifier_logits(reranker_dir, QUERY, TEXTS[rank["index"]])[0]))
        assert result["relevance_score"] == pytest.approx(expected, abs=1e-4)
    assert body["usage"]["total_tokens"] == int(response.headers["x-compute-tokens"]) > 0
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"]


def test_v1_rerank_top_n_objects_and_no_documents(reranker: RunningServer) -> None:
    full = _post(reranker, "/v1/rerank", {"query": QUERY, "documents": TEXTS}).json()["results"]
    objects = [{"text": t, "id": f"doc-{i}"} for i, t in enumerate(TEXTS)]  # Cohere's objects; extra keys ignored
    body = _post(reranker, "/v1/rerank", {"query": QUERY, "documents": objects, "top_n": 2,
                                          "return_documents": False}).json()
    assert body["results"] == [{"index": r["index"], "relevance_score": r["relevance_score"]} for r in full[:2]]
    mixed = _post(reranker, "/v1/rerank", {"query": QUERY, "documents": [TEXTS[0], {"text": TEXTS[1]}],
                                           "top_n": 10}).json()["results"]
    assert sorted(r["document"]["text"] for r in mixed) == sorted(TEXTS[:2])


def test_v1_rerank_errors(reranker: RunningServer, classifier: RunningServer) -> None:
    # OpenAI-like error bodies, as /v1/embeddings.
    empty = _post(reranker, "/v1/rerank", {"query": QUERY, "documents": []})
    assert (empty.status_code, empty.json()) == (400, {"message": "`documents` cannot be empty", "code": 400,
                                                       "type": "Empty"})
    too_many = _post(reranker, "/v1/rerank", {"query": QUERY, "documents": ["x"] * 33})
    assert too_many.status_code == 422
    assert too_many.json() == {"message": "batch size 33 > maximum allowed batch size 32", "code": 422,
                               "type": "Validation"}
    for bad in ({"query": QUERY, "documents": TEXTS, "top_n": 0}, {"query": QUERY},
                {"query": QUERY, "documents": [{"title": "no text"}]}, {"query": QUERY, "documents": [3]},
                {"query": QUERY, "documents": TEXTS, "return_documents": "yes"}):
        response = _post(reranker, "/v1/rerank", bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["type"] == "Validation" and response.json()["code"] == 422
    assert _post(reranker, "/v1/rerank", {"query": "", "documents": ["a"]}).json()["type"] == "Empty"
    instruction = _post(reranker, "/v1/rerank", {"query": QUERY, "documents": ["a"], "instruction": "judge"})
    assert instruction.status_code == 422 and "causal-LM rerankers" in instruction.json()["message"]
    not_reranker = _post(classifier, "/v1/rerank", {"query": QUERY, "documents": ["a"]})
    assert not_reranker.status_code == 424
    assert not_reranker.json() == {"message": "Backend error: model is not a re-ranker model", "code": 424,
                                   "type": "Backend"}
    document = httpx.get(f"{reranker.url}/api-doc/openapi.json").json()
    operation = document["paths"]["/v1/rerank"]["post"]
    assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "OpenAIErrorResponse")
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("V1RerankRequest")
