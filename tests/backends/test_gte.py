"""GTE ("new") on the torch engine's own implementation, padded and unpadded,
against transformers running the model's remote code (auto_map) text by text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from embedserve.backends.base import EngineSpec
from embedserve.backends.engines import load_engine
from embedserve.backends.torch_backend import TorchBackend
from tests.backends.parity import cosine, encode
from tests.models import build_gte_model
from tests.texts import varied_texts

TEXTS = varied_texts(10, seed=21)
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "ntk-logn": {"rope_scaling": {"type": "ntk", "factor": 2.0}, "logn_attention_scale": True},
    "mixed-ntk": {"rope_scaling": {"type": "ntk", "factor": 4.0, "mixed_b": 0.7}},
    "rms-unpacked-qkv": {"layer_norm_type": "rms_norm", "pack_qkv": False, "hidden_act": "silu"},
    "absolute-positions": {"position_embedding_type": "absolute", "type_vocab_size": 0},
}


def _reference(model_dir: Path, classifier: bool = False) -> Any:
    from transformers import AutoModel, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if classifier else AutoModel
    model = auto.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), "reference must be the model's own code"
    return model


def _engine(model_dir: Path, tmp_path: Path) -> TorchBackend:
    engine = load_engine("torch", EngineSpec(model_dir, "cpu", "", "cls", tmp_path))
    assert isinstance(engine, TorchBackend)
    return engine


@pytest.mark.parametrize("attention", ["padded", "varlen"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gte_matches_its_remote_code(variant: str, attention: str, model_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    gte_dir = build_gte_model(tmp_path / "gte", model_dir, **VARIANTS[variant])
    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", attention)
    engine = _engine(gte_dir, tmp_path)
    assert engine.is_padded == (attention == "padded")
    batch, sequences, types = encode(gte_dir, TEXTS)
    got = engine.embed(batch).pooled
    reference = _reference(gte_dir)
    with torch.inference_mode():
        expected = np.stack([
            reference(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([t])).last_hidden_state[0, 0].numpy()
            for ids, t in zip(sequences, types)
        ])
    assert cosine(got, expected).min() >= 0.9999


@pytest.mark.parametrize("attention", ["padded", "varlen"])
def test_gte_reranker_matches_its_remote_code(attention: str, model_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    gte_dir = build_gte_model(tmp_path / "gte-reranker", model_dir, classifier=True)
    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", attention)
    engine = _engine(gte_dir, tmp_path)
    assert engine.is_classifier
    batch, sequences, types = encode(gte_dir, TEXTS[:5], pairs=TEXTS[5:])
    got = engine.predict(batch)
    reference = _reference(gte_dir, classifier=True)
    with torch.inference_mode():
        expected = np.stack([
            reference(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([t])).logits[0].numpy()
            for ids, t in zip(sequences, types)
        ])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_gte_weights_that_do_not_fit_are_refused(model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    gte_dir = build_gte_model(tmp_path / "gte", model_dir)
    weights = gte_dir / "model.safetensors"
    state = load_file(str(weights))
    del state["encoder.layer.1.mlp.up_gate_proj.weight"]
    save_file(state, str(weights))
    with pytest.raises(ValueError, match="missing.*encoder.layer.1.mlp.up_gate_proj.weight"):
        _engine(gte_dir, tmp_path)


def test_gte_reads_rotary_settings_saved_by_transformers_5(tmp_path: Path) -> None:
    import json

    from embedserve.backends.gte import GteConfig

    hub_style = {"model_type": "new", "rope_theta": 500.0, "rope_scaling": {"type": "ntk", "factor": 2.0}}
    resaved = {"model_type": "new", "rope_theta": None, "rope_scaling": None,
               "rope_parameters": {"rope_type": "ntk", "type": "ntk", "factor": 2.0, "rope_theta": 500.0}}
    configs = []
    for name, raw in (("hub", hub_style), ("resaved", resaved)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(raw))
        configs.append(GteConfig.from_dir(tmp_path / name))
    assert configs[0].rope_theta == configs[1].rope_theta == 500.0
    torch.testing.assert_close(configs[0].inverse_frequencies(), configs[1].inverse_frequencies())
    assert not torch.equal(configs[0].inverse_frequencies(), GteConfig(rope_theta=500.0).inverse_frequencies())
