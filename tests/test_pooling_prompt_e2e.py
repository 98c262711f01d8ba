"""A Pooling module with `include_prompt: false` leaves the prompt's tokens out of
mean pooling, as sentence-transformers does, on every path that pools."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends.parity import cosine, embed_over_http, st_encode
from tests.conftest import start_server
from tests.models import build_st_prompt_model

TEXTS = [
    "what pools the prompt",
    "short",
    " ".join(["a longer passage keeps padding and chunking honest"] * 8),
]


@pytest.fixture(scope="module")
def prompt_models(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[bool, Path]:
    root = tmp_path_factory.mktemp("prompt-pooling")
    return {include: build_st_prompt_model(root / f"include-{include}", model_dir, include) for include in (True, False)}


@pytest.mark.parametrize(
    ("backend", "attention"), [("torch", "padded"), ("torch", "varlen"), ("onnx", None)],
    ids=["torch-padded", "torch-unpadded", "onnx"],
)
def test_prompt_left_out_of_mean_pooling_matches_sentence_transformers(
    backend: str, attention: str | None, prompt_models: dict[bool, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = prompt_models[False]
    expected = st_encode(model, TEXTS, "query")
    expected_plain = st_encode(model, TEXTS, None)
    # The check has teeth: pooling the prompt too gives other vectors.
    assert cosine(st_encode(prompt_models[True], TEXTS, "query"), expected).min() < 0.999
    if attention is not None:
        monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", attention)
    with start_server("--model-id", str(model), "--backend", backend, tmp_dir=tmp_path) as server:
        got = embed_over_http(server.url, TEXTS, prompt_name="query")
        plain = embed_over_http(server.url, TEXTS)
        log = server.log()
    assert "include_prompt" not in log  # no warning: it is applied
    if attention == "varlen":
        assert "attention: varlen" in log
    assert cosine(got, expected).min() >= 0.9999
    assert cosine(plain, expected_plain).min() >= 0.9999
