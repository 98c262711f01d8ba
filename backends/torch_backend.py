"""Torch engine: transformers models (and our own GTE, `backends/gte.py`) on CPU
or one CUDA device.

BERT-like encoders and GTE on a GPU run unpadded, all sequences packed into one
row with varlen attention (`backends/varlen.py`), when an installed kernel provides it.
Everything else runs padded SDPA, as length-sorted chunks (`backends/padding.py`).
`EMBEDSERVE_TORCH_ATTENTION` overrides the choice: `auto` (the default), `padded`,
or `varlen` (fail to load unless it can run unpadded; on CPU it uses the exact
per-sequence kernel, for testing). For BERT-like models unpadded,
`EMBEDSERVE_TORCH_LAYERS` picks the layer math (`modules`, the default; `fused`;
`compiled`: backends/layer_math.py) and `EMBEDSERVE_TORCH_GRAPHS=on` replays embed
batches from CUDA graphs captured at start over bucketed shapes (backends/cuda_graphs.py;
`off`, the default, until they have been measured on a GPU; on CPU an eager stand-in).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from embedserve.backends import bgem3, gte, jina, nomic
from embedserve.backends.causal_rerank import YesNoHead, last_states, score_token_ids
from embedserve.backends.base import EmbedOutput, EngineSpec, ModelBatch
from embedserve.backends.cuda_graphs import GraphedEncoder, plan_buckets
from embedserve.backends.device_copies import copies_for
from embedserve.backends.layer_math import LAYER_MATHS
from embedserve.backends.padding import PaddedChunk, PaddedEngine, padded_chunks
from embedserve.backends.pipeline import Pending, ready
from embedserve.backends.varlen import (
    NamedKernel,
    UnpaddedEncoder,
    VarlenEncoder,
    find_fast_kernel,
    pool_packed,
    reference_attention,
    unsupported_reason,
)
from embedserve.proto.codec import F32Array

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
POOLINGS = ("cls", "mean", "last_token", "splade")

# Chunks above this many padded tokens gain nothing on CPU and cost cache misses.
CPU_CHUNK_TOKENS = 8192
# 1024 tokens x a 30k vocabulary of float32 logits is already ~125 MB.
SPLADE_CHUNK_TOKENS = 1024
ATTENTION_MODES = ("auto", "padded", "varlen")
GRAPH_MODES = ("off", "on")
# Graph buckets go up to the router's --max-batch-tokens; this when it is not known.
DEFAULT_GRAPH_TOKENS = 16384
# transformers classes that turn a 2D padding mask into a float [B, 1, L, L] for SDPA
# (~20% of a small model's CPU in `_expand_mask`), but take a [B, 1, L] mask as given
# and only broadcast it to [B, 1, 1, L]: the same attention, built once per row. Read
# in transformers 4.5x's code (the versions pyproject allows); 5.x builds masks anew,
# so there the classes get the 2D mask as before.
BROADCAST_MASK_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})
BROADCAST_MASK_TRANSFORMERS = 4


class TorchBackend(PaddedEngine):
    name = "torch"

    def __init__(self, spec: EngineSpec, trust_remote_code: bool = False) -> None:
        self.device = "cuda:0" if spec.device == "cuda" else "cpu"
        dtype = spec.dtype or ("float16" if self.device.startswith("cuda") else "float32")
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype} is not supported by the {self.name} backend ({', '.join(DTYPES)})")
        if self.device == "cpu" and dtype != "float32":
            raise ValueError(f"dtype {dtype} needs a GPU; the {self.name} backend on CPU runs float32")
        self.dtype = dtype
        if self.device == "cpu":
            torch.set_num_threads(len(os.sched_getaffinity(0)))

        model_dir = spec.model_dir
        # GTE's, NomicBERT's and JinaBERT's transformers code is Hub-only: unless
        # their remote code is asked for (the python engine), run our own implementations.
        native_gte = not trust_remote_code and gte.is_gte(model_dir)
        native_nomic = not trust_remote_code and nomic.is_nomic(model_dir)
        native_jina = not trust_remote_code and jina.is_jina_bert(model_dir)
        native = native_gte or native_nomic or native_jina
        config: Any
        if native_gte:
            config = gte.GteConfig.from_dir(model_dir)
        elif native_nomic:
            config = nomic.NomicConfig.from_dir(model_dir)
        elif native_jina:
            config = jina.JinaBertConfig.from_dir(model_dir)
        else:
            config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        architectures = config.architectures or []
        causal = spec.causal_rerank
        if causal is not None and not any(a.endswith("ForCausalLM") for a in architectures):
            raise ValueError(f"a reranker template needs a ...ForCausalLM checkpoint, not {', '.join(architectures)}")
        # A causal reranker answers Predict like a one-label classifier (backends/causal_rerank.py).
        self._is_classifier = causal is not None or any(a.endswith("Classification") for a in architectures)
        if not self._is_classifier and spec.pooling not in POOLINGS:
            raise ValueError(f"pooling {spec.pooling!r} is not supported by the {self.name} backend")
        self.pooling = spec.pooling

        if native and spec.pooling == "splade":
            raise ValueError(f"SPLADE pooling is not available for {type(config).__name__.removesuffix('Config')} "
                             "models")
        model_cls: type[Any]
        if causal is not None:
            model_cls = AutoModelForCausalLM
        elif self._is_classifier:
            model_cls = AutoModelForSequenceClassification
        elif spec.pooling == "splade":
            model_cls = AutoModelForMaskedLM
        else:
            model_cls = AutoModel
        started = time.monotonic()
        weights_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6 or sum(
            f.stat().st_size for f in model_dir.glob("*.bin")
        ) / 1e6
        logger.info("loading weights from %s (%.0f MB, %s, %s)", model_dir, weights_mb, self.device, dtype)
        self._model: Any
        if native_gte:
            self._model = gte.load(model_dir, config, DTYPES[dtype])
        elif native_nomic:
            self._model = nomic.load(model_dir, config, DTYPES[dtype])
        elif native_jina:
            self._model = jina.load(model_dir, config, DTYPES[dtype])
        else:
            self._model = _load(model_cls, model_dir, DTYPES[dtype], trust_remote_code)
        self._model.eval().to(self.device)
        logger.info("weights loaded in %.1fs", time.monotonic() - started)
        self._yes_no: YesNoHead | None = None
        if causal is not None:
            yes_id, no_id = score_token_ids(model_dir, causal.yes_token, causal.no_token)
            self._yes_no = YesNoHead(self._model, yes_id, no_id)
            # The decoder alone from here: the full LM head is never run (nor kept, unless tied).
            self._model = self._model.base_model
            logger.info("causal reranker: scoring tokens %r (%d) against %r (%d) at the last token",
                        causal.yes_token, yes_id, causal.no_token, no_id)

        self._token_width = int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0))
        # Width of a pooled row: SPLADE pools over the vocabulary.
        self.hidden_size = int(config.vocab_size) if spec.pooling == "splade" else self._token_width
        self._uses_token_types = int(getattr(config, "type_vocab_size", 0) or 0) > 1
        # Pad with the model's own padding id: RoBERTa-like models derive
        # position ids from it.
        self._pad_token_id = int(getattr(config, "pad_token_id", None) or 0)
        # A causal reranker runs padded: its last-token scoring reads right-padded rows.
        self._varlen = None if trust_remote_code or causal else self._unpadded_encoder(DTYPES[dtype])
        self._varlen = self._graphed(self._varlen, spec.max_batch_tokens or DEFAULT_GRAPH_TOKENS)
        bert_family = (not trust_remote_code and not native and not getattr(config, "is_decoder", False)
                       and getattr(config, "model_type", None) in BROADCAST_MASK_MODEL_TYPES
                       and int(transformers.__version__.split(".")[0]) == BROADCAST_MASK_TRANSFORMERS)
        self.broadcast_mask = bert_family and getattr(self._model.config, "_attn_implementation", None) == "sdpa"
        if bert_family and model_cls is AutoModel and getattr(self._model, "pooler", None) is not None:
            # The tanh pooler's output is never read here (pooling works on the token
            # states; classifiers keep theirs); these classes skip it when it is None.
            self._model.pooler = None
        self.attention = f"varlen ({self._varlen.kernel.name})" if self._varlen else "padded sdpa"
        self.attention += _engine_details(self._varlen)
        # bge-m3: its lexical and multi-vector heads run on the same hidden states.
        self._heads: bgem3.M3Heads | None = None
        if not self._is_classifier and spec.pooling != "splade" and bgem3.has_heads(model_dir):
            self._heads = bgem3.M3Heads.load(model_dir, self._token_width, self.device)
        self.sparse_head = self._heads is not None
        self.colbert_dim = self._heads.colbert_dim if self._heads is not None else 0
        self._copies = copies_for(self.device)
        logger.info("attention: %s", self.attention)

    def _unpadded_encoder(self, dtype: torch.dtype) -> UnpaddedEncoder | None:
        mode = os.environ.get("EMBEDSERVE_TORCH_ATTENTION", "auto")
        if mode not in ATTENTION_MODES:
            raise ValueError(f"EMBEDSERVE_TORCH_ATTENTION={mode!r}: choose from {', '.join(ATTENTION_MODES)}")
        if mode == "padded":
            return None
        is_gte = isinstance(self._model, (gte.GteModel, gte.GteForSequenceClassification))
        if is_gte:
            reason = None
        elif isinstance(self._model, (nomic.NomicModel, jina.JinaBertModel)):
            reason = f"{type(self._model).__name__} runs padded only"
        else:
            reason = unsupported_reason(self._model)
        if reason is None and self.pooling == "splade":
            reason = "SPLADE pools over vocabulary logits, which run in padded chunks"
        kernel = find_fast_kernel(self.device, dtype) if reason is None else None
        if reason is None and kernel is None:
            if mode == "varlen" and self.device == "cpu":
                kernel = NamedKernel("reference", reference_attention)
            else:
                reason = f"no varlen attention kernel works on {self.device} in {self.dtype}"
        if kernel is None:
            if mode == "varlen":
                raise ValueError(f"EMBEDSERVE_TORCH_ATTENTION=varlen: {reason}")
            if self.device != "cpu":
                logger.info("running padded: %s", reason)
            return None
        if is_gte:
            return gte.GteUnpadded(self._model, kernel)
        layers = os.environ.get("EMBEDSERVE_TORCH_LAYERS", "modules")
        if layers not in LAYER_MATHS:
            raise ValueError(f"EMBEDSERVE_TORCH_LAYERS={layers!r}: choose from {', '.join(LAYER_MATHS)}")
        return VarlenEncoder(self._model, kernel, layers)

    def _graphed(self, encoder: UnpaddedEncoder | None, max_tokens: int) -> UnpaddedEncoder | None:
        mode = os.environ.get("EMBEDSERVE_TORCH_GRAPHS", "off")
        if mode not in GRAPH_MODES:
            raise ValueError(f"EMBEDSERVE_TORCH_GRAPHS={mode!r}: choose from {', '.join(GRAPH_MODES)}")
        if mode == "off" or not isinstance(encoder, VarlenEncoder) or self._is_classifier:
            return encoder  # GTE and classifiers run eagerly
        graphed = GraphedEncoder(encoder, plan_buckets(max_tokens, encoder.max_positions), self.device)
        graphed.capture()
        return graphed

    @property
    def is_padded(self) -> bool:
        return self._varlen is None

    def health(self) -> None:
        if self.device.startswith("cuda"):
            torch.ones(2, 2, device=self.device).sum().item()

    @torch.inference_mode()
    def embed(self, batch: ModelBatch) -> EmbedOutput:
        if self._is_classifier:
            raise ValueError("model is a classifier: use Predict")
        if batch.raw_indices and self.pooling == "splade":
            raise ValueError("`embed_all` is not available for SPLADE models")
        if (batch.sparse_indices or batch.colbert_indices) and self._heads is None:
            raise ValueError("the model has no bge-m3 sparse and multi-vector heads")
        if self._varlen is not None:
            return self._embed_unpadded(self._varlen, batch)
        pooled: dict[int, F32Array] = {}
        raw: dict[int, F32Array] = {}
        sparse: dict[int, F32Array] = {}
        colbert: dict[int, F32Array] = {}
        for chunk in padded_chunks(batch, self._chunk_tokens(), self._pad_token_id):
            output, mask = self._forward(chunk)
            if self._heads is not None and (batch.sparse_indices or batch.colbert_indices):
                self._padded_heads(self._heads, _hidden_states(output), chunk, batch, sparse, colbert)
            pooled_rows = [row for row, seq in enumerate(chunk.indices) if seq not in batch.raw_indices]
            if pooled_rows:
                mean_mask = mask if chunk.mean_mask is chunk.attention_mask else \
                    torch.from_numpy(chunk.mean_mask).to(self.device)
                values = self._pool(output, mask, mean_mask).float().cpu().numpy()
                for row in pooled_rows:
                    pooled[chunk.indices[row]] = values[row]
            if len(pooled_rows) < len(chunk.indices):
                hidden = _hidden_states(output).float().cpu().numpy()
                for row, seq in enumerate(chunk.indices):
                    if seq in batch.raw_indices:
                        raw[seq] = hidden[row, : int(chunk.lengths[row])]
        return EmbedOutput.assemble(pooled, raw, self.hidden_size, self._token_width, sparse, colbert, self.colbert_dim)

    def _padded_heads(self, heads: bgem3.M3Heads, hidden: torch.Tensor, chunk: PaddedChunk, batch: ModelBatch,
                      sparse: dict[int, F32Array], colbert: dict[int, F32Array]) -> None:
        """The bge-m3 heads on the chunk's rows that ask for them, one device call per
        head; each row keeps its real tokens (padding is computed, then cut)."""
        sparse_rows = [row for row, seq in enumerate(chunk.indices) if seq in batch.sparse_indices]
        if sparse_rows:
            ids = torch.from_numpy(chunk.input_ids[sparse_rows]).to(self.device)
            weights = heads.sparse_weights(hidden[sparse_rows], ids).cpu().numpy()
            for k, row in enumerate(sparse_rows):
                sparse[chunk.indices[row]] = weights[k, : int(chunk.lengths[row])]
        colbert_rows = [row for row, seq in enumerate(chunk.indices) if seq in batch.colbert_indices]
        if colbert_rows:
            vectors = heads.colbert_vectors(hidden[colbert_rows, 1:]).cpu().numpy()
            for k, row in enumerate(colbert_rows):
                colbert[chunk.indices[row]] = vectors[k, : int(chunk.lengths[row]) - 1]  # no CLS vector

    @torch.inference_mode()
    def predict(self, batch: ModelBatch) -> F32Array:
        if not self._is_classifier:
            raise ValueError("model is not a classifier: use Embed")
        if batch.raw_indices:
            raise ValueError("raw token outputs are not available for classifiers")
        if self._yes_no is not None:
            return self._predict_causal(self._yes_no, batch)
        if self._varlen is not None:
            packed = self._varlen.pack(batch, self.device)
            logits: F32Array = self._varlen.classify(packed).float().cpu().numpy()
            return logits
        rows: dict[int, F32Array] = {}
        for chunk in padded_chunks(batch, self._chunk_tokens(), self._pad_token_id):
            output, _ = self._forward(chunk)
            logits = output.logits.float().cpu().numpy()
            for row, seq in enumerate(chunk.indices):
                rows[seq] = logits[row]
        return np.stack([rows[i] for i in range(batch.size)])

    def _predict_causal(self, head: YesNoHead, batch: ModelBatch) -> F32Array:
        rows: dict[int, F32Array] = {}
        for chunk in padded_chunks(batch, self._chunk_tokens(), self._pad_token_id):
            output, mask = self._forward(chunk)
            scores = head(last_states(_hidden_states(output), mask)).cpu().numpy()
            for row, seq in enumerate(chunk.indices):
                rows[seq] = scores[row]
        return np.stack([rows[i] for i in range(batch.size)])

    @property
    def pipelined(self) -> bool:
        """Whether the server should launch embed batches ahead (backends/pipeline.py):
        on CUDA, unpadded. On CPU there is nothing to overlap."""
        return self._varlen is not None and self.device.startswith("cuda") and not self._is_classifier

    @torch.inference_mode()
    def launch_embed(self, batch: ModelBatch) -> Pending[EmbedOutput]:
        """`embed`, returning once the batch is queued on the device."""
        wants_missing_heads = (batch.sparse_indices or batch.colbert_indices) and self._heads is None
        if self._varlen is None or self._is_classifier or wants_missing_heads:
            return ready(self.embed(batch))  # nothing to launch ahead; embed raises what it must
        return self._launch_unpadded(self._varlen, batch)

    def _embed_unpadded(self, encoder: UnpaddedEncoder, batch: ModelBatch) -> EmbedOutput:
        return self._launch_unpadded(encoder, batch).result()

    def _launch_unpadded(self, encoder: UnpaddedEncoder, batch: ModelBatch) -> Pending[EmbedOutput]:
        packed = encoder.pack(batch, self.device, put=self._copies.upload)
        hidden = encoder.hidden_states(packed)
        pooled_rows = [seq for seq in range(batch.size) if seq not in batch.raw_indices]
        results: list[torch.Tensor] = []
        if pooled_rows:
            results.append(pool_packed(hidden, packed, self.pooling, batch.pool_starts))
        if batch.raw_indices:
            # One device-to-host copy, then slices; a copy even in float32, as a graph
            # replay's output buffer is overwritten by the next batch.
            results.append(hidden.to(torch.float32, copy=True))
        heads = self._heads
        if heads is not None and batch.sparse_indices:
            index = self._copies.upload(bgem3.token_index(batch.cu_seq_lengths, batch.sparse_indices, False))
            results.append(heads.sparse_weights(hidden[index], packed.input_ids[index]))
        if heads is not None and batch.colbert_indices:
            index = self._copies.upload(bgem3.token_index(batch.cu_seq_lengths, batch.colbert_indices, True))
            results.append(heads.colbert_vectors(hidden[index]))
        copied = self._copies.download(results)

        def finish() -> EmbedOutput:
            arrays = copied()
            pooled: dict[int, F32Array] = {}
            raw: dict[int, F32Array] = {}
            if pooled_rows:
                values = arrays.pop(0)
                pooled = {seq: values[seq] for seq in pooled_rows}
            if batch.raw_indices:
                states, bounds = arrays.pop(0), batch.cu_seq_lengths
                for seq in batch.raw_indices:
                    raw[seq] = states[int(bounds[seq]) : int(bounds[seq + 1])]
            output = EmbedOutput.assemble(pooled, raw, self.hidden_size, self._token_width)
            if batch.sparse_indices:
                output = replace(output, sparse_weights=arrays.pop(0))
            if batch.colbert_indices:
                output = replace(output, colbert_rows=arrays.pop(0))
            return output

        return Pending(finish)

    def _forward(self, chunk: PaddedChunk) -> tuple[Any, torch.Tensor]:
        """The model's output on one chunk, and its [n, max_len] padding mask on the device."""
        mask = torch.from_numpy(chunk.attention_mask).to(self.device)
        padded = int(chunk.lengths.min()) < chunk.attention_mask.shape[1]
        inputs: dict[str, Any] = {
            "input_ids": torch.from_numpy(chunk.input_ids).to(self.device),
            # Without padding transformers drops the 2D mask for SDPA altogether.
            "attention_mask": mask.unsqueeze(1) if self.broadcast_mask and padded else mask,
        }
        if self._uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(chunk.token_type_ids).to(self.device)
        if self._yes_no is not None:
            inputs["use_cache"] = False  # one forward pass: a KV cache would only cost memory
        return self._model(**inputs), mask

    def _pool(self, output: Any, mask: torch.Tensor, mean_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "splade":
            # max over real tokens of log(1 + relu(logits)); padding contributes 0.
            activations = torch.log1p(torch.relu(output.logits.float())) * mask.unsqueeze(-1)
            return activations.max(dim=1).values
        hidden = _hidden_states(output)
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "mean":
            weights = mean_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * weights).sum(dim=1, dtype=torch.float32)
            return summed / weights.sum(dim=1, dtype=torch.float32).clamp(min=1.0)
        last = mask.sum(dim=1) - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _chunk_tokens(self) -> int | None:
        if self.pooling == "splade":
            return SPLADE_CHUNK_TOKENS  # logits are tokens x vocabulary floats
        return CPU_CHUNK_TOKENS if self.device == "cpu" else None


def _engine_details(encoder: UnpaddedEncoder | None) -> str:
    """What the log's attention line adds beyond the kernel: non-default layer math,
    CUDA graphs and why they are off."""
    details = []
    inner = encoder.inner if isinstance(encoder, GraphedEncoder) else encoder
    if isinstance(inner, VarlenEncoder) and inner.layers != "modules":
        details.append(f"{inner.layers} layers")
    if isinstance(inner, VarlenEncoder) and inner.fused is not None and inner.fused.compile_failure:
        details.append(f"compile failed: {inner.fused.compile_failure}")
    if isinstance(encoder, GraphedEncoder):
        details.append(f"{encoder.captured} graphs in {encoder.capture_seconds:.1f}s" if encoder.captured
                       else f"graphs failed: {encoder.failure}")
    return f", {', '.join(details)}" if details else ""


def _hidden_states(output: Any) -> torch.Tensor:
    # Remote-code models may return a plain tuple whose first item is the states.
    hidden: torch.Tensor = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    return hidden


def _load(model_cls: type[Any], model_dir: Any, dtype: torch.dtype, trust_remote_code: bool) -> Any:
    try:
        return model_cls.from_pretrained(
            model_dir, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code
        )
    except ValueError as exc:
        if "attention" not in str(exc).lower() and "sdpa" not in str(exc).lower():
            raise
        # Some architectures (MPNet, remote code) have no SDPA path yet.
        logger.info("SDPA attention unavailable (%s); using the model's default attention", exc)
        return model_cls.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
