"""GTE, config.json model type "new" (Alibaba-NLP gte-*-v1.5, gte-multilingual), run natively.

Its transformers code exists only in a Hub repository that config.json's auto_map
points to; a server should not have to fetch and trust it. This module is our own
implementation of the architecture with the checkpoints' parameter names, so the
torch engine loads those weights directly, padded or unpadded, on CPU or GPU.

The architecture: a post-norm BERT-like encoder. Word (+ token type) embeddings
and a LayerNorm; rotary positions (optionally NTK-scaled) on queries and keys; one
packed qkv projection; a gated MLP, down(act(gate) * up); LayerNorm or RMSNorm
after each residual. Classifiers add BERT's tanh pooler over the first token.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedserve.backends.base import ModelBatch
from embedserve.backends.checkpoint import read_config, read_weights
from embedserve.backends.varlen import NamedKernel, PackedBatch, Upload

MODEL_TYPE = "new"
# What the engine may be asked to drop from a checkpoint: heads it does not serve.
IGNORED_PREFIXES = ("lm_head.", "pooler.")
# A classifier checkpoint nests the encoder under this prefix.
CLASSIFIER_BASE = "new."

# q, k, v: [..., heads, head_dim] -> [..., heads, head_dim]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def is_gte(model_dir: Path) -> bool:
    return (read_config(model_dir) or {}).get("model_type") == MODEL_TYPE


@dataclass(frozen=True)
class GteConfig:
    """The config.json fields the architecture reads (defaults: the reference config's)."""

    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 2048
    type_vocab_size: int = 1
    layer_norm_type: str = "layer_norm"
    layer_norm_eps: float = 1e-12
    position_embedding_type: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    pack_qkv: bool = True
    logn_attention_scale: bool = False
    logn_attention_clip1: bool = False
    pad_token_id: int = 0
    architectures: list[str] = field(default_factory=list)
    id2label: dict[str, str] = field(default_factory=dict)
    model_type: str = MODEL_TYPE

    @classmethod
    def from_dir(cls, model_dir: Path) -> GteConfig:
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        known = {name: raw[name] for name in cls.__dataclass_fields__ if raw.get(name) is not None}
        known.update(_rope_from_parameters(raw))
        config = cls(**known)
        if config.position_embedding_type not in ("rope", "absolute"):
            raise ValueError(f"GTE position_embedding_type {config.position_embedding_type!r} is not supported")
        if config.layer_norm_type not in ("layer_norm", "rms_norm"):
            raise ValueError(f"GTE layer_norm_type {config.layer_norm_type!r} is not supported")
        scaling = config.rope_scaling
        if scaling is not None and scaling.get("type", "ntk") != "ntk":
            raise ValueError(f"GTE rope_scaling type {scaling.get('type')!r} is not supported (only ntk)")
        return config

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def is_classifier(self) -> bool:
        return any(a.endswith("SequenceClassification") for a in self.architectures)

    def inverse_frequencies(self) -> torch.Tensor:
        """Rotary frequencies, NTK-scaled when rope_scaling's factor is above 1."""
        dim = self.head_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
        factor = float((self.rope_scaling or {}).get("factor", 1.0))
        if factor <= 1.0:
            return torch.pow(self.rope_theta, -exponents)
        mixed_b = (self.rope_scaling or {}).get("mixed_b")
        if mixed_b is None:  # fixed NTK: a larger base, then a uniform stretch
            stretched: torch.Tensor = torch.pow(self.rope_theta * factor, -exponents) / factor ** (2 / dim)
            return stretched
        # mixed NTK: each frequency stretched by exp(a * k^b), k = 1 .. dim/2
        a = math.log(factor) / (dim / 2) ** mixed_b
        stretch = torch.exp(a * torch.arange(1, dim // 2 + 1, dtype=torch.float32) ** mixed_b)
        return torch.pow(self.rope_theta, -exponents) / stretch


def _rope_from_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 saves rotary settings as rope_parameters (rope_theta and
    rope_scaling then absent or null); Hub checkpoints use the two older keys."""
    params = raw.get("rope_parameters")
    if not isinstance(params, dict):
        return {}
    found: dict[str, Any] = {}
    if raw.get("rope_theta") is None and params.get("rope_theta") is not None:
        found["rope_theta"] = params["rope_theta"]
    kind = params.get("type") or params.get("rope_type")
    if raw.get("rope_scaling") is None and kind not in (None, "default"):
        found["rope_scaling"] = {"type": kind, "factor": params.get("factor", 1.0), "mixed_b": params.get("mixed_b")}
    return found


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * scaled.to(x.dtype)


def _norm(config: GteConfig) -> nn.Module:
    if config.layer_norm_type == "rms_norm":
        return RMSNorm(config.hidden_size, config.layer_norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class GteEmbeddings(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size > 0 else None
        )
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding_type == "absolute"
            else None
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, ids: torch.Tensor, types: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.word_embeddings(ids)
        if self.token_type_embeddings is not None:
            hidden = hidden + self.token_type_embeddings(types)
        if self.position_embeddings is not None:
            hidden = hidden + self.position_embeddings(positions)
        return self.LayerNorm(hidden)  # type: ignore[no-any-return]


class GteAttention(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        if config.pack_qkv:
            self.qkv_proj = nn.Linear(width, 3 * width)
        else:
            self.q_proj, self.k_proj, self.v_proj = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)
        self._packed = config.pack_qkv

    def forward(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None,
                query_scale: torch.Tensor | None, attend: Attend) -> torch.Tensor:
        if self._packed:
            q, k, v = self.qkv_proj(hidden).chunk(3, dim=-1)
        else:
            q, k, v = self.q_proj(hidden), self.k_proj(hidden), self.v_proj(hidden)
        split = (*hidden.shape[:-1], self.heads, self.head_dim)
        q, k, v = q.reshape(split), k.reshape(split), v.reshape(split)
        if rotary is not None:
            q, k = _rotate(q, *rotary), _rotate(k, *rotary)
        if query_scale is not None:
            q = q * query_scale
        context = attend(q, k, v).reshape(hidden.shape)
        return self.o_proj(context)  # type: ignore[no-any-return]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the half-split layout: pairs are (i, i + dim/2)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class GteMlp(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.up_gate_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        up, gate = self.up_gate_proj(hidden).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)  # type: ignore[no-any-return]


class GteLayer(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.attention = GteAttention(config)
        self.attn_ln = _norm(config)
        self.mlp = GteMlp(config)
        self.mlp_ln = _norm(config)

    def forward(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None,
                query_scale: torch.Tensor | None, attend: Attend) -> torch.Tensor:
        hidden = self.attn_ln(hidden + self.attention(hidden, rotary, query_scale, attend))
        return self.mlp_ln(hidden + self.mlp(hidden))  # type: ignore[no-any-return]


class GteEncoder(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(GteLayer(config) for _ in range(config.num_hidden_layers))


class GtePooler(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first_tokens))


@dataclass
class GteOutput:
    """What the padded code path reads from a transformers model's output."""

    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class GteModel(nn.Module):
    """The encoder; parameter names are the checkpoints' (embeddings.*, encoder.layer.N.*)."""

    inv_freq: torch.Tensor

    def __init__(self, config: GteConfig, with_pooler: bool = False) -> None:
        super().__init__()
        self.config = config
        self.embeddings = GteEmbeddings(config)
        self.encoder = GteEncoder(config)
        self.pooler = GtePooler(config) if with_pooler else None
        self.register_buffer("inv_freq", config.inverse_frequencies(), persistent=False)

    def states(self, ids: torch.Tensor, types: torch.Tensor, positions: torch.Tensor,
               lengths: torch.Tensor, attend: Attend) -> torch.Tensor:
        """Token states for any layout: ids, types, positions and each token's
        sequence length share a shape; `attend` knows the layout."""
        hidden = self.embeddings(ids, types, positions)
        rotary = None
        if self.config.position_embedding_type == "rope":
            angles = positions.unsqueeze(-1).float() * self.inv_freq  # [..., dim/2]
            angles = torch.cat((angles, angles), dim=-1).unsqueeze(-2)  # [..., 1 (heads), dim]
            rotary = angles.cos().to(hidden.dtype), angles.sin().to(hidden.dtype)
        query_scale = None
        if self.config.logn_attention_scale:
            # log_{max positions}(length): longer texts than trained sharpen attention.
            scale = lengths.float().log() / math.log(self.config.max_position_embeddings)
            if self.config.logn_attention_clip1:
                scale = scale.clamp(min=1.0)
            query_scale = scale[..., None, None].to(hidden.dtype)
        for layer in self.encoder.layer:
            hidden = layer(hidden, rotary, query_scale, attend)
        return hidden  # type: ignore[no-any-return]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> GteOutput:
        """Padded batches, [batch, length], right-padded (the padded engine path)."""
        mask = attention_mask.bool()
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        lengths = mask.sum(1, keepdim=True).expand_as(input_ids)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        key_mask = mask[:, None, None, :]  # [batch, heads, queries, keys]

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch, heads, length, dim]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2)

        return GteOutput(last_hidden_state=self.states(input_ids, types, positions, lengths, attend))


class GteForSequenceClassification(nn.Module):
    """Parameter names: new.* for the encoder and its pooler, classifier.* for the head."""

    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.new = GteModel(config, with_pooler=True)
        self.classifier = nn.Linear(config.hidden_size, len(config.id2label) or 1)

    def logits(self, first_token_states: torch.Tensor) -> torch.Tensor:
        assert self.new.pooler is not None
        return self.classifier(self.new.pooler(first_token_states))  # type: ignore[no-any-return]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> GteOutput:
        states = self.new(input_ids, attention_mask, token_type_ids).last_hidden_state
        assert states is not None
        return GteOutput(last_hidden_state=states, logits=self.logits(states[:, 0]))


def load(model_dir: Path, config: GteConfig, dtype: torch.dtype) -> GteModel | GteForSequenceClassification:
    model: GteModel | GteForSequenceClassification
    model = GteForSequenceClassification(config) if config.is_classifier else GteModel(config)
    state = read_weights(model_dir)
    if not config.is_classifier:
        # An encoder may be saved bare or under a head's prefix; serve the bare encoder.
        state = {k.removeprefix(CLASSIFIER_BASE): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES) and not k.startswith("classifier.")}
    else:
        state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"GTE weights do not match the architecture: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return model.to(dtype).eval()


class GteUnpadded:
    """GTE on packed batches, for the torch engine's unpadded path (see `backends/varlen.py`)."""

    def __init__(self, model: GteModel | GteForSequenceClassification, kernel: NamedKernel) -> None:
        self.kernel = kernel
        self._model = model
        self._encoder = model.new if isinstance(model, GteForSequenceClassification) else model

    def pack(self, batch: ModelBatch, device: str, put: Upload | None = None) -> PackedBatch:
        return PackedBatch.from_batch(batch, device, padding_idx=None, put=put)  # rotary positions count from 0

    def hidden_states(self, packed: PackedBatch) -> torch.Tensor:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.kernel.run(q, k, v, packed.cu_seqlens, packed.max_length)

        lengths = packed.lengths[packed.seq_index]
        return self._encoder.states(packed.input_ids, packed.token_type_ids, packed.position_ids, lengths, attend)

    def classify(self, packed: PackedBatch) -> torch.Tensor:
        if not isinstance(self._model, GteForSequenceClassification):
            raise ValueError("model is not a classifier")
        return self._model.logits(self.hidden_states(packed)[packed.first_tokens])
