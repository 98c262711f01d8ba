"""JinaBERT (jina-embeddings-v2: config.json model type "bert" with ALiBi), run natively.

Its checkpoints say model type "bert" but their architecture is not BERT: the code
ships in a Hub repository (auto_map, jinaai/jina-bert-implementation), and
transformers' BertModel would load the weights wrongly (no positions at all).
This is our own implementation with the checkpoints' parameter names, so the torch
engine never loads a JinaBERT checkpoint as plain BERT nor runs its shipped code.

The architecture: BERT's post-norm encoder without position embeddings; instead
each head adds an ALiBi bias, -slope x |query - key|, to its attention scores
(symmetric: an encoder); the MLP is gated, wo(act(x W_gate) * x W_up) from one
`gated_layers` projection (first half the gate), with its own LayerNorm.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from embedserve.backends.checkpoint import read_config, read_weights

# The feed-forward types of the published code and the activation each gates with.
GATE_ACTIVATIONS = {"geglu": "gelu", "reglu": "relu"}
BASE_PREFIX = "bert."
IGNORED_PREFIXES = ("pooler.", "cls.", "lm_head.")


def is_jina_bert(model_dir: Path) -> bool:
    config = read_config(model_dir) or {}
    return config.get("model_type") == "bert" and config.get("position_embedding_type") == "alibi"


@dataclass(frozen=True)
class JinaBertConfig:
    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    feed_forward_type: str = "geglu"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    architectures: list[str] = field(default_factory=list)
    auto_map: dict[str, str] = field(default_factory=dict)
    model_type: str = "bert"

    @classmethod
    def from_dir(cls, model_dir: Path) -> JinaBertConfig:
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        config = cls(**{name: raw[name] for name in cls.__dataclass_fields__ if raw.get(name) is not None})
        # jina-embeddings-v2-base-code's variant normalizes queries and keys: another architecture.
        if any("qk-post-norm" in str(target) for target in config.auto_map.values()):
            raise ValueError("JinaBERT with query/key post-norm (jina-bert-v2-qk-post-norm) is not implemented "
                             "natively; use --backend python to run the model's own code")
        if any(a.endswith("Classification") for a in config.architectures):
            raise ValueError("JinaBERT classifiers are not implemented natively; use --backend python")
        if config.feed_forward_type not in (*GATE_ACTIVATIONS, "glu"):
            raise ValueError(f"JinaBERT feed_forward_type {config.feed_forward_type!r} is not supported")
        return config

    @property
    def gate_activation(self) -> str:
        return GATE_ACTIVATIONS.get(self.feed_forward_type, self.hidden_act)


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes: a geometric series from 2^(-8/n); for a head count
    that is not a power of two, the closest power's series, then every other slope
    of the series for twice that power."""
    def series(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    power = 2 ** math.floor(math.log2(heads))
    slopes = series(power) + series(2 * power)[0::2][: heads - power]
    return torch.tensor(slopes, dtype=torch.float32)


class JinaSelfAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)


class JinaAttentionOutput(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class JinaAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.self = JinaSelfAttention(config)
        self.output = JinaAttentionOutput(config)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        q, k, v = (proj(hidden).view(batch, length, self.heads, -1).transpose(1, 2)
                   for proj in (self.self.query, self.self.key, self.self.value))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        attended = self.output.dense(context.transpose(1, 2).reshape(batch, length, width))
        return self.output.LayerNorm(attended + hidden)  # type: ignore[no-any-return]


class JinaGatedMLP(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * self.size, bias=False)
        self.act = ACT2FN[config.gate_activation]
        self.wo = nn.Linear(self.size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        both = self.gated_layers(hidden)
        gated = self.act(both[..., : self.size]) * both[..., self.size :]
        return self.layernorm(self.wo(gated) + hidden)  # type: ignore[no-any-return]


class JinaLayer(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.attention = JinaAttention(config)
        self.mlp = JinaGatedMLP(config)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(hidden, bias))  # type: ignore[no-any-return]


class JinaEncoder(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([JinaLayer(config) for _ in range(config.num_hidden_layers)])


class JinaEmbeddings(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.type_vocab_size > 0 else None)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


@dataclass
class JinaOutput:
    """What the padded engine path reads from a model's output."""

    last_hidden_state: torch.Tensor


class JinaBertModel(nn.Module):
    """The encoder, on right-padded [batch, length] inputs (the padded engine path)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = JinaEmbeddings(config)
        self.encoder = JinaEncoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> JinaOutput:
        hidden = self.embeddings.word_embeddings(input_ids)
        if self.embeddings.token_type_embeddings is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            hidden = hidden + self.embeddings.token_type_embeddings(types)
        hidden = self.embeddings.LayerNorm(hidden)
        length, device = input_ids.shape[1], input_ids.device
        positions = torch.arange(length, device=device, dtype=torch.float32)
        distance = (positions[None, :] - positions[:, None]).abs()
        slopes = alibi_slopes(self.config.num_attention_heads).to(device)
        bias = -slopes[:, None, None] * distance  # [heads, queries, keys]
        # Padding keys get -inf-like scores; float32 math, then the weights' dtype.
        padding = torch.where(attention_mask.bool(), 0.0, torch.finfo(torch.float32).min).to(device)
        bias = (bias[None] + padding[:, None, None, :]).to(hidden.dtype)
        for layer in self.encoder.layer:
            hidden = layer(hidden, bias)
        return JinaOutput(last_hidden_state=hidden)


def load(model_dir: Path, config: JinaBertConfig, dtype: torch.dtype) -> JinaBertModel:
    model = JinaBertModel(config)
    state = {k.removeprefix(BASE_PREFIX): v for k, v in read_weights(model_dir).items()}
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"JinaBERT weights do not match the architecture: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return model.to(dtype).eval()
