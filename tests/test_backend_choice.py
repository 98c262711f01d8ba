"""Which engine `--backend auto` picks per model family (launcher.choose_backend)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import choose_backend
from router.model_config import ModelSpec


def _spec(model_type: str, remote_code: bool = False) -> ModelSpec:
    return ModelSpec(model_dir=Path("/nonexistent"), model_type="embedding", pooling="mean", id2label={},
                     label2id={}, base_input_length=512, position_offset=0, config_model_type=model_type,
                     remote_code=remote_code)


@pytest.mark.parametrize("model_type", ["deberta-v2", "bert", "qwen2"])
def test_exported_families_run_onnx_on_cpu_and_torch_on_gpu(model_type: str) -> None:
    assert choose_backend("auto", _spec(model_type), []) == "onnx"
    assert choose_backend("auto", _spec(model_type), ["0"]) == "torch"


def test_an_explicit_backend_wins() -> None:
    assert choose_backend("torch", _spec("deberta-v2"), []) == "torch"
