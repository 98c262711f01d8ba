"""/embed and /v1/embeddings against a real server, compared with sentence-transformers."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.conftest import RunningServer
from tests.texts import varied_texts

TEXTS = varied_texts(50)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def reference(sentence_transformer) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(sentence_transformer.encode(TEXTS, batch_size=8, convert_to_numpy=True))


def _post(server: RunningServer, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120, **kwargs)  # type: ignore[arg-type]


def test_embed_matches_sentence_transformers(server: RunningServer, reference: np.ndarray) -> None:
    vectors = []
    for start in range(0, len(TEXTS), 8):
        response = _post(server, "/embed", {"inputs": TEXTS[start : start + 8]})
        assert response.status_code == 200, response.text
        vectors.extend(response.json())
    got = np.asarray(vectors, dtype=np.float32)
    assert got.shape == (50, 384)
    cos = _cosine(got, reference)
    assert cos.min() >= 0.9999, cos.min()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_openai_embeddings_match_sentence_transformers(server: RunningServer, reference: np.ndarray) -> None:
    for start in range(0, len(TEXTS), 10):
        chunk = TEXTS[start : start + 10]
        response = _post(server, "/v1/embeddings", {"input": chunk, "model": "anything"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list"
        assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert [d["index"] for d in body["data"]] == list(range(len(chunk)))
        got = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
        assert _cosine(got, reference[start : start + 10]).min() >= 0.9999


def test_openai_base64_is_little_endian_float32(server: RunningServer) -> None:
    floats = _post(server, "/v1/embeddings", {"input": "hello there"}).json()["data"][0]["embedding"]
    encoded = _post(server, "/v1/embeddings", {"input": "hello there", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, np.asarray(floats, dtype=np.float32), rtol=0, atol=1e-7)


def test_openai_usage_counts_real_tokens(server: RunningServer, model_dir) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()  # the shipped tokenizer.json pads to 128
    inputs = ["a short one", "a somewhat longer sentence with more tokens in it"]
    expected = sum(len(tokenizer.encode(text).ids) for text in inputs)
    body = _post(server, "/v1/embeddings", {"input": inputs}).json()
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


def test_text_alone_equals_text_in_mixed_batch(server: RunningServer) -> None:
    target = TEXTS[10]
    alone = np.asarray(_post(server, "/embed", {"inputs": target}).json()[0])
    batch = [TEXTS[4], TEXTS[0], target, TEXTS[1], TEXTS[30]]  # long and short neighbours
    mixed = np.asarray(_post(server, "/embed", {"inputs": batch}).json()[2])
    np.testing.assert_allclose(mixed, alone, atol=1e-5)
    assert _cosine(mixed, alone) >= 0.99999


def test_single_string_returns_list_of_one_vector(server: RunningServer) -> None:
    response = _post(server, "/embed", {"inputs": "one"})
    assert response.status_code == 200
    assert len(response.json()) == 1 and len(response.json()[0]) == 384
    for header in ("x-compute-tokens", "x-compute-characters", "x-total-time", "x-inference-time", "x-queue-time"):
        assert header in response.headers
    assert response.headers["x-compute-tokens"] == "3"  # [CLS] one [SEP]


def test_token_id_inputs_are_embedded_like_text(server: RunningServer) -> None:
    text_vector = _post(server, "/embed", {"inputs": "hello world"}).json()[0]
    ids_vector = _post(server, "/embed", {"inputs": [101, 7592, 2088, 102]}).json()[0]
    np.testing.assert_allclose(ids_vector, text_vector, atol=1e-5)
    batch = _post(server, "/embed", {"inputs": [[101, 7592, 2088, 102], "hello world"]}).json()
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-5)


def test_dimensions_cut_then_normalize(server: RunningServer) -> None:
    full = np.asarray(_post(server, "/embed", {"inputs": "matryoshka", "normalize": False}).json()[0])
    cut = np.asarray(_post(server, "/embed", {"inputs": "matryoshka", "dimensions": 128}).json()[0])
    assert cut.shape == (128,)
    np.testing.assert_allclose(cut, full[:128] / np.linalg.norm(full[:128]), atol=1e-6)
    openai = _post(server, "/v1/embeddings", {"input": "matryoshka", "dimensions": 64}).json()
    assert len(openai["data"][0]["embedding"]) == 64


def test_truncation_keeps_the_chosen_end(server: RunningServer) -> None:
    long_text = " ".join(["alpha"] * 400 + ["omega"] * 400)
    right = _post(server, "/embed", {"inputs": long_text, "truncate": True})
    left = _post(server, "/embed", {"inputs": long_text, "truncate": True, "truncation_direction": "Left"})
    assert right.status_code == left.status_code == 200
    assert right.headers["x-compute-tokens"] == "256"
    alpha = _post(server, "/embed", {"inputs": " ".join(["alpha"] * 300)}).json()[0]
    omega = _post(server, "/embed", {"inputs": " ".join(["omega"] * 300)}).json()[0]
    assert _cosine(np.asarray(right.json()[0]), np.asarray(alpha)) > 0.99
    assert _cosine(np.asarray(left.json()[0]), np.asarray(omega)) > 0.99


def test_health_info_metrics(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/ping").status_code == 200
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256
    assert info["max_batch_tokens"] == 16384
    assert info["max_client_batch_size"] == 32
    assert info["auto_truncate"] is True
    assert info["model_dtype"] == "float32"
    _post(server, "/embed", {"inputs": ["x", "y"]})
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("te_request_count{method=\"batch\"}", "te_embed_success", "te_batch_next_size_bucket",
                 "te_request_duration_bucket", "te_queue_size"):
        assert name in metrics, name
    assert "_total" not in metrics


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"inputs": ""}, 400, "Empty"),
        ({"inputs": []}, 400, "Empty"),
        ({"inputs": ["ok", ""]}, 400, "Empty"),
        ({"inputs": ["x"] * 33}, 422, "Validation"),
        ({"inputs": "word " * 600, "truncate": False}, 422, "Validation"),
        ({"inputs": "x", "dimensions": 0}, 422, "Validation"),
        ({"inputs": "x", "dimensions": 385}, 422, "Validation"),
        ({"inputs": "x", "prompt_name": "nope"}, 422, "Validation"),
        ({"inputs": [1.5, "x"]}, 422, "Validation"),
        ({"inputs": [999999999]}, 422, "Validation"),
        ({"nothing": "here"}, 422, "Validation"),
        ({"inputs": "x", "truncation_direction": "up"}, 422, "Validation"),
    ],
)
def test_embed_errors(server: RunningServer, body: object, status: int, error_type: str) -> None:
    response = _post(server, "/embed", body)
    assert response.status_code == status, response.text
    assert response.json()["error_type"] == error_type
    assert response.json()["error"]


def test_error_messages_follow_tei(server: RunningServer) -> None:
    too_many = _post(server, "/embed", {"inputs": ["x"] * 33}).json()
    assert too_many["error"] == "batch size 33 > maximum allowed batch size 32"
    too_long = _post(server, "/embed", {"inputs": "word " * 600, "truncate": False}).json()
    assert too_long["error"] == "Input validation error: `inputs` must have less than 256 tokens. Given: 602"
    empty = _post(server, "/embed", {"inputs": ""}).json()
    assert empty["error"] == "Input validation error: `inputs` cannot be empty"


def test_malformed_json_and_content_type(server: RunningServer) -> None:
    bad = httpx.post(f"{server.url}/embed", content=b'{"inputs": ', headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert bad.json()["error_type"] == "Validation"
    plain = httpx.post(f"{server.url}/embed", content=b'{"inputs": "x"}', headers={"content-type": "text/plain"})
    assert plain.status_code == 415


def test_payload_limit(server: RunningServer) -> None:
    response = _post(server, "/embed", {"inputs": "a" * 2_100_000})
    assert response.status_code == 413
    assert response.json()["error_type"] == "Validation"


def test_openai_errors_use_openai_shape(server: RunningServer) -> None:
    response = _post(server, "/v1/embeddings", {"input": ["x"] * 40})
    assert response.status_code == 422
    assert response.json() == {
        "message": "batch size 40 > maximum allowed batch size 32",
        "code": 422,
        "type": "Validation",
    }
    assert _post(server, "/v1/embeddings", {"input": ""}).json()["type"] == "Empty"


def test_server_still_healthy_after_errors(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert _post(server, "/embed", {"inputs": "still fine"}).status_code == 200
