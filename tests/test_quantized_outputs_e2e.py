"""Quantized outputs (issue 15) on a real server: each equals sentence-transformers'
quantize_embeddings applied to the same server's float answer for the same request."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from tests.conftest import RunningServer

TEXTS = ["a cat sat on the mat", "quantized embeddings", "the quick brown fox", "ok"]
PRECISIONS = ["int8", "uint8", "binary", "ubinary"]


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def _floats(server: RunningServer, body: dict[str, object]) -> np.ndarray:
    response = _post(server, "/embed", body)
    assert response.status_code == 200, response.text
    return np.asarray(response.json(), dtype=np.float32)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_embed_precision_equals_sentence_transformers(server: RunningServer, precision: str) -> None:
    body: dict[str, object] = {"inputs": TEXTS, "dimensions": 100}  # 100: not a multiple of 8
    expected = quantize_embeddings(_floats(server, body), precision)  # type: ignore[arg-type]
    response = _post(server, "/embed", {**body, "precision": precision})
    assert response.status_code == 200, response.text
    got = np.asarray(response.json())
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_openai_encoding_format_equals_sentence_transformers(server: RunningServer, precision: str) -> None:
    expected = quantize_embeddings(_floats(server, {"inputs": TEXTS}), precision)  # type: ignore[arg-type]
    listed = _post(server, "/v1/embeddings", {"input": TEXTS, "encoding_format": precision})
    assert listed.status_code == 200, listed.text
    np.testing.assert_array_equal(np.asarray([d["embedding"] for d in listed.json()["data"]]), expected)
    packed = _post(server, "/v1/embeddings", {"input": TEXTS, "encoding_format": "base64", "precision": precision})
    assert packed.status_code == 200, packed.text
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype=expected.dtype) for d in packed.json()["data"]]
    np.testing.assert_array_equal(np.stack(rows), expected)


def test_given_ranges_are_used(server: RunningServer) -> None:
    floats = _floats(server, {"inputs": TEXTS[:1], "normalize": False})
    ranges = [[-0.3] * floats.shape[1], [0.3] * floats.shape[1]]
    expected = quantize_embeddings(floats, "uint8", ranges=np.asarray(ranges, np.float32))
    response = _post(server, "/embed", {"inputs": TEXTS[0], "normalize": False, "precision": "uint8",
                                        "ranges": ranges})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(np.asarray(response.json()), expected)
    assert len(set(expected[0].tolist())) > 10  # not the degenerate single-input range


def test_single_input_without_ranges_is_degenerate(server: RunningServer) -> None:
    response = _post(server, "/embed", {"inputs": "alone", "precision": "int8"})
    assert response.status_code == 200
    assert set(response.json()[0]) == {-128}


def test_float_answers_are_unchanged_by_the_new_fields(server: RunningServer) -> None:
    plain = _post(server, "/v1/embeddings", {"input": TEXTS, "encoding_format": "base64"}).content
    explicit = _post(server, "/v1/embeddings", {"input": TEXTS, "encoding_format": "base64", "precision": "float32"})
    assert explicit.content == plain


@pytest.mark.parametrize("body", [{"precision": "int4"}, {"precision": "int8", "ranges": [[0.0]]},
                                  {"precision": "binary", "ranges": [[0.0], [1.0]]},
                                  {"precision": "uint8", "ranges": [[0.0], [1.0]]}])
def test_embed_refuses_bad_quantization_fields(server: RunningServer, body: dict[str, object]) -> None:
    response = _post(server, "/embed", {"inputs": "x", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "Validation"


@pytest.mark.parametrize("body", [{"encoding_format": "int4"}, {"encoding_format": "int8", "precision": "binary"}])
def test_openai_refuses_bad_formats_in_its_shape(server: RunningServer, body: dict[str, object]) -> None:
    response = _post(server, "/v1/embeddings", {"input": "x", **body})
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == 422 and error["type"] == "Validation" and error["message"]
