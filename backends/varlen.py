"""Unpadded (varlen) forward for BERT-like encoders.

A batch runs as one packed row of all its tokens: every layer but attention is
token-wise, and attention sees the sequence boundaries through cumulative
lengths (`cu_seqlens`), so no compute or memory goes to padding and the router
budgets the real token sum. The encoder is driven through the loaded
transformers modules (embeddings, each layer's projections, norms and MLP), so
weights, dtype and activation functions are exactly the checkpoint's.

The attention kernel comes from whatever is installed, first that works:
flash-attn's `flash_attn_varlen_func`, torch's `varlen_attn`, then torch's
flash-attention op. Each is checked against plain SDPA on a small batch before
it is trusted; with none, the torch engine pads. `reference_attention` (one SDPA
call per sequence) is the CPU kernel that tests and `EMBEDSERVE_TORCH_ATTENTION=varlen`
on CPU use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from embedserve.backends.base import ModelBatch
from embedserve.backends.layer_math import LAYER_MATHS, FusedLayers

logger = logging.getLogger(__name__)

# q, k, v: [tokens, heads, head_dim]; cu_seqlens: int32 [n + 1]; returns [tokens, heads, head_dim].
AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]

# Copies one host array to the device.
Upload = Callable[[np.ndarray], torch.Tensor]

# Model type -> whether positions follow RoBERTa (count from padding_idx + 1)
# rather than BERT (count from 0).
BERT_LIKE = {"bert": False, "roberta": True, "xlm-roberta": True, "camembert": True}


@dataclass(frozen=True)
class NamedKernel:
    name: str
    run: AttentionKernel


@dataclass(frozen=True)
class PackedBatch:
    """A ModelBatch as device tensors: tokens back to back, no padding."""

    input_ids: torch.Tensor  # int64 [tokens]
    token_type_ids: torch.Tensor  # int64 [tokens]
    position_ids: torch.Tensor  # int64 [tokens], restarting at each sequence
    cu_seqlens: torch.Tensor  # int32 [n + 1]
    seq_index: torch.Tensor  # int64 [tokens]: the sequence each token belongs to
    lengths: torch.Tensor  # int64 [n]
    max_length: int
    # The same batch padded to a captured CUDA-graph bucket (backends/cuda_graphs.py);
    # this batch is its prefix: the same tokens and sequences first, padding after.
    bucket: PackedBatch | None = None

    @classmethod
    def from_batch(cls, batch: ModelBatch, device: str, padding_idx: int | None, put: Upload | None = None) -> PackedBatch:
        """`padding_idx` set: RoBERTa-style positions, else BERT's 0, 1, 2, ...
        `put` moves an array to the device (backends/pipeline.py); default: a plain copy."""
        lengths = batch.lengths.astype(np.int64)
        starts = np.repeat(batch.cu_seq_lengths[:-1].astype(np.int64), lengths)
        if padding_idx is None:
            positions = np.arange(len(batch.input_ids), dtype=np.int64) - starts
        else:
            # As transformers derives them: non-padding tokens count up from
            # padding_idx + 1, and a padding id inside a text keeps padding_idx.
            real = batch.input_ids != padding_idx
            seen = np.concatenate([[0], np.cumsum(real, dtype=np.int64)])
            counted = seen[1:] - seen[starts]
            positions = np.where(real, padding_idx + counted, padding_idx)
        seq_index = np.repeat(np.arange(batch.size, dtype=np.int64), lengths)

        if put is None:
            def put(array: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)

        return cls(
            input_ids=put(batch.input_ids.astype(np.int64)),
            token_type_ids=put(batch.token_type_ids.astype(np.int64)),
            position_ids=put(positions),
            cu_seqlens=put(batch.cu_seq_lengths.astype(np.int32)),
            seq_index=put(seq_index),
            lengths=put(lengths),
            max_length=int(batch.max_length),
        )

    @property
    def first_tokens(self) -> torch.Tensor:
        return self.cu_seqlens[:-1].long()

    @property
    def last_tokens(self) -> torch.Tensor:
        return self.cu_seqlens[1:].long() - 1


class UnpaddedEncoder(Protocol):
    """A model driven on packed batches: `VarlenEncoder` for BERT-like
    transformers models, `backends.gte.GteUnpadded` for GTE."""

    kernel: NamedKernel

    def pack(self, batch: ModelBatch, device: str, put: Upload | None = None) -> PackedBatch: ...

    def hidden_states(self, packed: PackedBatch) -> torch.Tensor: ...

    def classify(self, packed: PackedBatch) -> torch.Tensor: ...


def unsupported_reason(model: Any) -> str | None:
    """Why this model cannot run unpadded, or None when it can."""
    config = model.config
    if config.model_type not in BERT_LIKE:
        return f"model type {config.model_type!r} is not BERT-like"
    if getattr(config, "position_embedding_type", None) not in (None, "absolute"):
        return f"position embedding type {config.position_embedding_type!r} is not absolute"
    if getattr(config, "is_decoder", False):
        return "the model is configured as a decoder"
    base = model.base_model
    if not (hasattr(base, "embeddings") and hasattr(base, "encoder") and hasattr(base.encoder, "layer")):
        return f"{type(base).__name__} has no BERT-like embeddings and encoder layers"
    return None


class VarlenEncoder:
    """Runs a loaded BERT-like transformers model on packed batches."""

    def __init__(self, model: Any, kernel: NamedKernel, layers: str = "modules") -> None:
        """`layers`: how each layer's math runs (backends/layer_math.py): `modules`
        calls the transformers modules; `fused` one QKV projection per layer;
        `epilogue` that, GELU inside the GEMM; `compiled` the work after attention
        compiled by torch.compile."""
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"unpadded attention unavailable: {reason}")
        if layers not in LAYER_MATHS:
            raise ValueError(f"layer math {layers!r}: choose from {', '.join(LAYER_MATHS)}")
        self.kernel = kernel
        self._model = model
        self._base = model.base_model
        config = model.config
        self._padding_idx = int(config.pad_token_id) if BERT_LIKE[config.model_type] else None
        self._model_type = config.model_type
        self.pad_token_id = int(getattr(config, "pad_token_id", None) or 0)
        self.max_positions = int(config.max_position_embeddings) - (self._padding_idx + 1 if self._padding_idx is not None else 0)
        self.fused: FusedLayers | None = None
        if layers != "modules":
            self.fused = FusedLayers.from_modules(self._base.encoder.layer, layers)
        self.layers = layers if self.fused is None else self.fused.math

    def pack(self, batch: ModelBatch, device: str, put: Upload | None = None) -> PackedBatch:
        return PackedBatch.from_batch(batch, device, self._padding_idx, put)

    def hidden_states(self, packed: PackedBatch) -> torch.Tensor:
        """The last layer's states, [tokens, hidden]."""
        embeddings = self._base.embeddings
        hidden = embeddings.word_embeddings(packed.input_ids)
        if getattr(embeddings, "token_type_embeddings", None) is not None:
            hidden = hidden + embeddings.token_type_embeddings(packed.token_type_ids)
        hidden = hidden + embeddings.position_embeddings(packed.position_ids)
        hidden = embeddings.LayerNorm(hidden)
        if self.fused is not None:
            return self.fused.run(hidden, lambda q, k, v: self.kernel.run(q, k, v, packed.cu_seqlens, packed.max_length))
        for layer in self._base.encoder.layer:
            hidden = self._layer(layer, hidden, packed)
        return hidden  # type: ignore[no-any-return]

    def classify(self, packed: PackedBatch) -> torch.Tensor:
        """Sequence classification logits, [n, labels], from the first token's state."""
        first = self.hidden_states(packed)[packed.first_tokens].unsqueeze(1)  # [n, 1, hidden]
        if self._model_type == "bert":
            return self._model.classifier(self._base.pooler(first))  # type: ignore[no-any-return]
        return self._model.classifier(first)  # type: ignore[no-any-return]

    def _layer(self, layer: Any, hidden: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
        projections = layer.attention.self
        heads = int(projections.num_attention_heads)
        head_dim = int(projections.attention_head_size)
        tokens = hidden.shape[0]
        q = projections.query(hidden).view(tokens, heads, head_dim)
        k = projections.key(hidden).view(tokens, heads, head_dim)
        v = projections.value(hidden).view(tokens, heads, head_dim)
        context = self.kernel.run(q, k, v, packed.cu_seqlens, packed.max_length).reshape(tokens, heads * head_dim)
        attended = layer.attention.output(context, hidden)
        return layer.output(layer.intermediate(attended), attended)  # type: ignore[no-any-return]


def pool_packed(
    hidden: torch.Tensor, packed: PackedBatch, pooling: str, pool_starts: np.ndarray | None = None
) -> torch.Tensor:
    """One float32 row per sequence from packed states; mean pooling counts each
    sequence's tokens from `pool_starts` on (all of them when None)."""
    if pooling == "cls":
        return hidden[packed.first_tokens].float()
    if pooling == "last_token":
        return hidden[packed.last_tokens].float()
    if pooling == "mean":
        n = packed.lengths.shape[0]
        sums = torch.zeros(n, hidden.shape[1], dtype=torch.float32, device=hidden.device)
        if pool_starts is None:
            sums.index_add_(0, packed.seq_index, hidden.float())
            return sums / packed.lengths.unsqueeze(1).to(torch.float32)
        starts = torch.from_numpy(pool_starts.astype(np.int64)).to(hidden.device)
        offsets = torch.arange(hidden.shape[0], device=hidden.device) - packed.first_tokens[packed.seq_index]
        counted = (offsets >= starts[packed.seq_index]).to(torch.float32)
        sums.index_add_(0, packed.seq_index, hidden.float() * counted.unsqueeze(1))
        counts = torch.zeros(n, dtype=torch.float32, device=hidden.device).index_add_(0, packed.seq_index, counted)
        return sums / counts.clamp(min=1.0).unsqueeze(1)
    raise ValueError(f"pooling {pooling!r} has no unpadded implementation")


# Attention kernels


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    """One SDPA call per sequence: exact, slow; for CPU and for checking the fast kernels."""
    bounds = cu.tolist()
    out = torch.empty_like(q)
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue  # an empty sequence: CUDA-graph buckets pad with them
        # [len, heads, dim] -> [heads, len, dim]
        query, key, value = (t[start:end].transpose(0, 1) for t in (q, k, v))
        out[start:end] = F.scaled_dot_product_attention(query, key, value).transpose(0, 1)
    return out


def _flash_attn_kernel() -> AttentionKernel:
    from flash_attn import flash_attn_varlen_func

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
        return flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len)  # type: ignore[no-any-return]

    return run


def _torch_varlen_kernel() -> AttentionKernel:
    from torch.nn.attention.varlen import varlen_attn

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
        return varlen_attn(q, k, v, cu, cu, max_len, max_len)  # type: ignore[return-value]

    return run


def _torch_flash_op_kernel() -> AttentionKernel:
    op = torch.ops.aten._flash_attention_forward

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
        # (q, k, v, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal, return_debug_mask)
        return op(q, k, v, cu, cu, max_len, max_len, 0.0, False, False)[0]  # type: ignore[no-any-return]

    return run


FAST_KERNELS: dict[str, Callable[[], AttentionKernel]] = {
    "flash-attn": _flash_attn_kernel,
    "torch-varlen": _torch_varlen_kernel,
    "torch-flash-op": _torch_flash_op_kernel,
}


def kernel_error(kernel: AttentionKernel, device: str, dtype: torch.dtype, seed: int = 0) -> float:
    """Largest absolute difference to per-sequence SDPA in float32 on a mixed-length batch."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [1, 7, 64, 3, 130]
    cu = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32, device=device)
    q, k, v = (torch.randn(sum(lengths), 4, 64, generator=generator).to(device, dtype) for _ in range(3))
    got = kernel(q, k, v, cu, max(lengths)).float()
    expected = reference_attention(q.float(), k.float(), v.float(), cu, max(lengths))
    return float((got - expected).abs().max())


def find_fast_kernel(device: str, dtype: torch.dtype) -> NamedKernel | None:
    """The first installed varlen kernel that computes attention correctly here."""
    if not device.startswith("cuda") or dtype not in (torch.float16, torch.bfloat16):
        return None  # flash-attention kernels are CUDA, half precision only
    tolerance = 2e-2 if dtype == torch.bfloat16 else 5e-3
    for name, make in FAST_KERNELS.items():
        try:
            kernel = make()
            error = kernel_error(kernel, device, dtype)
        except Exception as exc:  # noqa: BLE001 - missing package, unsupported GPU, old torch: try the next
            logger.info("varlen kernel %s unavailable: %s", name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        if error > tolerance:
            logger.warning("varlen kernel %s is off by %.3g from SDPA; not using it", name, error)
            continue
        return NamedKernel(name, kernel)
    return None
