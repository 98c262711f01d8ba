"""The Dense head alone: weights as sentence-transformers saves them, applied as it does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.base import Activation, DenseSpec
from embedserve.backends.dense import DenseHead

TORCH_ACTIVATIONS: dict[Activation, str] = {"identity": "Identity", "tanh": "Tanh", "relu": "ReLU",
                                            "sigmoid": "Sigmoid"}


def _save_dense(folder: Path, in_features: int, out_features: int, activation: Activation, bias: bool,
                weights: str, seed: int) -> tuple[DenseSpec, object]:
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    torch.manual_seed(seed)
    module = Dense(in_features, out_features, bias=bias, activation_function=getattr(torch.nn, TORCH_ACTIVATIONS[activation])())
    torch.nn.init.normal_(module.linear.weight, std=0.5)
    folder.mkdir()
    if weights == "bfloat16":
        # Back to float32 after saving, keeping the rounded weights the file holds.
        module.to(torch.bfloat16).save(str(folder))
        module.float()
    else:
        module.save(str(folder), safe_serialization=weights == "safetensors")
    return DenseSpec(folder, in_features, out_features, bias, activation), module


@pytest.mark.parametrize("torch_device", [None, "cpu"], ids=["numpy", "torch"])
@pytest.mark.parametrize("weights", ["safetensors", "pytorch_model.bin", "bfloat16"])
def test_head_matches_sentence_transformers_dense(tmp_path: Path, weights: str, torch_device: str | None) -> None:
    import torch

    layers = [(16, 12, "tanh", True), (12, 12, "relu", True), (12, 8, "sigmoid", False), (8, 6, "identity", True)]
    saved = [_save_dense(tmp_path / f"{i + 2}_Dense", *layer, weights, seed=i) for i, layer in enumerate(layers)]
    head = DenseHead.load([spec for spec, _ in saved], pooled_width=16, torch_device=torch_device)
    rows = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32) * 3
    features = {"sentence_embedding": torch.from_numpy(rows)}
    with torch.inference_mode():
        for _, module in saved:
            features = module(features)  # type: ignore[operator]
    got = head(rows)
    assert head.out_features == 6 and got.shape == (5, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, features["sentence_embedding"].numpy(), rtol=1e-5, atol=1e-5)


def test_head_refuses_widths_that_do_not_chain(tmp_path: Path) -> None:
    spec, _ = _save_dense(tmp_path / "2_Dense", 16, 8, "tanh", True, "safetensors", seed=0)
    with pytest.raises(ValueError, match="2_Dense takes 16 features but receives 32"):
        DenseHead.load([spec], pooled_width=32)
    wrong = DenseSpec(spec.path, 16, 9, True, "tanh")  # config and weights disagree
    with pytest.raises(ValueError, match=r"linear.weight should be \[9, 16\], found \[8, 16\]"):
        DenseHead.load([wrong], pooled_width=16)
