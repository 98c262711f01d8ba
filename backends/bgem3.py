"""bge-m3's two extra heads (FlagEmbedding's BGEM3FlagModel), run on the same last
hidden states as the dense CLS row, so one forward pass serves all three outputs.

A checkpoint is bge-m3 when both head files sit beside its weights (the launcher
checks the same names, router/model_config.py): `sparse_linear.pt`, the state dict
of Linear(hidden, 1), and `colbert_linear.pt`, Linear(hidden, dim). As FlagEmbedding's
EncoderOnlyEmbedderM3Model computes them:
- a token's lexical weight is relu(sparse_linear(state)); the tokenizer's special
  tokens (cls, eos, pad, unk) get none. Aggregating per token id (max) is the
  router's work (router/multi_output.py): it holds the ids, and the wire carries one
  float per token instead of a vocabulary-wide row.
- the multi-vectors are colbert_linear(state) of every token after the first (CLS);
  the router normalizes them when asked, as it does dense rows.
The heads run in float32 whatever the model's dtype.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

SPARSE_FILE = "sparse_linear.pt"
COLBERT_FILE = "colbert_linear.pt"
# FlagEmbedding leaves these tokens' lexical weights out (the ones the tokenizer has).
UNUSED_SPECIAL_TOKENS = ("cls_token", "eos_token", "pad_token", "unk_token")


def has_heads(model_dir: Path) -> bool:
    return (model_dir / SPARSE_FILE).is_file() and (model_dir / COLBERT_FILE).is_file()


@dataclass(frozen=True)
class M3Heads:
    sparse: torch.nn.Linear
    colbert: torch.nn.Linear
    special_ids: torch.Tensor  # int64, on the heads' device

    @classmethod
    def load(cls, model_dir: Path, hidden_size: int, device: str) -> M3Heads:
        sparse = _linear(model_dir / SPARSE_FILE, hidden_size, device)
        colbert = _linear(model_dir / COLBERT_FILE, hidden_size, device)
        if sparse.out_features != 1:
            raise ValueError(f"{SPARSE_FILE} should map {hidden_size} features to 1, not {sparse.out_features}")
        ids = _special_ids(model_dir)
        logger.info("bge-m3 heads: lexical weights, %d-wide multi-vectors (special tokens %s left out)",
                    colbert.out_features, sorted(ids))
        return cls(sparse, colbert, torch.tensor(sorted(ids), dtype=torch.int64, device=device))

    @property
    def colbert_dim(self) -> int:
        return int(self.colbert.out_features)

    def sparse_weights(self, states: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[..., tokens] float32 from [..., tokens, hidden] states and their int64 ids."""
        weights = torch.relu(self.sparse(states.float())).squeeze(-1)
        return weights.masked_fill(torch.isin(input_ids, self.special_ids), 0.0)

    def colbert_vectors(self, states: torch.Tensor) -> torch.Tensor:
        """[..., tokens, colbert_dim] float32 from [..., tokens, hidden] states (the CLS state already left out)."""
        return self.colbert(states.float())  # type: ignore[no-any-return]


def token_index(cu_seq_lengths: np.ndarray, sequences: frozenset[int], skip_first: bool) -> np.ndarray:
    """Positions in a packed batch of the tokens of `sequences`, in batch order;
    `skip_first` leaves each sequence's first token (CLS) out."""
    bounds = cu_seq_lengths.astype(np.int64)
    parts = [np.arange(bounds[seq] + int(skip_first), bounds[seq + 1]) for seq in sorted(sequences)]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _linear(path: Path, in_features: int, device: str) -> torch.nn.Linear:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weight = state["weight"]
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read the bge-m3 head {path.name}: {exc}") from exc
    if weight.ndim != 2 or weight.shape[1] != in_features:
        raise ValueError(f"{path.name} takes {list(weight.shape)[1:]} features; the model's hidden size is {in_features}")
    layer = torch.nn.Linear(in_features, int(weight.shape[0]), bias="bias" in state)
    layer.load_state_dict({k: v.float() for k, v in state.items()})
    return layer.eval().to(device)


def _special_ids(model_dir: Path) -> set[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids: set[int] = set()
    for name in UNUSED_SPECIAL_TOKENS:
        token = tokenizer.special_tokens_map.get(name)
        if isinstance(token, str):
            ids.add(int(tokenizer.convert_tokens_to_ids(token)))
    return ids
