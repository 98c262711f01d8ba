"""How `--dtype int8` turns a float32 ONNX graph into an int8 one on CPU.

A recipe is data: which operators get int8 weights, which nodes stay float, and
the quantizer's options. `INT8_RECIPE` is the one the engine uses; `bench/int8_recipes.py`
builds the others it was chosen against (the table is in bench/CPU_NOTES.md).
Changing the recipe changes `Int8Recipe.cache_step`, so an ONNX cache entry made
by an older recipe is never reused.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Int8Recipe:
    name: str
    # Operator types given int8 weights and dynamically quantized inputs. On a fused
    # BERT graph, "Attention" holds the Q, K and V projections (a quarter of a layer's
    # multiply-adds), which a MatMul-only recipe leaves in float.
    op_types: tuple[str, ...]
    # Node names matched by any of these regular expressions stay float.
    keep_float: tuple[str, ...] = ()
    # Per output channel weight scales: per-tensor scales cost MiniLM a cosine of
    # ~0.89 to float32, per-channel ~0.99.
    per_channel: bool = True
    # Per MatMul, this many of the largest input channels stay in a float product
    # beside the int8 one (backends/int8_outliers.py); 0: none.
    outlier_channels: int = 0
    # ... in the MatMuls whose largest input channel reaches this many times the median
    # channel (calibration maxima): elsewhere one scale serves all channels well enough,
    # and the split's extra passes over the activation would cost time for nothing.
    # MiniLM: 8-17x before the FFN's first product, 3-19x before its second (10 of 18
    # MatMuls split), under 5x before the attention output.
    outlier_ratio: float = 8.0
    # Where a LayerNormalization makes the product's input, its outlier channels are
    # scaled down to this many times the median channel, their weight rows up, instead
    # of split off (backends/int8_outliers.py); None: split everywhere. MiniLM: the six
    # FFN input products, ~1.2x faster than splitting them, same cosines.
    smooth_to: float | None = None

    @property
    def cache_step(self) -> str:
        """The ONNX cache's step name: differs whenever the recipe, or the calibration
        texts it reads, do."""
        from embedserve.backends.calibration_texts import CALIBRATION_TEXTS

        calibration = repr(CALIBRATION_TEXTS) if self.outlier_channels else ""
        digest = hashlib.sha256((repr(self) + calibration).encode()).hexdigest()[:8]
        return f"int8-{digest}"


INT8_RECIPE = Int8Recipe(name="matmul+attention, 4 outlier channels: scaled after LayerNorm, else in float",
                         op_types=("MatMul", "Attention"), outlier_channels=4, smooth_to=4.0)


def quantize(source: Path, target: Path, recipe: Int8Recipe, model_dir: Path) -> None:
    """Write `source` quantized by `recipe` to `target`; `model_dir`'s tokenizer
    encodes the calibration texts where the recipe needs activations measured."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_float = list(recipe.keep_float)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        if recipe.outlier_channels:
            from embedserve.backends.int8_outliers import SIDE_PREFIX, split_outliers

            split = Path(scratch) / "split.onnx"
            split_outliers(source, split, recipe.outlier_channels, recipe.outlier_ratio,
                           calibration_feeds(source, model_dir), recipe.smooth_to)
            source = split
            keep_float.append(f"^{SIDE_PREFIX}")
        names = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node]
        # Fused graphs hold contrib ops that shape inference cannot type; their
        # outputs are float, which the quantizer must be told.
        extra = {"DefaultTensorType": TensorProto.FLOAT}
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, per_channel=recipe.per_channel,
            op_types_to_quantize=list(recipe.op_types),
            nodes_to_exclude=[name for name in names if any(re.search(p, name) for p in keep_float)],
            extra_options=extra,
        )


CALIBRATION_BATCH = 8


def calibration_feeds(model: Path, model_dir: Path) -> Iterator[dict[str, np.ndarray]]:
    """The calibration texts as the graph's inputs, padded batches of CALIBRATION_BATCH."""
    import json

    import onnx
    from tokenizers import Tokenizer

    from embedserve.backends.calibration_texts import CALIBRATION_TEXTS

    config = json.loads((model_dir / "config.json").read_text())
    max_length = min(int(config.get("max_position_embeddings") or 512), 512)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=int(config.get("pad_token_id") or 0))
    # The graph's declared inputs: loading a session only to list them would build the model twice.
    inputs = {i.name for i in onnx.load(str(model), load_external_data=False).graph.input}
    for start in range(0, len(CALIBRATION_TEXTS), CALIBRATION_BATCH):
        encoded = tokenizer.encode_batch(list(CALIBRATION_TEXTS[start:start + CALIBRATION_BATCH]))
        feed = {"input_ids": np.asarray([e.ids for e in encoded], np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encoded], np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encoded], np.int64)}
        yield {name: value for name, value in feed.items() if name in inputs}
