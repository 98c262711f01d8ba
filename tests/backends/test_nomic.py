"""NomicBERT ("nomic_bert") on the torch engine's own implementation (backends/nomic.py),
against transformers running the model's remote code (auto_map) text by text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embedserve.backends.base import EngineSpec
from embedserve.backends.engines import load_engine
from embedserve.backends.padding import padded_chunks
from tests.backends.parity import cosine, encode
from tests.models import build_nomic_model
from tests.texts import varied_texts

TEXTS = varied_texts(10, seed=31)
VARIANTS: dict[str, dict[str, object]] = {
    "nomic-embed-text": {},  # SwiGLU, no biases
    "biases": {"qkv_proj_bias": True, "mlp_fc1_bias": True, "mlp_fc2_bias": True},
    "gelu-no-token-types": {"activation_function": "gelu", "type_vocab_size": 0},
}


def _reference_mean(model_dir: Path, sequences: list[list[int]], types: list[list[int]]) -> np.ndarray:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), "reference must be the model's own code"
    with torch.inference_mode():
        return np.stack([
            model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([t])).last_hidden_state[0].mean(0).numpy()
            for ids, t in zip(sequences, types)
        ])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nomic_matches_its_remote_code(variant: str, model_dir: Path, tmp_path: Path) -> None:
    nomic_dir = build_nomic_model(tmp_path / "nomic", model_dir, **VARIANTS[variant])
    engine = load_engine("torch", EngineSpec(nomic_dir, "cpu", "", "mean", tmp_path))
    for texts in (TEXTS, TEXTS[2:3]):  # mixed lengths (padded), then one text alone
        batch, sequences, types = encode(nomic_dir, texts)
        if len(texts) > 1:
            assert any(c.lengths.min() < c.lengths.max() for c in padded_chunks(batch, None, 0))
        got = engine.embed(batch).pooled  # type: ignore[attr-defined]
        assert cosine(got, _reference_mean(nomic_dir, sequences, types)).min() >= 0.9999


def test_variants_outside_the_implementation_are_refused_with_a_pointer(model_dir: Path, tmp_path: Path) -> None:
    nomic_dir = build_nomic_model(tmp_path / "nomic", model_dir)
    config = json.loads((nomic_dir / "config.json").read_text())
    (nomic_dir / "config.json").write_text(json.dumps({**config, "prenorm": True, "rotary_emb_interleaved": True}))
    with pytest.raises(ValueError, match="prenorm, rotary_emb_interleaved .*--backend python"):
        load_engine("torch", EngineSpec(nomic_dir, "cpu", "", "mean", tmp_path))
