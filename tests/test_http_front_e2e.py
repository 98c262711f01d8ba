"""The direct path for POSTs to the inference routes (router/routes/asgi.py) answers
as Starlette's stack did: the same CORS headers, the same 401, the same error
answers, header for header. Each check sets a direct-path answer beside one that
still goes through Starlette's CORSMiddleware and ApiKeyMiddleware on the same server."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import RunningServer, start_server

KEY = "k3y"
AUTH = {"Authorization": f"Bearer {KEY}"}
ALLOWED = "http://allowed.example"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ("--api-key", KEY, "--cors-allow-origin", ALLOWED)
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("front")) as running:
        yield running


def _head(response: httpx.Response, *, skip: tuple[bytes, ...] = (b"date",)) -> list[tuple[bytes, bytes]]:
    """The response's headers in the order sent, lower-case names, minus `skip`."""
    return [(name.lower(), value) for name, value in response.headers.raw if name.lower() not in skip]


def _cors(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in _head(response) if n.startswith(b"access-control-") or n == b"vary"]


@pytest.mark.parametrize("origin", [None, ALLOWED, "http://other.example"])
def test_cors_headers_match_starlettes(guarded: RunningServer, origin: str | None) -> None:
    headers = {**AUTH, **({"Origin": origin} if origin else {})}
    direct = httpx.post(f"{guarded.url}/embed", json={"inputs": "a"}, headers=headers)
    starlette = httpx.get(f"{guarded.url}/info", headers=headers)
    assert direct.status_code == starlette.status_code == 200
    assert _cors(direct) == _cors(starlette)
    expected = [(b"access-control-allow-origin", ALLOWED.encode())] if origin == ALLOWED else []
    assert _cors(direct) == [*expected, (b"vary", b"Origin")]


def test_a_success_lists_its_headers_in_starlettes_order(guarded: RunningServer) -> None:
    answer = httpx.post(f"{guarded.url}/embed", json={"inputs": "a"}, headers={**AUTH, "Origin": ALLOWED})
    names = [name for name, _ in _head(answer)]
    assert names == [
        b"x-compute-type", b"x-compute-time", b"x-compute-characters", b"x-compute-tokens", b"x-total-time",
        b"x-tokenization-time", b"x-queue-time", b"x-inference-time", b"content-length", b"content-type",
        b"access-control-allow-origin", b"vary", b"server",
    ]
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"bearer {KEY}"])
def test_a_missing_or_wrong_key_gets_the_same_401_as_starlettes_routes(
    guarded: RunningServer, authorization: str | None
) -> None:
    headers = {"Origin": ALLOWED, **({"Authorization": authorization} if authorization else {})}
    for path in ("/embed", "/v1/embeddings", "/rerank", "/invocations", "/"):
        direct = httpx.post(f"{guarded.url}{path}", json={"inputs": "a"}, headers=headers)
        # /tokenize stays behind Starlette's ApiKeyMiddleware.
        starlette = httpx.post(f"{guarded.url}/tokenize", json={"inputs": "a"}, headers=headers)
        assert direct.status_code == starlette.status_code == 401, path
        assert direct.content == starlette.content == b""
        assert _head(direct) == _head(starlette)


def test_the_last_authorization_header_is_the_one_checked(guarded: RunningServer) -> None:
    # As ApiKeyMiddleware reads it (a dict of the header list keeps the last value).
    def post(path: str, values: list[str]) -> int:
        headers = [("content-type", "application/json"), *(("authorization", value) for value in values)]
        return httpx.post(f"{guarded.url}{path}", content=b'{"inputs": "a"}', headers=headers).status_code

    for path in ("/embed", "/tokenize"):
        assert post(path, ["Bearer wrong", f"Bearer {KEY}"]) == 200, path
        assert post(path, [f"Bearer {KEY}", "Bearer wrong"]) == 401, path


def test_error_answers_match_starlettes(guarded: RunningServer) -> None:
    def pair(content: bytes, content_type: str) -> tuple[httpx.Response, httpx.Response]:
        headers = {**AUTH, "Origin": ALLOWED, "content-type": content_type}
        return tuple(  # type: ignore[return-value]
            httpx.post(f"{guarded.url}{path}", content=content, headers=headers) for path in ("/decode", "/tokenize")
        )

    for content, content_type, status in ((b"{", "application/json", 400), (b"{}", "text/plain", 415)):
        direct, starlette = pair(content, content_type)
        assert direct.status_code == starlette.status_code == status
        assert _head(direct) == _head(starlette)
    direct, starlette = pair(b"{}", "application/json")  # a required field missing (`ids`, `inputs`)
    assert direct.status_code == starlette.status_code == 422
    assert direct.json()["error_type"] == starlette.json()["error_type"] == "Validation"


def test_other_methods_and_preflights_still_go_to_starlette(guarded: RunningServer) -> None:
    assert httpx.get(f"{guarded.url}/embed", headers=AUTH).status_code == 405
    preflight = httpx.options(f"{guarded.url}/embed", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert httpx.get(f"{guarded.url}/", headers=AUTH).status_code == 200  # GET / is the health check


def test_any_origin_is_answered_with_a_star(server: RunningServer) -> None:
    direct = httpx.post(f"{server.url}/v1/embeddings", json={"input": "a"}, headers={"Origin": "http://x.example"})
    starlette = httpx.get(f"{server.url}/info", headers={"Origin": "http://x.example"})
    assert direct.status_code == 200
    assert _cors(direct) == _cors(starlette) == [(b"access-control-allow-origin", b"*"), (b"vary", b"Origin")]


def test_base64_rows_decode_to_the_float_vectors(server: RunningServer) -> None:
    body = {"input": ["a", "bb", "ccc"]}
    floats = httpx.post(f"{server.url}/v1/embeddings", json=body).json()["data"]
    packed = httpx.post(f"{server.url}/v1/embeddings", json={**body, "encoding_format": "base64"}).json()["data"]
    for as_floats, as_base64 in zip(floats, packed, strict=True):
        vector = np.frombuffer(base64.b64decode(as_base64["embedding"]), dtype="<f4")
        np.testing.assert_allclose(vector, as_floats["embedding"], rtol=0, atol=1e-7)
        assert as_base64["index"] == as_floats["index"]
