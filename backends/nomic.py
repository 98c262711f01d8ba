"""NomicBERT, config.json model type "nomic_bert" (nomic-embed-text-v1, v1.5), run natively.

Like GTE (backends/gte.py), its transformers code lives only in a Hub repository
(auto_map); this is our own implementation with the checkpoints' parameter names,
so the torch engine loads the weights without fetching or trusting that code.

The architecture: a post-norm BERT-like encoder. Word (+ token type) embeddings
and a LayerNorm (`emb_ln`); rotary positions (rotate-half, not interleaved) on
queries and keys from one packed `Wqkv`; a SwiGLU MLP, fc2(fc11(x) * silu(fc12(x)))
(or fc2(act(fc1(x))) for a non-gated activation); biases only where the config's
`qkv_proj_bias` / `mlp_fc1_bias` / `mlp_fc2_bias` ask. The variants TEI also leaves
out (pre-norm, partial or interleaved rotary, dynamic NTK scaling, mixture of
experts) are refused at load with a pointer to `--backend python`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from embedserve.backends.checkpoint import read_config, read_weights

MODEL_TYPE = "nomic_bert"
GATED_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu"}
# A pretraining checkpoint nests the encoder under "bert." and adds a head.
BASE_PREFIX = "bert."
IGNORED_PREFIXES = ("cls.", "lm_head.", "pooler.")


def is_nomic(model_dir: Path) -> bool:
    return (read_config(model_dir) or {}).get("model_type") == MODEL_TYPE


@dataclass(frozen=True)
class NomicConfig:
    """The config.json fields the architecture reads (nomic_bert's own key names)."""

    vocab_size: int = 30528
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12
    n_inner: int | None = None  # None: 4 x n_embd
    n_positions: int = 8192
    type_vocab_size: int = 2
    activation_function: str = "swiglu"
    layer_norm_epsilon: float = 1e-12
    rotary_emb_base: float = 10000.0
    rotary_emb_fraction: float = 1.0
    rotary_emb_interleaved: bool = False
    rotary_scaling_factor: float | None = None
    qkv_proj_bias: bool = True
    mlp_fc1_bias: bool = True
    mlp_fc2_bias: bool = True
    prenorm: bool = False
    causal: bool = False
    num_experts: int = 0
    pad_token_id: int = 0
    architectures: list[str] = field(default_factory=list)
    model_type: str = MODEL_TYPE

    @classmethod
    def from_dir(cls, model_dir: Path) -> NomicConfig:
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        config = cls(**{name: raw[name] for name in cls.__dataclass_fields__ if raw.get(name) is not None})
        unsupported = [name for name, off in (
            ("prenorm", config.prenorm), ("causal", config.causal),
            ("rotary_emb_interleaved", config.rotary_emb_interleaved),
            ("rotary_emb_fraction != 1", config.rotary_emb_fraction != 1.0),
            ("rotary_scaling_factor", config.rotary_scaling_factor is not None),
            ("num_experts", config.num_experts > 0),
            ("a classifier head", any(a.endswith("Classification") for a in config.architectures)),
        ) if off]
        if unsupported:
            raise ValueError(f"NomicBERT with {', '.join(unsupported)} is not implemented natively; "
                             "use --backend python to run the model's own code")
        if config.activation_function not in GATED_ACTIVATIONS and config.activation_function not in ACT2FN:
            raise ValueError(f"NomicBERT activation {config.activation_function!r} is not supported")
        return config

    # The names the torch engine reads off any config.
    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def intermediate_size(self) -> int:
        return self.n_inner or 4 * self.n_embd


@dataclass
class NomicOutput:
    """What the padded engine path reads from a model's output."""

    last_hidden_state: torch.Tensor


class NomicAttention(nn.Module):
    def __init__(self, config: NomicConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = config.n_head, config.head_dim
        self.Wqkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.qkv_proj_bias)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.qkv_proj_bias)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                key_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        qkv = self.Wqkv(hidden).view(batch, length, 3, self.heads, self.head_dim)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [batch, heads, length, dim]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, width))  # type: ignore[no-any-return]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class NomicMLP(nn.Module):
    def __init__(self, config: NomicConfig) -> None:
        super().__init__()
        inner = config.intermediate_size
        gate = GATED_ACTIVATIONS.get(config.activation_function)
        self.gated = gate is not None
        if self.gated:
            self.fc11 = nn.Linear(config.n_embd, inner, bias=config.mlp_fc1_bias)
            self.fc12 = nn.Linear(config.n_embd, inner, bias=config.mlp_fc1_bias)
        else:
            self.fc1 = nn.Linear(config.n_embd, inner, bias=config.mlp_fc1_bias)
        self.act = ACT2FN[gate or config.activation_function]
        self.fc2 = nn.Linear(inner, config.n_embd, bias=config.mlp_fc2_bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.fc2(self.fc11(hidden) * self.act(self.fc12(hidden)))  # type: ignore[no-any-return]
        return self.fc2(self.act(self.fc1(hidden)))  # type: ignore[no-any-return]


class NomicBlock(nn.Module):
    def __init__(self, config: NomicConfig) -> None:
        super().__init__()
        self.attn = NomicAttention(config)
        self.mlp = NomicMLP(config)
        self.norm1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.norm2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                key_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.norm1(hidden + self.attn(hidden, cos, sin, key_mask))
        return self.norm2(hidden + self.mlp(hidden))  # type: ignore[no-any-return]


class NomicEncoder(nn.Module):
    def __init__(self, config: NomicConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([NomicBlock(config) for _ in range(config.n_layer)])


class NomicEmbeddings(nn.Module):
    def __init__(self, config: NomicConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.n_embd)
                                      if config.type_vocab_size > 0 else None)


class NomicModel(nn.Module):
    """The encoder, on right-padded [batch, length] inputs (the padded engine path)."""

    def __init__(self, config: NomicConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = NomicEmbeddings(config)
        self.emb_ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.encoder = NomicEncoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> NomicOutput:
        hidden = self.embeddings.word_embeddings(input_ids)
        if self.embeddings.token_type_embeddings is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            hidden = hidden + self.embeddings.token_type_embeddings(types)
        hidden = self.emb_ln(hidden)
        # Angles in float32 whatever the weights' dtype: positions reach the thousands.
        dim, device = self.config.head_dim, input_ids.device
        frequencies = torch.pow(self.config.rotary_emb_base,
                                -torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
        positions = torch.arange(input_ids.shape[1], device=device, dtype=torch.float32)
        angles = torch.outer(positions, frequencies)
        angles = torch.cat([angles, angles], dim=-1)
        cos, sin = angles.cos().to(hidden.dtype), angles.sin().to(hidden.dtype)
        key_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.encoder.layers:
            hidden = layer(hidden, cos, sin, key_mask)
        return NomicOutput(last_hidden_state=hidden)


def load(model_dir: Path, config: NomicConfig, dtype: torch.dtype) -> NomicModel:
    model = NomicModel(config)
    state = {k.removeprefix(BASE_PREFIX): v for k, v in read_weights(model_dir).items()}
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"NomicBERT weights do not match the architecture: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return model.to(dtype).eval()


