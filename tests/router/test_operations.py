"""The operation layer on its own: checks in TEI's order, defaults, finishing.

A recording stand-in for `Inference` answers every input with a fixed row, so
these run in milliseconds; the e2e files prove HTTP and gRPC call them alike.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from embedserve.router.errors import BatchSizeError, EmptyInputError, ModelTypeError, ValidationError
from embedserve.router.infer import EncodeOptions, InferenceResult, ResponseMetadata
from embedserve.router.infer import CallLimits
from embedserve.router.operations import Operations, Truncation
from embedserve.router.settings import RouterSettings
from embedserve.tokenizer_pool.pool import Input, TextPair

HIDDEN = 4
META = ResponseMetadata(0, 0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class RecordingInference:
    """Answers each input with `row`; keeps every call's arguments."""

    row: np.ndarray = field(default_factory=lambda: np.array([3.0, 4.0, 0.0, 0.0], np.float32))
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, inputs: list[Input], options: EncodeOptions, **kwargs: Any) -> InferenceResult:
        self.calls.append({"inputs": inputs, "options": options, **kwargs})
        return InferenceResult([self.row for _ in inputs], [2 for _ in inputs], META)

    async def decode(self, id_lists: list[list[int]], skip_special_tokens: bool) -> list[str]:
        self.calls.append({"ids": id_lists})
        return ["text" for _ in id_lists]


def _operations(**settings: Any) -> tuple[Operations, RecordingInference]:
    inference = RecordingInference()
    config = RouterSettings(model_id="m", served_model_name="m", backend_sockets=(), tokenizer_sockets=(), **settings)
    return Operations(config, HIDDEN, inference), inference  # type: ignore[arg-type]


def _run(work: Any) -> Any:
    return asyncio.run(work)


def test_the_model_type_is_checked_before_the_inputs() -> None:
    operations, inference = _operations(model_type="classifier")
    with pytest.raises(ModelTypeError):
        _run(operations.embed_pooled("", Truncation(None), None, True, None, CallLimits()))
    operations, _ = _operations(model_type="embedding")
    with pytest.raises(ModelTypeError):
        _run(operations.predict([], Truncation(None), False, CallLimits()))
    assert inference.calls == []


def test_embed_pooled_cuts_then_normalizes_and_counts_single_or_batch() -> None:
    operations, inference = _operations()
    single = _run(operations.embed_pooled("a", Truncation(None), None, True, 2, CallLimits()))
    assert single.vectors.tolist() == [[0.6000000238418579, 0.800000011920929]] and not single.is_batch
    batch = _run(operations.embed_pooled(["a", "b"], Truncation(None), None, False, None, CallLimits()))
    assert batch.vectors.shape == (2, HIDDEN) and batch.is_batch
    assert [call["method"] for call in inference.calls] == ["single", "batch"]
    assert all(call["family"] == "embed" and not call["raw"] for call in inference.calls)


def test_limits_and_dimensions_fail_before_anything_runs() -> None:
    operations, inference = _operations(max_client_batch_size=2)
    with pytest.raises(BatchSizeError):
        _run(operations.embed_pooled(["a", "b", "c"], Truncation(None), None, True, None, CallLimits()))
    with pytest.raises(ValidationError, match="positive"):
        _run(operations.embed_pooled("a", Truncation(None), None, True, 0, CallLimits()))
    with pytest.raises(ValidationError, match="smaller"):
        _run(operations.embed_pooled("a", Truncation(None), None, True, HIDDEN + 1, CallLimits()))
    with pytest.raises(ValidationError, match="Available prompts: none"):
        _run(operations.embed_all("a", Truncation(None), "nope", CallLimits()))
    assert inference.calls == []


def test_truncation_defaults_to_the_server_only_when_absent() -> None:
    operations, inference = _operations(auto_truncate=True, default_prompt="query: ", prompts={"q": "q: "})
    _run(operations.embed_pooled("a", Truncation(None), None, True, None, CallLimits()))
    _run(operations.embed_pooled("a", Truncation(False, "left"), "q", True, None, CallLimits(True, 5.0)))
    first, second = (call["options"] for call in inference.calls)
    assert first == EncodeOptions(truncate=True, direction="right", prompt="query: ")
    assert second == EncodeOptions(truncate=False, direction="left", prompt="q: ")
    assert inference.calls[1]["limits"] == CallLimits(wait_for_permit=True, deadline=5.0)


def test_embed_all_asks_for_raw_rows_and_sparse_needs_splade() -> None:
    operations, inference = _operations()
    _run(operations.embed_all(["a"], Truncation(None), None, CallLimits()))
    assert inference.calls[0]["raw"] is True
    with pytest.raises(ModelTypeError):
        _run(operations.embed_sparse("a", Truncation(None), None, CallLimits()))
    splade, _ = _operations(pooling="splade")
    sparse = _run(splade.embed_sparse("a", Truncation(None), None, CallLimits()))
    assert sparse.weights == [[(0, 3.0), (1, 4.0)]]


def test_predict_takes_texts_and_pairs_with_the_default_prompt() -> None:
    operations, inference = _operations(model_type="classifier", default_prompt="p: ",
                                        id2label={"0": "a", "1": "b", "2": "c", "3": "d"})
    result = _run(operations.predict(["q", "t"], Truncation(None), True, CallLimits()))
    assert inference.calls[0]["inputs"] == [TextPair("q", "t")]
    assert inference.calls[0]["options"].prompt == "p: "
    assert not result.is_batch and [label for _, label in result.ranked[0]] == ["b", "a", "c", "d"]


def test_rerank_checks_in_order_and_counts_as_the_transport_says() -> None:
    operations, inference = _operations(model_type="reranker")
    with pytest.raises(EmptyInputError, match="`texts` cannot be empty"):
        _run(operations.rerank([], Truncation(None), False, CallLimits(), is_batch=True))
    with pytest.raises(EmptyInputError, match="`inputs` cannot be empty"):
        _run(operations.rerank([("q", "")], Truncation(None), False, CallLimits(), is_batch=True))
    ranking = _run(operations.rerank([("q", "a")], Truncation(None), True, CallLimits(), is_batch=False))
    assert ranking.order == [(0, 3.0)]
    assert inference.calls[0]["method"] == "single" and inference.calls[0]["options"].prompt is None


def test_decode_refuses_empty_id_lists() -> None:
    operations, inference = _operations()
    with pytest.raises(EmptyInputError, match="`ids` cannot be empty"):
        _run(operations.decode([[]], True))
    assert _run(operations.decode([[1, 2]], True)) == ["text"]


def test_a_causal_reranker_frames_each_pair_and_answers_rerank_only() -> None:
    from embedserve.router.rerank_template import QWEN3, causal_prompt
    from embedserve.tokenizer_pool.frames import FramedText

    inference = RecordingInference(row=np.array([0.5], np.float32))
    config = RouterSettings(model_id="m", served_model_name="m", backend_sockets=(), tokenizer_sockets=(),
                            model_type="reranker", id2label={"0": "yes"}, label2id={"yes": 0})
    prompt = causal_prompt("qwen3", "find the city")
    operations = Operations(config, HIDDEN, inference, prompt)  # type: ignore[arg-type]
    _run(operations.rerank([("q", "doc one")], Truncation(None), False, CallLimits(), is_batch=True))
    _run(operations.rerank([("q", "doc two")], Truncation(None), False, CallLimits(), is_batch=True,
                           instruction="another"))
    first, second = (call["inputs"][0] for call in inference.calls)
    body = "<Instruct>: find the city\n<Query>: q\n<Document>: doc one"
    assert first == FramedText(QWEN3.prefix, body, QWEN3.suffix)
    assert second.body == "<Instruct>: another\n<Query>: q\n<Document>: doc two"
    # The backend's empty instruction is the template's own.
    default = causal_prompt("qwen3", "")
    assert default is not None and default.default_instruction == QWEN3.default_instruction
    with pytest.raises(ModelTypeError, match="answers /rerank only"):
        _run(operations.predict(["q", "d"], Truncation(None), False, CallLimits()))
    assert causal_prompt("", "") is None
    with pytest.raises(RuntimeError, match="does not know"):
        causal_prompt("llama9", "")
