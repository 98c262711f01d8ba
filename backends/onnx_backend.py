"""ONNX Runtime engine: the fastest CPU path, CUDA when onnxruntime-gpu is installed.

The model comes from `onnx/model.onnx` or `model.onnx` in the model directory;
without one it is exported once with optimum into the cache folder and reused
on the next start. On CPU, BERT-like graphs also get onnxruntime's transformer
fusions, and `--dtype int8` a dynamic quantization (backends/int8_recipe.py), each
cached the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from embedserve.backends.base import EmbedOutput, EngineSpec, ModelBatch
from embedserve.backends.onnx_cache import OnnxCache
from embedserve.backends.padding import PaddedEngine, padded_chunks
from embedserve.backends.pooling import pool
from embedserve.proto.codec import F32Array

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "last_token", "splade")
DTYPES = ("float32", "int8")
# Model types optimum exports and onnxruntime's BERT fusions understand.
FUSABLE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
# Smaller chunks keep a layer's activations nearer the cores' caches: on 2 cores,
# 2048 ran ~5-10% faster than 8192 in float32 and int8 (bench/CPU_NOTES.md, issue 16).
CPU_CHUNK_TOKENS = 2048
SPLADE_CHUNK_TOKENS = 1024
HIDDEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
# onnxruntime's CPU SkipLayerNormalization kernel is slower than the Add and
# LayerNormalization it fuses: without it MiniLM ran ~1.1x faster in float32 and
# ~1.2x in int8 (bench/CPU_NOTES.md, issue 16). So neither the transformer optimizer
# nor the session (which would fuse it again) makes one on CPU.
CPU_DISABLED_FUSIONS = ("SkipLayerNormFusion",)
# The cache step of the fused graph; renamed whenever the fusions change, so a graph
# fused the old way is never reused.
OPTIMIZED_STEP = "optimized-no-skip-layer-norm"


class OnnxBackend(PaddedEngine):
    name = "onnx"

    def __init__(self, spec: EngineSpec) -> None:
        model_dir, device, pooling, cache_dir = spec.model_dir, spec.device, spec.pooling, spec.cache_dir
        dtype = spec.dtype or "float32"
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype} is not supported by the onnx backend ({', '.join(DTYPES)})")
        config = json.loads((model_dir / "config.json").read_text())
        # Code shipped beside a type transformers implements (gte-Qwen2's Qwen2) is
        # exported as transformers' class; only code for an unknown type stops here.
        if config.get("auto_map") and not (model_dir / "onnx" / "model.onnx").is_file() \
                and not (model_dir / "model.onnx").is_file() and not _transformers_has(config.get("model_type")):
            raise ValueError(f"model type {config.get('model_type')!r} ships its own code (auto_map), which the ONNX "
                             "export does not run; use --backend torch (GTE) or python")
        architectures = config.get("architectures") or []
        self._is_classifier = any(str(a).endswith("Classification") for a in architectures)
        if not self._is_classifier and pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not supported by the onnx backend")
        self.pooling = pooling
        self.dtype = dtype
        self._pad_token_id = int(config.get("pad_token_id") or 0)
        self._model_type = str(config.get("model_type", ""))
        task = "text-classification" if self._is_classifier else "fill-mask" if pooling == "splade" else "feature-extraction"

        providers = ["CPUExecutionProvider"]
        self.device = "cpu"
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("the onnx backend needs onnxruntime-gpu for a GPU (pip install embedserve[gpu])")
            providers.insert(0, "CUDAExecutionProvider")
            self.device = "cuda:0"

        started = time.monotonic()
        cache = OnnxCache.at(cache_dir, spec.cache_max_bytes)
        chain = [resolve_onnx_model(model_dir, task, cache)]
        if self.device == "cpu" and self._model_type in FUSABLE_MODEL_TYPES:
            chain.append(optimized_model(chain[-1], config, cache))
        if dtype == "int8":
            chain.append(quantized_model(chain[-1], model_dir, cache))
        path = chain[-1]
        # The whole chain stays: the next start looks up each step by its source.
        cache.evict(in_use=[p.parent for p in chain])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.device == "cpu":
            self._session = cpu_session(path, options)
        else:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        logger.info("onnx model %s loaded in %.1fs (%s)", path.name, time.monotonic() - started, providers[0])

        self._input_names = {i.name for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        if self._is_classifier or pooling == "splade":
            if "logits" not in outputs:
                raise ValueError(f"the onnx model has no logits output (outputs: {outputs})")
            self._output = "logits"
        else:
            found = [name for name in HIDDEN_OUTPUTS if name in outputs]
            if not found:
                raise ValueError(f"the onnx model has no hidden-state output (outputs: {outputs})")
            self._output = found[0]
        self._token_width = int(config.get("hidden_size") or config.get("dim") or 0)
        self.hidden_size = int(config["vocab_size"]) if pooling == "splade" else self._token_width

    def health(self) -> None:
        return None

    def embed(self, batch: ModelBatch) -> EmbedOutput:
        if self._is_classifier:
            raise ValueError("model is a classifier: use Predict")
        if batch.raw_indices and self.pooling == "splade":
            raise ValueError("`embed_all` is not available for SPLADE models")
        pooled: dict[int, F32Array] = {}
        raw: dict[int, F32Array] = {}
        for chunk in padded_chunks(batch, self._chunk_tokens(), self._pad_token_id):
            states = self._forward(chunk.input_ids, chunk.token_type_ids, chunk.attention_mask)
            pooled_rows = [row for row, seq in enumerate(chunk.indices) if seq not in batch.raw_indices]
            if pooled_rows:
                values = pool(self.pooling, states[pooled_rows], chunk.attention_mask[pooled_rows],
                              chunk.mean_mask[pooled_rows])
                for value, row in zip(values, pooled_rows):
                    pooled[chunk.indices[row]] = value
            for row, seq in enumerate(chunk.indices):
                if seq in batch.raw_indices:
                    raw[seq] = states[row, : int(chunk.lengths[row])]
        return EmbedOutput.assemble(pooled, raw, self.hidden_size, self._token_width)

    def predict(self, batch: ModelBatch) -> F32Array:
        if not self._is_classifier:
            raise ValueError("model is not a classifier: use Embed")
        rows: dict[int, F32Array] = {}
        for chunk in padded_chunks(batch, self._chunk_tokens(), self._pad_token_id):
            logits = self._forward(chunk.input_ids, chunk.token_type_ids, chunk.attention_mask)
            for row, seq in enumerate(chunk.indices):
                rows[seq] = logits[row]
        return np.stack([rows[i] for i in range(batch.size)]).astype(np.float32)

    def _forward(self, input_ids: np.ndarray, token_type_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = token_type_ids
        if "position_ids" in self._input_names:
            feed["position_ids"] = np.broadcast_to(np.arange(input_ids.shape[1], dtype=np.int64), input_ids.shape)
        (output,) = self._session.run([self._output], feed)
        return np.asarray(output, dtype=np.float32)

    def _chunk_tokens(self) -> int | None:
        if self.pooling == "splade":
            return SPLADE_CHUNK_TOKENS
        return CPU_CHUNK_TOKENS if self.device == "cpu" else None


def _transformers_has(model_type: object) -> bool:
    from transformers import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


# ------------------------------------------------------------------ model files and cache


def resolve_onnx_model(model_dir: Path, task: str, cache: OnnxCache) -> Path:
    for candidate in (model_dir / "onnx" / "model.onnx", model_dir / "model.onnx"):
        if candidate.is_file():
            return candidate
    entry = cache.export_entry(model_dir, task)
    target = entry / "model.onnx"
    if target.is_file():
        logger.info("reusing the ONNX export cached at %s", entry)
        cache.mark_used(entry)
        return target
    logger.info("no ONNX file in %s: exporting it once with optimum (cached at %s)", model_dir, entry)
    started = time.monotonic()
    from optimum.exporters.onnx import main_export

    # Export into a scratch folder and rename it into place, so a crash midway
    # never leaves a half-written model behind for the next start.
    scratch = cache.scratch_dir()
    try:
        with quiet_third_party():
            main_export(str(model_dir), output=scratch, task=task, library_name="transformers", do_validation=False)
        if not (scratch / "model.onnx").is_file():
            raise ValueError(f"optimum produced no model.onnx for task {task}")
        try:
            os.replace(scratch, entry)
        except OSError:
            # Another backend (one per GPU) finished the same export first: use its copy.
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("exported in %.1fs", time.monotonic() - started)
    cache.mark_used(entry)
    return target


def cpu_session(path: Path, options: ort.SessionOptions, fuse_skip_layer_norm: bool = False) -> ort.InferenceSession:
    """A CPU session of `path` that leaves CPU_DISABLED_FUSIONS undone (unless asked to
    fuse SkipLayerNormalization, for the bench's comparison): the engine and the benches
    that time it build theirs here, so they run the same graph."""
    disabled = [] if fuse_skip_layer_norm else list(CPU_DISABLED_FUSIONS)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def optimized_model(path: Path, config: dict[str, Any], cache: OnnxCache) -> Path:
    entry = cache.derived_entry(path, OPTIMIZED_STEP)
    target = entry / "model.onnx"
    if target.is_file():
        cache.mark_used(entry)
        return target
    try:
        with quiet_third_party():
            _save_atomically(lambda p: fuse_transformer(path, p, config), target)
    except Exception as exc:  # an unfusable graph still runs, just slower
        logger.warning("transformer fusions failed (%s); using the plain export", exc)
        return path
    logger.info("applied onnxruntime transformer fusions: %s", target)
    cache.mark_used(entry)
    return target


def fuse_transformer(path: Path, target: Path, config: dict[str, Any], skip_layer_norm: bool = False) -> None:
    """onnxruntime's BERT fusions of `path`, saved to `target`; SkipLayerNormalization only
    when asked (bench/int8_recipes.py times it against the engine's graph)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fusions = FusionOptions("bert")
    fusions.enable_skip_layer_norm = skip_layer_norm
    heads = int(config.get("num_attention_heads") or 0)
    hidden = int(config.get("hidden_size") or 0)
    optimized = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0,
                               optimization_options=fusions)
    optimized.save_model_to_file(str(target))


def quantized_model(path: Path, model_dir: Path, cache: OnnxCache) -> Path:
    """`path` quantized by the int8 recipe (backends/int8_recipe.py); its cache entry
    is named after the recipe, so a changed recipe never reuses an older model."""
    from embedserve.backends.int8_recipe import INT8_RECIPE, quantize

    entry = cache.derived_entry(path, INT8_RECIPE.cache_step)
    target = entry / "model.onnx"
    if target.is_file():
        cache.mark_used(entry)
        return target
    with quiet_third_party():
        _save_atomically(lambda p: quantize(path, p, INT8_RECIPE, model_dir), target)
    logger.info("quantized to int8 (%s): %s", INT8_RECIPE.name, target)
    cache.mark_used(entry)
    return target


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Silence what the exporter and the optimizers print while they work.

    Their warnings (TracerWarning, `torch_dtype` deprecation, "requires
    accelerate") and per-fusion INFO lines say nothing an operator can act on;
    our own lines before and after say what was done. Errors still surface.
    """
    # onnxruntime's optimizer and quantizer log under bare module names or the
    # root logger, hence the root too.
    loggers = [logging.getLogger(name) for name in ("transformers", "optimum", "onnxruntime", "onnx")]
    loggers.append(logging.getLogger())
    saved = [(lg, lg.level) for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(max(lg.level, logging.ERROR))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _save_atomically(save: Any, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    save(scratch)
    os.replace(scratch, target)
