"""sentence-transformers pipelines with Dense modules, served end to end by every
engine and compared with sentence-transformers' own `encode`; modules we cannot
apply refuse the start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.backends.parity import cosine, embed_over_http, st_encode
from tests.conftest import ROOT, short_socket_prefix, start_server
from embedserve.launcher import build_parser
from tests.models import (
    DEFAULT_DENSE,
    add_dense_modules,
    build_remote_code_model,
    build_st_dense_model,
    build_st_multi_dense_model,
    with_dense_module,
)

TEXTS = [
    "Dense layers project the pooled sentence embedding",
    "short",
    "Zürich 東京 café, naïve résumé",
    " ".join(["a longer passage keeps padding and chunking honest"] * 12),
]
DENSE_WIDTH = DEFAULT_DENSE[-1][0]


@pytest.fixture(scope="module")
def st_dense_model(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_st_dense_model(tmp_path_factory.mktemp("dense") / "st-dense", model_dir)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_dense_pipeline_matches_sentence_transformers(backend: str, st_dense_model: Path, tmp_path: Path) -> None:
    # Saved by sentence-transformers 5.x: Pooling in the `pooling_mode: "mean"` format,
    # Dense(Tanh) then Dense(Identity, no bias), then Normalize.
    expected = st_encode(st_dense_model, TEXTS)
    assert expected.shape == (len(TEXTS), DENSE_WIDTH)
    with start_server("--model-id", str(st_dense_model), "--backend", backend, tmp_dir=tmp_path) as server:
        assert httpx.get(f"{server.url}/info").json()["backend"] == backend
        got = embed_over_http(server.url, TEXTS)
        raw = embed_over_http(server.url, TEXTS, normalize=False)
        openai = httpx.post(f"{server.url}/v1/embeddings", json={"input": TEXTS[:2]}, timeout=60).json()
        too_wide = httpx.post(f"{server.url}/v1/embeddings", json={"input": "x", "dimensions": DENSE_WIDTH + 1})
        matryoshka = embed_over_http(server.url, TEXTS[:1], dimensions=8)
        per_token = httpx.post(f"{server.url}/embed_all", json={"inputs": TEXTS[1]}, timeout=60).json()
    assert got.shape == (len(TEXTS), DENSE_WIDTH)
    assert cosine(got, expected).min() >= 0.9999
    assert cosine(raw, expected).min() >= 0.9999 and not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert [len(item["embedding"]) for item in openai["data"]] == [DENSE_WIDTH] * 2
    assert too_wide.status_code == 422, too_wide.text
    assert matryoshka.shape == (1, 8)
    # Per-token vectors are the transformer's, as in TEI: Dense applies to pooled rows only.
    assert {len(row) for row in per_token[0]} == {32}


def test_dense_on_remote_code_matches_sentence_transformers(tmp_path: Path, model_dir: Path) -> None:
    # Remote code (auto_map) runs in the python engine; the Dense modules after it
    # still apply. Classic `pooling_mode_mean_tokens` Pooling config; ReLU then Sigmoid.
    dense = [(12, "ReLU", True), (10, "Sigmoid", True)]
    remote = add_dense_modules(build_remote_code_model(tmp_path / "remote-dense", model_dir), dense)
    expected = st_encode(remote, TEXTS, trust_remote_code=True)
    with start_server("--model-id", str(remote), "--backend", "python", "--trust-remote-code",
                      tmp_dir=tmp_path) as server:
        assert httpx.get(f"{server.url}/info").json()["backend"] == "python"
        got = embed_over_http(server.url, TEXTS, normalize=False)
    assert got.shape == expected.shape == (len(TEXTS), 10)
    assert cosine(got, expected).min() >= 0.9999
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedserve.launcher", "--port", "0", "--grpc-port", "0", "--prometheus-port", "0",
         "--uds-path", short_socket_prefix(),
         *args],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )


def test_unsupported_module_refuses_to_start_in_one_line(st_dense_model: Path, tmp_path: Path) -> None:
    odd = shutil.copytree(st_dense_model, tmp_path / "lstm")
    modules = json.loads((odd / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "lstm", "path": "2_LSTM", "type": "sentence_transformers.models.LSTM"})
    (odd / "modules.json").write_text(json.dumps(modules))
    result = _launch("--model-id", str(odd))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert "sentence_transformers.models.LSTM" in errors[0] and "is not supported" in errors[0]
    assert "backend-0" not in result.stderr  # refused before any child started


# ---------------------------------------------------------------- --dense-path


@pytest.fixture(scope="module")
def stella_like(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    # modules.json applies 2_Dense_64; 2_Dense_32 lies beside it, as stella's 2_Dense_<dims> do.
    return build_st_multi_dense_model(tmp_path_factory.mktemp("stella") / "stella-like", model_dir, (64, 32))


def test_dense_path_picks_the_dense_module(stella_like: Path, tmp_path: Path) -> None:
    picked = st_encode(with_dense_module(stella_like, tmp_path / "st-32", "2_Dense_32"), TEXTS)
    with start_server("--model-id", str(stella_like), "--backend", "torch", "--dense-path", "2_Dense_32",
                      tmp_dir=tmp_path) as server:
        got = embed_over_http(server.url, TEXTS)
        raw = embed_over_http(server.url, TEXTS, normalize=False)
    assert "--dense-path 2_Dense_32 is used instead" in server.log()
    assert got.shape == raw.shape == (len(TEXTS), 32)
    assert cosine(got, picked).min() >= 0.9999
    assert cosine(raw, picked).min() >= 0.9999


def test_without_dense_path_modules_json_decides(stella_like: Path, tmp_path: Path) -> None:
    default = st_encode(stella_like, TEXTS)
    assert default.shape == (len(TEXTS), 64)
    with start_server("--model-id", str(stella_like), "--backend", "torch", tmp_dir=tmp_path) as server:
        got = embed_over_http(server.url, TEXTS)
    assert got.shape == (len(TEXTS), 64)
    assert cosine(got, default).min() >= 0.9999


def test_dense_path_has_its_env_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args([]).dense_path is None
    monkeypatch.setenv("DENSE_PATH", "2_Dense_1024")
    assert build_parser().parse_args([]).dense_path == "2_Dense_1024"
    assert build_parser().parse_args(["--dense-path", "2_Dense"]).dense_path == "2_Dense"


def test_a_missing_dense_path_refuses_to_start_in_one_line(stella_like: Path) -> None:
    result = _launch("--hostname", "127.0.0.1", "--model-id", str(stella_like), "--dense-path", "2_Dense_1024")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith("--dense-path 2_Dense_1024: no such folder in the model directory "
                              "(Dense folders there: 2_Dense_32, 2_Dense_64)")
    assert "backend-0" not in result.stderr  # refused before any child started
