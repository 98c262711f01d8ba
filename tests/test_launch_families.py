"""What the launcher decides per model family: the engine `--backend auto` picks
(launcher.choose_backend) and the dtype the backends load (ModelSpec.weights_dtype)."""

from __future__ import annotations

from pathlib import Path

import json
import subprocess
import sys

import pytest

from embedserve.launcher import choose_backend
from embedserve.router.model_config import ModelConfigError, ModelSpec, load_model_spec
from tests.conftest import ROOT, short_socket_prefix
from tests.models import (
    build_bgem3_model, build_family_model, build_jina_bert_model, build_tiny_causal_reranker, build_tiny_model,
)


def _spec(model_type: str, remote_code: bool = False, jina_bert: bool = False) -> ModelSpec:
    return ModelSpec(model_dir=Path("/nonexistent"), model_type="embedding", pooling="mean", id2label={},
                     label2id={}, base_input_length=512, position_offset=0, config_model_type=model_type,
                     remote_code=remote_code, jina_bert=jina_bert)


@pytest.mark.parametrize("model_type", ["deberta-v2", "gemma3_text", "mistral", "llama", "bert", "qwen2"])
def test_exported_families_run_onnx_on_cpu_and_torch_on_gpu(model_type: str) -> None:
    assert choose_backend("auto", _spec(model_type), []) == "onnx"
    assert choose_backend("auto", _spec(model_type), ["0"]) == "torch"


def test_shipped_code_of_known_architectures_is_not_run_but_other_shipped_code_is() -> None:
    # gte-Qwen2 ships modeling_qwen.py (auto_map) for a type transformers has.
    assert choose_backend("auto", _spec("qwen2", remote_code=True), []) == "onnx"
    assert choose_backend("auto", _spec("qwen2", remote_code=True), ["0"]) == "torch"
    # NomicBERT's shipped code is never run either: the torch engine implements it.
    assert choose_backend("auto", _spec("nomic_bert", remote_code=True), []) == "torch"
    assert choose_backend("auto", _spec("nomic_bert", remote_code=True), ["0"]) == "torch"
    # JinaBERT ("bert" with ALiBi) too; but other code shipped for "bert" is not BERT: it runs.
    assert choose_backend("auto", _spec("bert", remote_code=True, jina_bert=True), []) == "torch"
    assert choose_backend("auto", _spec("bert", remote_code=True), []) == "python"


def test_jina_bert_is_told_from_bert_by_its_alibi_positions(model_dir: Path, tmp_path: Path) -> None:
    jina = load_model_spec(build_jina_bert_model(tmp_path / "jina", model_dir))
    assert (jina.config_model_type, jina.family, jina.remote_code) == ("bert", "jina_bert", True)
    assert load_model_spec(model_dir).family == "bert"
    # The query/key post-norm variant (jina-embeddings-v2-base-code) keeps its own code.
    config = json.loads((jina.model_dir / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "jinaai/jina-bert-v2-qk-post-norm--modeling_bert.JinaBertModel"
    (jina.model_dir / "config.json").write_text(json.dumps(config))
    assert load_model_spec(jina.model_dir).family == "bert"


def test_bge_m3_is_detected_by_its_head_files_and_runs_torch(tmp_path: Path, model_dir: Path) -> None:
    m3 = load_model_spec(build_bgem3_model(tmp_path / "m3", model_dir))
    assert m3.bge_m3 and not load_model_spec(model_dir).bge_m3
    assert choose_backend("auto", m3, []) == "torch"  # xlm-roberta alone would export to onnx on CPU
    (m3.model_dir / "sparse_linear.pt").unlink()
    assert not load_model_spec(m3.model_dir).bge_m3  # both heads, or it is not bge-m3


def test_an_explicit_backend_wins() -> None:
    assert choose_backend("torch", _spec("deberta-v2"), []) == "torch"


def test_gemma3_loads_float32_unless_told_and_never_float16() -> None:
    gemma = _spec("gemma3_text")
    assert gemma.weights_dtype(None) == "float32"  # on a GPU too, where others get float16
    assert gemma.weights_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ModelConfigError, match="overflow float16"):
        gemma.weights_dtype("float16")
    assert _spec("bert").weights_dtype(None) == ""  # the engine's default for its device
    assert _spec("bert").weights_dtype("float16") == "float16"


def test_gemma3_in_float16_is_refused_in_one_line(tmp_path: Path, model_dir: Path) -> None:
    gemma_dir = build_family_model("gemma3", tmp_path / "gemma3", model_dir)
    errors, stderr = _refused_start("--model-id", str(gemma_dir), "--dtype", "float16")
    assert len(errors) == 1 and "gemma3_text models overflow float16" in errors[0], stderr


def test_onnx_never_exports_shipped_code_as_transformers_class(tmp_path: Path, model_dir: Path) -> None:
    # JinaBERT says "bert": exported as transformers' BERT it would lose ALiBi and its gated MLP.
    jina_dir = build_jina_bert_model(tmp_path / "jina", model_dir)
    errors, stderr = _refused_start("--model-id", str(jina_dir), "--backend", "onnx")
    assert len(errors) == 1 and "cannot export model" in errors[0] and "--backend torch" in errors[0], stderr


def test_causal_rerankers_need_the_template_flag_a_causal_lm_and_torch(tmp_path: Path, model_dir: Path) -> None:
    causal = build_tiny_causal_reranker(tmp_path / "qwen3-reranker", ["a document"])
    # Never guessed: without the flag it is a causal LM with no pooling, and the error says what to add.
    with pytest.raises(ModelConfigError, match="--reranker-template"):
        load_model_spec(causal)
    spec = load_model_spec(causal, reranker_template="qwen3")
    assert (spec.model_type, spec.id2label, spec.reranker_template) == ("reranker", {"0": "yes"}, "qwen3")
    assert choose_backend("auto", spec, []) == "torch"
    with pytest.raises(ModelConfigError, match="needs a ...ForCausalLM checkpoint"):
        load_model_spec(build_tiny_model("reranker", tmp_path / "bert-reranker", model_dir), reranker_template="qwen3")
    for backend in ("onnx", "python"):
        errors, stderr = _refused_start("--model-id", str(causal), "--reranker-template", "qwen3", "--backend", backend,
                                        "--trust-remote-code")
        assert len(errors) == 1 and "run on --backend torch only" in errors[0], stderr
    errors, stderr = _refused_start("--model-id", str(causal), "--reranker-instruction", "judge")
    assert len(errors) == 1 and "--reranker-instruction needs --reranker-template" in errors[0], stderr


def test_onnx_refuses_bge_m3_in_one_line(tmp_path: Path, model_dir: Path) -> None:
    # Its sparse and multi-vector heads run in the torch engine only.
    m3_dir = build_bgem3_model(tmp_path / "m3", model_dir)
    errors, stderr = _refused_start("--model-id", str(m3_dir), "--backend", "onnx")
    assert len(errors) == 1 and "bge-m3" in errors[0] and "--backend torch" in errors[0], stderr


def _refused_start(*args: str) -> tuple[list[str], str]:
    """The launcher's ERROR lines, and its whole stderr, for a start that must stop with exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "embedserve.launcher", "--hostname", "127.0.0.1", "--port", "0", "--grpc-port", "0",
         "--uds-path", short_socket_prefix(), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2
    return [line for line in result.stderr.splitlines() if " ERROR " in line], result.stderr
