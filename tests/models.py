"""Tiny randomly initialised models, saved like Hub checkpoints, with a real tokenizer.

They load in well under a second, so tests can start servers on them and compare
against transformers computing the same thing directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

Kind = Literal["reranker", "classifier", "splade"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
CLASSIFIER_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def build_tiny_model(kind: Kind, target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(seed)
    common = dict(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, type_vocab_size=2,
    )
    if kind == "splade":
        model = BertForMaskedLM(BertConfig(**common))
    else:
        labels = {0: "LABEL_0"} if kind == "reranker" else CLASSIFIER_LABELS
        config = BertConfig(**common, num_labels=len(labels), id2label=labels,
                            label2id={v: k for k, v in labels.items()})
        model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(target)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, target / name)
    return target


def add_prompts(model_dir: Path, prompts: dict[str, str]) -> None:
    (model_dir / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))


# Tiny configs of each supported architecture family; the tokenizer is the
# bundled BERT WordPiece one (vocabulary 30522) for all of them, which is all a
# parity test between two runtimes on the same ids needs.
_ENCODER = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=128)
_OFFSET_ENCODER = dict(_ENCODER, pad_token_id=1, max_position_embeddings=130)
_DECODER = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, max_position_embeddings=128)
FAMILIES: dict[str, tuple[str, str, dict[str, object], str]] = {
    # family: (config class, model class, config kwargs, pooling)
    "bert": ("BertConfig", "BertModel", _ENCODER, "mean"),
    "roberta": ("RobertaConfig", "RobertaModel", _OFFSET_ENCODER, "mean"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", _OFFSET_ENCODER, "cls"),
    "camembert": ("CamembertConfig", "CamembertModel", _OFFSET_ENCODER, "mean"),
    "distilbert": ("DistilBertConfig", "DistilBertModel",
                   dict(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128),
                   "mean"),
    "mpnet": ("MPNetConfig", "MPNetModel", _OFFSET_ENCODER, "mean"),
    "modernbert": ("ModernBertConfig", "ModernBertModel", dict(_ENCODER, pad_token_id=0), "mean"),
    "qwen2": ("Qwen2Config", "Qwen2Model", _DECODER, "last_token"),
    "qwen3": ("Qwen3Config", "Qwen3Model", dict(_DECODER, head_dim=16), "last_token"),
}


def build_family_model(family: str, target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    config_name, model_name, kwargs, pooling = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**kwargs)
    config.architectures = [model_name]
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(target)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, target / name)
    pooling_config = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
                      "pooling_mode_lasttoken": pooling == "last_token"}
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return target


REMOTE_CONFIG_CODE = '''
from transformers import PretrainedConfig


class TinyEncoderConfig(PretrainedConfig):
    model_type = "tiny-encoder"

    def __init__(self, vocab_size=30522, hidden_size=16, max_position_embeddings=128, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)
'''

REMOTE_MODEL_CODE = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_tiny import TinyEncoderConfig


class TinyEncoderModel(PreTrainedModel):
    """Embeddings, then each token mixed with the masked mean of its sequence."""

    config_class = TinyEncoderConfig

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.mix = torch.nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        states = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        context = (states * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
        hidden = torch.tanh(self.mix(torch.cat([states, context.expand_as(states)], dim=-1)))
        return BaseModelOutput(last_hidden_state=hidden)
'''


def build_remote_code_model(target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    """A model whose architecture exists only in the model directory (auto_map)."""
    import importlib.util
    import sys

    import torch

    target.mkdir(parents=True)
    package = target / "tiny_remote_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "configuration_tiny.py").write_text(REMOTE_CONFIG_CODE)
    (package / "modeling_tiny.py").write_text(REMOTE_MODEL_CODE)
    sys.path.insert(0, str(target))
    try:
        spec = importlib.util.find_spec("tiny_remote_pkg.modeling_tiny")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config_module = sys.modules["tiny_remote_pkg.configuration_tiny"]
        torch.manual_seed(seed)
        config = config_module.TinyEncoderConfig()
        config.auto_map = {
            "AutoConfig": "configuration_tiny.TinyEncoderConfig",
            "AutoModel": "modeling_tiny.TinyEncoderModel",
        }
        config.architectures = ["TinyEncoderModel"]
        module.TinyEncoderModel(config).eval().save_pretrained(target)
    finally:
        sys.path.remove(str(target))
        for name in [n for n in sys.modules if n.startswith("tiny_remote_pkg")]:
            del sys.modules[name]
    shutil.rmtree(package)
    (target / "configuration_tiny.py").write_text(REMOTE_CONFIG_CODE)
    (target / "modeling_tiny.py").write_text(REMOTE_MODEL_CODE)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, target / name)
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return target
