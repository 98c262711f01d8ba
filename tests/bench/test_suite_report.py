"""The bench's int8 line and JSON carry all four numbers the issue asks for: the
ratio to sentence-transformers, the int8 speed-up, and the mean and min cosine."""

from __future__ import annotations

import numpy as np
import pytest

from bench.corpus import Corpus
from bench.load import LoadResult
from bench.report import RunReport, SuiteReport, format_suite
from bench.scenarios import SCENARIOS


def _load(seconds: float, vectors: dict[int, np.ndarray]) -> LoadResult:
    texts = sum(len(v) for v in vectors.values())
    return LoadResult(texts=texts, seconds=seconds, tokens=10 * texts, latencies_s=[0.1], failures=[],
                      embeddings=vectors)


def test_int8_figures_give_speed_up_and_mean_and_min_cosine() -> None:
    float32 = {0: np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), 1: np.array([[1.0, 1.0]], np.float32)}
    # Row cosines to float32: 1, 0.6, 1 (the last one only scaled).
    int8 = {0: np.array([[1.0, 0.0], [0.8, 0.6]], np.float32), 1: np.array([[2.0, 2.0]], np.float32)}
    suite = SuiteReport(config={}, corpus=Corpus([["a", "b"], ["c"]]), runs=[
        RunReport(SCENARIOS["onnx"], None, _load(3.0, float32), None),
        RunReport(SCENARIOS["onnx-int8"], None, _load(2.0, int8), None),
    ])
    figures = suite.int8_figures()
    assert figures is not None
    assert figures.speedup == pytest.approx(1.5)
    assert figures.mean_cosine == pytest.approx((1.0 + 0.6 + 1.0) / 3)
    assert figures.min_cosine == pytest.approx(0.6)
    assert suite.to_json()["int8"] == {"speedup_vs_float32": figures.speedup,
                                       "mean_cosine_vs_float32": figures.mean_cosine,
                                       "min_cosine_vs_float32": figures.min_cosine}
    assert ("speed-up 1.50x, mean cosine 0.86667, min cosine 0.60000  (targets >= 1.70x, 0.99, 0.975: MISSED)"
            in format_suite(suite))
