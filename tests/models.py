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
