from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from embedserve.router.model_config import ModelConfigError, load_model_spec


def test_bundled_minilm(model_dir: Path) -> None:
    spec = load_model_spec(model_dir)
    assert (spec.model_type, spec.pooling, spec.base_input_length, spec.position_offset) == ("embedding", "mean", 256, 0)
    assert load_model_spec(model_dir, "cls").pooling == "cls"
    assert load_model_spec(model_dir, "last-token").pooling == "last_token"


def _copy_with_config(model_dir: Path, target: Path, **changes: object) -> Path:
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_roberta_offset_and_classifiers(model_dir: Path, tmp_path: Path) -> None:
    roberta = _copy_with_config(model_dir, tmp_path / "r", model_type="roberta", pad_token_id=1)
    (roberta / "sentence_bert_config.json").unlink()
    spec = load_model_spec(roberta)
    assert spec.position_offset == 2 and spec.base_input_length == 510
    reranker = _copy_with_config(model_dir, tmp_path / "rr", architectures=["BertForSequenceClassification"],
                                 id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    assert load_model_spec(reranker).model_type == "reranker"
    classifier = _copy_with_config(model_dir, tmp_path / "c", architectures=["BertForSequenceClassification"],
                                   id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2})
    assert load_model_spec(classifier).model_type == "classifier"


def test_unusable_configs(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="MaskedLM"):
        load_model_spec(model_dir, "splade")
    with pytest.raises(ModelConfigError, match="no config.json"):
        load_model_spec(tmp_path)
    odd = _copy_with_config(model_dir, tmp_path / "max", model_type="mpnet")
    (odd / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ModelConfigError, match="not supported"):
        load_model_spec(odd)
