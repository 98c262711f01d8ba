"""NomicBERT ("nomic_bert") on the torch engine's own implementation (backends/nomic.py),
against transformers running the model's remote code (auto_map) text by text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedserve.backends.base import EngineSpec
from embedserve.backends.engines import load_engine
from tests.backends.parity import assert_native_matches_remote_code
from tests.models import build_nomic_model
from tests.texts import varied_texts

TEXTS = varied_texts(10, seed=31)
VARIANTS: dict[str, dict[str, object]] = {
    "nomic-embed-text": {},  # SwiGLU, no biases
    "biases": {"qkv_proj_bias": True, "mlp_fc1_bias": True, "mlp_fc2_bias": True},
    "gelu-no-token-types": {"activation_function": "gelu", "type_vocab_size": 0},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nomic_matches_its_remote_code(variant: str, model_dir: Path, tmp_path: Path) -> None:
    nomic_dir = build_nomic_model(tmp_path / "nomic", model_dir, **VARIANTS[variant])
    assert_native_matches_remote_code(nomic_dir, TEXTS, tmp_path)


def test_variants_outside_the_implementation_are_refused_with_a_pointer(model_dir: Path, tmp_path: Path) -> None:
    nomic_dir = build_nomic_model(tmp_path / "nomic", model_dir)
    config = json.loads((nomic_dir / "config.json").read_text())
    (nomic_dir / "config.json").write_text(json.dumps({**config, "prenorm": True, "rotary_emb_interleaved": True}))
    with pytest.raises(ValueError, match="prenorm, rotary_emb_interleaved .*--backend python"):
        load_engine("torch", EngineSpec(nomic_dir, "cpu", "", "mean", tmp_path))
