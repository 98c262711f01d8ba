"""Outlier channels kept in float around int8 products (the LLM.int8() idea, facts only).

onnxruntime's dynamic quantization gives a whole activation tensor one scale. In
BERT-like models a few hidden channels carry values many times larger than the
rest (MiniLM: ~28 against a median of ~1.8 after some LayerNorms), so that one
scale leaves the other channels a handful of int8 steps. X @ W is the sum over
input channels, so it splits exactly: the `k` largest channels of X times their
rows of W, in float (a thin product), plus X with those channels zeroed times W,
in int8 with a scale the outliers no longer set.

Where the product's input is a LayerNormalization's output, the outlier channels
come from the norm's per-channel weight and are large on every token: those few
channels are instead divided by a constant and their rows of W multiplied by it
(SmoothQuant's idea, on the outlier channels only), an exact rewrite that costs
one multiply over X instead of a second product. Scaling every channel, or the
outliers after GELU (large on a few tokens only), lost quality: bench/CPU_NOTES.md.

The largest channels are found once, on fixed calibration texts
(backends/calibration_texts.py), by running the float32 graph with the products'
inputs exposed as outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Name prefix of the nodes added here: the quantizer is told to leave them alone.
SIDE_PREFIX = "int8_outlier_side_"


def split_outliers(source: Path, target: Path, channels: int, min_ratio: float,
                   batches: Iterable[dict[str, np.ndarray]], smooth_to: float | None = None) -> None:
    """Write `source` with the `channels` largest input channels of MatMuls split off
    into a float product, to `target`. Split are the MatMuls with a constant weight
    whose largest input channel reaches `min_ratio` times the median channel (each
    channel's largest |value| in calibration). With `smooth_to`, such a MatMul whose
    input a LayerNormalization makes gets those channels scaled down to at most
    `smooth_to` times the median instead. `batches` are the graph's inputs, run in
    float32 to measure the activations."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    products = [node for node in graph.node
                if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in weights]
    activation_max = _activation_max(model, [node.input[0] for node in products], batches)
    products = [node for node in products if _has_outliers(activation_max[node.input[0]], min_ratio)]
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    added = []
    for index, node in enumerate(products):
        activation, output = node.input[0], node.output[0]
        weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)  # [in, out]
        largest = np.sort(np.argsort(activation_max[activation])[-channels:]).astype(np.int64)
        if smooth_to is not None and made_by.get(activation) == "LayerNormalization":
            added.append(_smooth(graph, node, index, weight, activation_max[activation], largest, smooth_to))
            continue
        keep = np.ones(weight.shape[0], np.float32)
        keep[largest] = 0.0
        names = {part: f"{SIDE_PREFIX}{index}_{part}" for part in
                 ("keep", "indices", "weight", "masked", "picked", "side", "main")}
        graph.initializer.extend([
            numpy_helper.from_array(keep, names["keep"]),
            numpy_helper.from_array(largest, names["indices"]),
            numpy_helper.from_array(weight[largest], names["weight"]),
        ])
        added += [
            helper.make_node("Mul", [activation, names["keep"]], [names["masked"]], name=f"{SIDE_PREFIX}{index}_mask"),
            helper.make_node("Gather", [activation, names["indices"]], [names["picked"]], axis=-1,
                             name=f"{SIDE_PREFIX}{index}_gather"),
            helper.make_node("MatMul", [names["picked"], names["weight"]], [names["side"]],
                             name=f"{SIDE_PREFIX}{index}_matmul"),
            helper.make_node("Add", [names["main"], names["side"]], [output], name=f"{SIDE_PREFIX}{index}_add"),
        ]
        node.input[0] = names["masked"]
        node.output[0] = names["main"]
    graph.node.extend(added)
    _sort_topologically(graph)
    onnx.save(model, str(target))


def _smooth(graph: Any, node: Any, index: int, weight: np.ndarray, channel_max: np.ndarray,
            largest: np.ndarray, smooth_to: float) -> Any:
    """Divide `node`'s input channels `largest` by what brings them to `smooth_to` times the
    median channel and multiply their weight rows by the same: X @ W is unchanged."""
    from onnx import helper, numpy_helper

    scale = np.ones(weight.shape[0], np.float32)
    ceiling = smooth_to * max(float(np.median(channel_max)), 1e-8)
    scale[largest] = np.maximum(channel_max[largest] / ceiling, 1.0)
    names = {part: f"{SIDE_PREFIX}{index}_{part}" for part in ("inverse", "weight", "smoothed")}
    graph.initializer.extend([
        numpy_helper.from_array((1.0 / scale).astype(np.float32), names["inverse"]),
        # A weight of its own: another product may read the original.
        numpy_helper.from_array(weight * scale[:, None], names["weight"]),
    ])
    multiply = helper.make_node("Mul", [node.input[0], names["inverse"]], [names["smoothed"]],
                                name=f"{SIDE_PREFIX}{index}_smooth")
    node.input[0], node.input[1] = names["smoothed"], names["weight"]
    return multiply


def _has_outliers(channel_max: np.ndarray, min_ratio: float) -> bool:
    return bool(channel_max.max() >= min_ratio * max(float(np.median(channel_max)), 1e-8))


def _activation_max(model: Any, names: list[str], batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per channel (last axis), the largest |value| each named tensor takes on real tokens."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    unique = list(dict.fromkeys(names))
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in unique)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    found: dict[str, np.ndarray] = {}
    for feed in batches:
        mask = feed["attention_mask"].astype(bool)
        for name, value in zip(unique, session.run(unique, feed)):
            channel_max = np.abs(np.asarray(value)[mask]).max(axis=0)
            found[name] = np.maximum(found[name], channel_max) if name in found else channel_max
    return found


def _sort_topologically(graph: Any) -> None:
    """Put the added nodes between their producers and consumers (ONNX wants producers first)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered = []
    pending = list(graph.node)
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise ValueError("the graph has a cycle or an input nobody produces")
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)
