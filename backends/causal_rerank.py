"""A causal LM's last-token "yes"/"no" logits as a reranker score (Qwen3-Reranker).

The reference computes the whole vocabulary's logits at every position and keeps
two numbers. Here the LM head is cut to its two rows at load, and only each
sequence's last state goes through them: a [n, hidden] x [hidden, 2] product per
batch instead of [tokens, hidden] x [hidden, vocabulary].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def score_token_ids(model_dir: Path, yes: str, no: str) -> tuple[int, int]:
    """The vocabulary ids of the template's two words, as the model card's
    `convert_tokens_to_ids` finds them: a token of exactly that text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = []
    for word in (yes, no):
        token_id = tokenizer.token_to_id(word)
        if token_id is None:
            raise ValueError(f"the tokenizer has no token {word!r}, which the reranker template scores")
        ids.append(token_id)
    return ids[0], ids[1]


class YesNoHead:
    """logit(yes) - logit(no) from the last hidden state: the router's sigmoid of it
    is softmax([logit(no), logit(yes)])[1], the model card's score."""

    def __init__(self, causal_lm: Any, yes_id: int, no_id: int) -> None:
        head = causal_lm.get_output_embeddings()
        weight: torch.Tensor = head.weight
        if max(yes_id, no_id) >= weight.shape[0]:
            raise ValueError(f"token ids {yes_id}, {no_id} are outside the LM head's {weight.shape[0]} rows")
        rows = [no_id, yes_id]
        # float32 whatever the weights' dtype: two rows cost nothing and the
        # difference of two large logits keeps its precision.
        self._weight = weight.detach()[rows].float().clone()
        bias = getattr(head, "bias", None)
        self._bias = bias.detach()[rows].float().clone() if bias is not None else None

    def __call__(self, last_states: torch.Tensor) -> torch.Tensor:
        """[n, hidden] -> [n, 1]."""
        logits = last_states.float() @ self._weight.T
        if self._bias is not None:
            logits = logits + self._bias
        return logits[:, 1:] - logits[:, :1]


def last_states(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each right-padded row's last real state, [n, hidden]."""
    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
