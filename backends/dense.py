"""sentence-transformers Dense modules, applied to pooled rows for every engine.

One place: whatever runtime pooled the rows (torch, onnxruntime, remote code),
the Dense layers run the same way after it, as sentence-transformers runs them
(Pooling -> Dense -> Dense ...), in float32. Engines that already run torch run
them with torch on their device, so a GPU does the multiplications (embeddinggemma's
768x3072 and 3072x768 layers took numpy ~140 ms for 256 rows on two busy cores);
the others with numpy. Per-token outputs (`embed_all`) stay the transformer's, as in TEI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embedserve.backends.base import Activation, Backend, DenseSpec, EmbedOutput, ModelBatch
from embedserve.proto.codec import F32Array

logger = logging.getLogger(__name__)

WEIGHT_KEY, BIAS_KEY = "linear.weight", "linear.bias"
# Engines whose process has torch loaded anyway: their Dense layers run in torch.
TORCH_ENGINES = ("torch", "python")


def _sigmoid(x: F32Array) -> F32Array:
    # Through tanh: exp(-x) overflows float32 for very negative x.
    result: F32Array = 0.5 * (1.0 + np.tanh(0.5 * x))
    return result


NUMPY_ACTIVATIONS: dict[Activation, Callable[[F32Array], F32Array]] = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
}


@dataclass(frozen=True)
class DenseLayer:
    weight: F32Array  # [out_features, in_features], as torch.nn.Linear keeps it
    bias: F32Array | None
    activation: Activation
    name: str

    def __call__(self, rows: F32Array) -> F32Array:
        out = rows @ self.weight.T
        if self.bias is not None:
            out += self.bias
        return NUMPY_ACTIVATIONS[self.activation](out).astype(np.float32, copy=False)


def load_layer(spec: DenseSpec) -> DenseLayer:
    weights = _read_weights(spec)
    name = spec.path.name
    weight = weights.get(WEIGHT_KEY)
    if weight is None or weight.shape != (spec.out_features, spec.in_features):
        found = "none" if weight is None else f"{list(weight.shape)}"
        raise ValueError(f"Dense module {name}: {WEIGHT_KEY} should be [{spec.out_features}, {spec.in_features}], "
                         f"found {found}")
    bias = weights.get(BIAS_KEY) if spec.bias else None
    if spec.bias and (bias is None or bias.shape != (spec.out_features,)):
        raise ValueError(f"Dense module {name}: {BIAS_KEY} should be [{spec.out_features}]")
    return DenseLayer(np.ascontiguousarray(weight, np.float32),
                      None if bias is None else np.asarray(bias, np.float32), spec.activation, name)


def _read_weights(spec: DenseSpec) -> dict[str, np.ndarray]:
    safetensors_path = spec.path / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(safetensors_path), framework="np") as file:
                return {key: file.get_tensor(key) for key in file.keys()}
        except TypeError:  # bfloat16 has no numpy dtype: read it through torch
            with safe_open(str(safetensors_path), framework="pt") as file:
                return {key: file.get_tensor(key).float().numpy() for key in file.keys()}
    bin_path = spec.path / "pytorch_model.bin"
    if not bin_path.is_file():
        raise ValueError(f"Dense module {spec.path.name} has no model.safetensors or pytorch_model.bin")
    import torch

    state = torch.load(bin_path, map_location="cpu", weights_only=True)
    return {key: value.float().numpy() for key, value in state.items()}


class DenseHead:
    """The Dense layers of one model, in order; with `torch_device`, run by torch there."""

    def __init__(self, layers: Sequence[DenseLayer], torch_device: str | None = None) -> None:
        self.layers = tuple(layers)
        self._torch = _TorchLayers(self.layers, torch_device) if torch_device else None

    @classmethod
    def load(cls, specs: Sequence[DenseSpec], pooled_width: int, torch_device: str | None = None) -> DenseHead:
        width = pooled_width
        for spec in specs:
            if spec.in_features != width:
                raise ValueError(f"Dense module {spec.path.name} takes {spec.in_features} features "
                                 f"but receives {width}")
            width = spec.out_features
        return cls([load_layer(spec) for spec in specs], torch_device)

    @property
    def out_features(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    def __call__(self, pooled: F32Array) -> F32Array:
        rows = pooled.astype(np.float32, copy=False)
        if self._torch is not None:
            return self._torch(rows)
        for layer in self.layers:
            rows = layer(rows)
        return rows


class _TorchLayers:
    """The same layers as float32 torch tensors on one device."""

    def __init__(self, layers: Sequence[DenseLayer], device: str) -> None:
        import torch

        activations: dict[Activation, Callable[[Any], Any]] = {
            "identity": lambda x: x, "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
        }
        self._device = device
        self._layers = [
            (torch.from_numpy(layer.weight).to(device),
             None if layer.bias is None else torch.from_numpy(layer.bias).to(device),
             activations[layer.activation])
            for layer in layers
        ]

    def __call__(self, rows: F32Array) -> F32Array:
        import torch

        with torch.inference_mode():
            values = torch.from_numpy(rows).to(self._device)
            for weight, bias, activation in self._layers:
                values = activation(torch.nn.functional.linear(values, weight, bias))
            result: F32Array = values.cpu().numpy()
        return result


class DenseEngine:
    """An engine whose pooled rows go through Dense layers; everything else is the
    wrapped engine's (per-token rows, classifiers, padding, health)."""

    def __init__(self, engine: Backend, head: DenseHead) -> None:
        self._engine = engine
        self._head = head
        self.name = engine.name
        self.device = engine.device
        self.dtype = engine.dtype
        self.pooling = engine.pooling
        self.hidden_size = head.out_features
        self.sparse_head = engine.sparse_head
        self.colbert_dim = engine.colbert_dim
        logger.info("applying Dense modules after %s pooling: %s (%d -> %d features)", engine.pooling,
                    ", ".join(layer.name for layer in head.layers), engine.hidden_size, head.out_features)

    @property
    def is_classifier(self) -> bool:
        return self._engine.is_classifier

    @property
    def is_padded(self) -> bool:
        return self._engine.is_padded

    @property
    def max_batch_size(self) -> int | None:
        return self._engine.max_batch_size

    def health(self) -> None:
        self._engine.health()

    def embed(self, batch: ModelBatch) -> EmbedOutput:
        output = self._engine.embed(batch)
        return replace(output, pooled=self._head(output.pooled))

    def predict(self, batch: ModelBatch) -> F32Array:
        return self._engine.predict(batch)


def with_dense(engine: Backend, specs: Sequence[DenseSpec]) -> Backend:
    if not specs:
        return engine
    if engine.is_classifier or engine.pooling == "splade":
        raise ValueError("Dense modules apply to pooled sentence embeddings, not to classifiers or SPLADE")
    torch_device = engine.device if engine.name in TORCH_ENGINES else None
    return DenseEngine(engine, DenseHead.load(specs, engine.hidden_size, torch_device))
