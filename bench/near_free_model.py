"""The near-free model of issue 12: a random 1-layer, 32-wide BERT with the bundled
all-MiniLM-L6-v2 tokenizer, so a served request costs almost nothing inside the
model and the server's own CPU per request is what a bench measures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
HIDDEN_SIZE = 32


def _vocab_size(tokenizer_source: Path) -> int:
    # The embedding table must cover every id the tokenizer can emit.
    with open(tokenizer_source / "vocab.txt", encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def build_near_free_model(target: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=_vocab_size(tokenizer_source), hidden_size=HIDDEN_SIZE, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                        type_vocab_size=2)  # type: ignore[no-untyped-call]
    config.architectures = ["BertModel"]
    BertModel(config).eval().save_pretrained(target)  # type: ignore[no-untyped-call]
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, target / name)
    # Mean pooling, as the bundled model declares, so the server needs no --pooling.
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": HIDDEN_SIZE, "pooling_mode_mean_tokens": True}))
    return target
