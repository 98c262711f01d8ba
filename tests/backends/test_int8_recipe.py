"""The int8 recipe's parts on small hand-made graphs: outlier channels split off or
scaled into the weights exactly, only where a product has them, and the cache step
follows the recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from embedserve.backends.int8_outliers import SIDE_PREFIX, split_outliers
from embedserve.backends.int8_recipe import INT8_RECIPE, Int8Recipe

WIDTH = 16
OUTLIER = 5  # the channel of x that is 60 times larger than the rest


def _two_products(path: Path, seed: int = 0) -> None:
    """x [batch, seq, WIDTH] -> MatMul w1 -> Relu -> MatMul w2 -> y; the mask is an input
    as in the engine's graphs (calibration reads it), unused by the math."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(WIDTH, WIDTH)).astype(np.float32)
    w2 = rng.normal(size=(WIDTH, WIDTH)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="second"),
    ]
    _save(path, nodes, {"w1": w1, "w2": w2})


def _save(path: Path, nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray]) -> None:
    """A graph from input x [batch, seq, WIDTH] (and the unused mask) to output y."""
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", WIDTH]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", WIDTH])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _inputs(seed: int) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(3, 7, WIDTH)).astype(np.float32)
    x[..., OUTLIER] *= 60.0
    return {"x": x, "attention_mask": np.ones((3, 7), np.int64)}


def _run(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    (y,) = session.run(["y"], {k: v for k, v in feed.items() if k in names})
    return np.asarray(y)


def test_split_is_exact_and_only_where_a_product_has_outliers(tmp_path: Path) -> None:
    source, split = tmp_path / "source.onnx", tmp_path / "split.onnx"
    _two_products(source)
    split_outliers(source, split, channels=1, min_ratio=8.0, batches=[_inputs(seed) for seed in range(4)])

    model = onnx.load(str(split))
    onnx.checker.check_model(model)
    side = [node for node in model.graph.node if node.name.startswith(SIDE_PREFIX)]
    # Only `first` sees the outlier channel; `second` reads Relu's output, even across channels.
    assert {node.op_type for node in side} == {"Mul", "Gather", "MatMul", "Add"}
    assert len(side) == 4
    gathered = next(node for node in side if node.op_type == "Gather")
    assert gathered.input[0] == "x"
    indices = next(i for i in model.graph.initializer if i.name == gathered.input[1])
    assert numpy_helper.to_array(indices).tolist() == [OUTLIER]

    feed = _inputs(seed=99)
    np.testing.assert_allclose(_run(split, feed), _run(source, feed), rtol=1e-4, atol=1e-3)


def _norm_then_product(path: Path) -> None:
    """x -> LayerNormalization (channel OUTLIER's weight 60x the rest) -> MatMul w -> y,
    the FFN input of a BERT layer in small."""
    rng = np.random.default_rng(1)
    gamma = np.ones(WIDTH, np.float32)
    gamma[OUTLIER] = 60.0
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], name="norm", axis=-1),
        helper.make_node("MatMul", ["n", "w"], ["y"], name="product"),
    ]
    _save(path, nodes, {"gamma": gamma, "beta": rng.normal(size=WIDTH).astype(np.float32) * 0.1,
                        "w": rng.normal(size=(WIDTH, WIDTH)).astype(np.float32)})


def test_outliers_after_a_layer_norm_are_scaled_into_the_weights_exactly(tmp_path: Path) -> None:
    source, smoothed = tmp_path / "source.onnx", tmp_path / "smoothed.onnx"
    _norm_then_product(source)
    batches = [_inputs(seed) for seed in range(4)]
    split_outliers(source, smoothed, channels=1, min_ratio=8.0, batches=batches, smooth_to=4.0)

    model = onnx.load(str(smoothed))
    onnx.checker.check_model(model)
    added = [node for node in model.graph.node if node.name.startswith(SIDE_PREFIX)]
    assert [node.op_type for node in added] == ["Mul"]  # no second product
    inverse = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == added[0].input[1]))
    assert inverse[OUTLIER] < 1.0 / 8  # ~60x the median, brought to 4x
    assert np.all(np.delete(inverse, OUTLIER) == 1.0)
    feed = _inputs(seed=99)
    np.testing.assert_allclose(_run(smoothed, feed), _run(source, feed), rtol=1e-4, atol=1e-3)

    # Without smooth_to, the same product is split off instead.
    split = tmp_path / "split.onnx"
    split_outliers(source, split, channels=1, min_ratio=8.0, batches=batches)
    assert {node.op_type for node in onnx.load(str(split)).graph.node if node.name.startswith(SIDE_PREFIX)} \
        == {"Mul", "Gather", "MatMul", "Add"}


def test_no_product_is_split_below_the_ratio(tmp_path: Path) -> None:
    source, split = tmp_path / "source.onnx", tmp_path / "split.onnx"
    _two_products(source)
    split_outliers(source, split, channels=1, min_ratio=1000.0, batches=[_inputs(0)])
    assert not [n for n in onnx.load(str(split)).graph.node if n.name.startswith(SIDE_PREFIX)]


def test_the_cache_step_follows_the_recipe() -> None:
    same = Int8Recipe(INT8_RECIPE.name, INT8_RECIPE.op_types, INT8_RECIPE.keep_float, INT8_RECIPE.per_channel,
                      INT8_RECIPE.outlier_channels, INT8_RECIPE.outlier_ratio, INT8_RECIPE.smooth_to)
    assert same.cache_step == INT8_RECIPE.cache_step
    fewer = Int8Recipe(INT8_RECIPE.name, INT8_RECIPE.op_types, outlier_channels=INT8_RECIPE.outlier_channels + 1)
    assert fewer.cache_step != INT8_RECIPE.cache_step
    assert INT8_RECIPE.cache_step.startswith("int8-")
