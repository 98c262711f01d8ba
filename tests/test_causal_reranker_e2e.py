"""A causal LM served as a reranker (--reranker-template qwen3) on a tiny random
Qwen3ForCausalLM: /rerank, /v1/rerank and gRPC Rerank against transformers computing
Qwen3-Reranker's model card directly (the whole vocabulary's logits, yes/no softmax)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import RunningServer, start_server
from tests.models import build_tiny_causal_reranker

QUERY = "what is the capital of france"
TEXTS = ["Paris is the capital of France.", "Berlin is in Germany.", "bananas are yellow", "the eiffel tower"]
LONG = "the river seine flows through paris and many bridges cross it " * 60
MAX_POSITIONS = 512

# The model card's template, written out here rather than imported: the reference
# must not share the server's constants.
PREFIX = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
          'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_reranker(tmp_path_factory.mktemp("models") / "qwen3-reranker", [QUERY, *TEXTS, LONG],
                                      max_positions=MAX_POSITIONS)


@pytest.fixture(scope="module")
def causal(causal_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server("--model-id", str(causal_dir), "--reranker-template", "qwen3",
                      tmp_dir=tmp_path_factory.mktemp("causal")) as running:
        yield running


class Reference:
    """Qwen3-Reranker's model card, in transformers: prefix and suffix encoded apart,
    the formatted body truncated to what they leave, the last position's logits."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.prefix = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix = self.tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.yes = self.tokenizer.convert_tokens_to_ids("yes")
        self.no = self.tokenizer.convert_tokens_to_ids("no")

    def ids(self, query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> list[int]:
        body = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
        budget = MAX_POSITIONS - len(self.prefix) - len(self.suffix)
        encoded = self.tokenizer(body, add_special_tokens=False, truncation=True, max_length=budget)
        return [*self.prefix, *encoded["input_ids"], *self.suffix]

    def logit_margin(self, query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> float:
        """log P(yes) - log P(no) over the two words: sigmoid of it is the score."""
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.tensor([self.ids(query, document, instruction)])).logits[0, -1]
        pair = torch.log_softmax(torch.stack([logits[self.no], logits[self.yes]]), dim=0)
        return float(pair[1] - pair[0])


@pytest.fixture(scope="module")
def reference(causal_dir: Path) -> Reference:
    return Reference(causal_dir)


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_rerank_matches_the_model_card(causal: RunningServer, reference: Reference) -> None:
    response = _post(causal, "/rerank", {"query": QUERY, "texts": TEXTS})
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert sorted(r["index"] for r in ranks) == list(range(len(TEXTS)))
    for rank in ranks:
        assert rank["score"] == pytest.approx(_sigmoid(reference.logit_margin(QUERY, TEXTS[rank["index"]])), abs=1e-4)
    # The tokens counted are the framed prompts'.
    expected_tokens = sum(len(reference.ids(QUERY, text)) for text in TEXTS)
    assert int(response.headers["x-compute-tokens"]) == expected_tokens
    raw = _post(causal, "/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    for rank in raw:
        assert rank["score"] == pytest.approx(reference.logit_margin(QUERY, TEXTS[rank["index"]]), abs=1e-4)


def test_v1_rerank_and_the_instruction_override(causal: RunningServer, reference: Reference) -> None:
    instruction = "Given a question, find the sentence that names a city"
    body = _post(causal, "/v1/rerank", {"query": QUERY, "documents": TEXTS, "instruction": instruction,
                                        "top_n": 3}).json()
    assert len(body["results"]) == 3
    expected = {i: _sigmoid(reference.logit_margin(QUERY, t, instruction)) for i, t in enumerate(TEXTS)}
    best = sorted(expected, key=lambda i: -expected[i])[:3]
    assert [r["index"] for r in body["results"]] == best
    for result in body["results"]:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=1e-4)
        assert result["document"] == {"text": TEXTS[result["index"]]}
    default = _post(causal, "/v1/rerank", {"query": QUERY, "documents": TEXTS[:1]}).json()["results"][0]
    assert default["relevance_score"] == pytest.approx(_sigmoid(reference.logit_margin(QUERY, TEXTS[0])), abs=1e-4)
    assert default["relevance_score"] != pytest.approx(expected[0], abs=1e-6)


def test_a_long_document_is_cut_and_the_suffix_kept(causal: RunningServer, reference: Reference) -> None:
    assert len(reference.ids(QUERY, LONG)) == MAX_POSITIONS  # the body was cut to fit, the frame kept
    response = _post(causal, "/rerank", {"query": QUERY, "texts": [LONG, TEXTS[0]], "truncate": True})
    assert response.status_code == 200, response.text
    scores = {r["index"]: r["score"] for r in response.json()}
    assert scores[0] == pytest.approx(_sigmoid(reference.logit_margin(QUERY, LONG)), abs=1e-4)
    refused = _post(causal, "/rerank", {"query": QUERY, "texts": [LONG], "truncate": False})
    assert refused.status_code == 422 and refused.json()["error_type"] == "Validation"
    assert f"less than {MAX_POSITIONS} tokens" in refused.json()["error"]


def test_grpc_rerank_and_what_a_causal_reranker_refuses(causal: RunningServer, reference: Reference) -> None:
    with grpc.insecure_channel(causal.grpc_target) as channel:
        response = tei_pb2_grpc.RerankStub(channel).Rerank(tei_pb2.RerankRequest(query=QUERY, texts=TEXTS))
        for rank in response.ranks:
            assert rank.score == pytest.approx(_sigmoid(reference.logit_margin(QUERY, TEXTS[rank.index])), abs=1e-4)
        with pytest.raises(grpc.RpcError) as predict:
            tei_pb2_grpc.PredictStub(channel).Predict(tei_pb2.PredictRequest(inputs="x"))
        assert predict.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Without its template the prompt means nothing to the model: /predict is refused.
    refused = _post(causal, "/predict", {"inputs": [QUERY, TEXTS[0]]})
    assert refused.status_code == 424 and "answers /rerank only" in refused.json()["error"]
    info = httpx.get(f"{causal.url}/info").json()
    assert info["model_type"] == {"reranker": {"id2label": {"0": "yes"}, "label2id": {"yes": 0}}}
