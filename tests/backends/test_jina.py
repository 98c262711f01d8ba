"""JinaBERT (model type "bert" with ALiBi) on the torch engine's own implementation
(backends/jina.py), against transformers running the model's remote code text by text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.base import EngineSpec
from embedserve.backends.engines import load_engine
from embedserve.backends.jina import alibi_slopes
from tests.backends.parity import assert_native_matches_remote_code
from tests.models import build_jina_bert_model
from tests.texts import varied_texts

TEXTS = varied_texts(10, seed=41)
VARIANTS: dict[str, dict[str, object]] = {
    "three-heads-geglu": {},
    "four-heads-reglu": {"num_attention_heads": 4, "hidden_size": 32, "feed_forward_type": "reglu"},
}


def test_alibi_slopes() -> None:
    # Powers of two: 2^(-8/n) to the 1..n; otherwise the closest power's, then every other of twice it.
    np.testing.assert_allclose(alibi_slopes(4).numpy(), [2**-2, 2**-4, 2**-6, 2**-8])
    np.testing.assert_allclose(alibi_slopes(3).numpy(), [2**-4, 2**-8, 2**-2])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_jina_bert_matches_its_remote_code(variant: str, model_dir: Path, tmp_path: Path) -> None:
    jina_dir = build_jina_bert_model(tmp_path / "jina", model_dir, **VARIANTS[variant])
    assert_native_matches_remote_code(jina_dir, TEXTS, tmp_path)


def test_the_qk_post_norm_variant_is_refused_with_a_pointer(model_dir: Path, tmp_path: Path) -> None:
    jina_dir = build_jina_bert_model(tmp_path / "jina", model_dir)
    config = json.loads((jina_dir / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "jinaai/jina-bert-v2-qk-post-norm--modeling_bert.JinaBertModel"
    (jina_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="qk-post-norm.*--backend python"):
        load_engine("torch", EngineSpec(jina_dir, "cpu", "", "mean", tmp_path))
