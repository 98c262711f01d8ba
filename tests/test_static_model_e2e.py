"""A model2vec model served by the static engine (issue 15), against model2vec's
StaticModel.encode on the same folder, through /embed, /v1/embeddings and /info."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from model2vec import StaticModel

from embedserve.launcher import LaunchError, choose_backend
from embedserve.router.model_config import ModelConfigError, load_model_spec
from tests.conftest import RunningServer, start_server
from tests.models import build_model2vec_model

MAX_LENGTH = 12
TEXTS = ["static embeddings need no transformer", "🦄 ☃ unknown symbols 🦄", "🦄☃", "   ",
         " ".join(f"token{i}" for i in range(50)), "y" * 300]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_model2vec_model(tmp_path_factory.mktemp("m2v") / "model", model_dir, dim=24, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def static_server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server("--model-id", str(folder), "--tokenization-workers", "1",
                      tmp_dir=tmp_path_factory.mktemp("static")) as running:
        yield running


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response


def test_embed_equals_model2vec(static_server: RunningServer, folder: Path) -> None:
    expected = StaticModel.from_pretrained(folder).encode(TEXTS)
    raw = np.asarray(_post(static_server, "/embed", {"inputs": TEXTS, "normalize": False}).json())
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-6)
    assert not raw[2].any() and not raw[3].any()  # only unknown tokens / no token: zeros, as model2vec
    normalized = np.asarray(_post(static_server, "/embed", {"inputs": TEXTS}).json())
    norms = np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(normalized, expected / np.where(norms == 0, 1, norms), rtol=1e-5, atol=1e-6)


def test_openai_route_equals_normalized_model2vec(static_server: RunningServer, folder: Path) -> None:
    expected = StaticModel.from_pretrained(folder, normalize=True).encode(TEXTS[:2])
    data = _post(static_server, "/v1/embeddings", {"input": TEXTS[:2]}).json()["data"]
    np.testing.assert_allclose(np.asarray([d["embedding"] for d in data]), expected, rtol=1e-5, atol=1e-6)


def test_info_reports_the_static_engine(static_server: RunningServer) -> None:
    info = httpx.get(f"{static_server.url}/info").json()
    assert info["backend"] == "static"
    assert info["max_input_length"] == MAX_LENGTH
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}


def test_tokenize_shows_no_special_tokens_added(static_server: RunningServer) -> None:
    # /tokenize keeps TEI's add_special_tokens (default true); /embed encodes without them.
    tokens = _post(static_server, "/tokenize", {"inputs": "hello", "add_special_tokens": False}).json()[0]
    assert [t["text"] for t in tokens] == ["hello"]


def test_the_static_engine_is_chosen_and_only_for_model2vec(folder: Path, model_dir: Path) -> None:
    spec = load_model_spec(folder)
    assert spec.static_embedding and spec.pooling == "mean" and spec.base_input_length == MAX_LENGTH
    assert choose_backend("auto", spec, ["0"]) == "static"
    with pytest.raises(LaunchError, match="no transformer for the onnx backend"):
        choose_backend("onnx", spec, [])
    with pytest.raises(LaunchError, match="serves model2vec models only"):
        choose_backend("static", load_model_spec(model_dir), [])
    with pytest.raises(ModelConfigError, match="--pooling cls does not apply"):
        load_model_spec(folder, "cls")
