"""One pool of real tokenizer workers serving two models whose tokenizers differ
(issue 15): the bundled MiniLM (WordPiece, with the run cache) and a tiny byte-level
BPE trained here. Each model's calls answer as that model's own `tokenizers`
tokenizer does, under that model's limits; a model index a worker lacks is refused
and the worker goes on serving."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import orjson
import pytest
from tokenizers import Encoding, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from embedserve.proto.codec import pack_u32
from embedserve.proto.gen_pb import config_pb2, tokenizer_pb2, tokenizer_pb2_grpc
from embedserve.tokenizer_pool.frames import ErrorKind, encode_socket_path
from embedserve.tokenizer_pool.link import EncodeLink
from embedserve.tokenizer_pool.pool import Encoding as PoolEncoding
from embedserve.tokenizer_pool.pool import InvalidInputError, TextPair, TokenizerPool
from tests.conftest import short_socket_prefix
from tests.tokenizer_pool.workers import running_worker

# Different per model, so a limit applied to the wrong model shows.
MINILM_MAX_LENGTH = 64
BPE_MAX_LENGTH = 16
HANG_S = 60.0
T = TypeVar("T")
PROMPT = "query: "
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Tokenizers differ per model, naïvely or not!", "hello"]
# Over BPE_MAX_LENGTH tokens in both tokenizers, under MINILM_MAX_LENGTH.
LONG_TEXT = " ".join(["the lazy dog sleeps while the quick fox runs"] * 3)


def build_bpe_tokenizer(target: Path) -> Path:
    """A tiny byte-level BPE (RoBERTa-style specials, type id 1 on a pair's second
    text), nothing like MiniLM's WordPiece: other ids, other splits, cased."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator([*TEXTS, LONG_TEXT, PROMPT] * 4, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B:1 </s>:1",
        special_tokens=[("<s>", tokenizer.token_to_id("<s>")), ("</s>", tokenizer.token_to_id("</s>"))],
    )
    target.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target / "tokenizer.json"))
    return target


class Reference:
    """A model's own tokenizer, as `tokenizers` loads it."""

    def __init__(self, model_dir: Path, max_input_length: int) -> None:
        self.max_input_length = max_input_length
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()  # MiniLM's file pads to 128: a batch setting, not the model's ids

    def ids(self, text: str | tuple[str, str], truncate: bool = False) -> list[int]:
        return self.encoding(text, truncate).ids

    def encoding(self, text: str | tuple[str, str], truncate: bool = False) -> Encoding:
        if truncate:
            self._tokenizer.enable_truncation(self.max_input_length)
        else:
            self._tokenizer.no_truncation()
        return self._tokenizer.encode(*text) if isinstance(text, tuple) else self._tokenizer.encode(text)

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bpe_tokenizer(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def references(model_dir: Path, bpe_dir: Path) -> list[Reference]:
    minilm, bpe = Reference(model_dir, MINILM_MAX_LENGTH), Reference(bpe_dir, BPE_MAX_LENGTH)
    assert minilm.ids(TEXTS[0]) != bpe.ids(TEXTS[0]), "the two tokenizers must differ for this test to mean anything"
    return [minilm, bpe]


@pytest.fixture(scope="module")
def worker_paths(model_dir: Path, bpe_dir: Path) -> Iterator[list[str]]:
    """Two workers, each serving both models: MiniLM is model 0, the BPE model 1
    (with the prompt left out of pooling, to show per-model settings apply)."""
    worker_models = [
        config_pb2.TokenizerModel(model_dir=str(model_dir), max_input_length=MINILM_MAX_LENGTH, name="minilm"),
        config_pb2.TokenizerModel(model_dir=str(bpe_dir), max_input_length=BPE_MAX_LENGTH, name="bpe",
                                  exclude_prompt_from_pooling=True),
    ]
    prefix = short_socket_prefix()
    paths = [f"{prefix}-tokenizer-0", f"{prefix}-tokenizer-1"]
    with running_worker(worker_models, paths[0]), running_worker(worker_models, paths[1]):
        yield paths


def with_pool(paths: list[str], test: Callable[[TokenizerPool], Awaitable[T]]) -> T:
    """`test`'s result on a fresh pool of `paths` serving both models."""

    async def run() -> T:
        pool = TokenizerPool(paths, [MINILM_MAX_LENGTH, BPE_MAX_LENGTH])
        try:
            return await asyncio.wait_for(test(pool), HANG_S)
        finally:
            await pool.close()

    return asyncio.run(run())


def test_each_model_encodes_as_its_own_tokenizer(worker_paths: list[str], references: list[Reference]) -> None:
    pair = TextPair("a query", "a passage about it")

    async def encode_both(pool: TokenizerPool) -> list[list[PoolEncoding]]:
        # Both models' calls in one loop turn: they share frames and workers.
        calls = [
            pool.model(index).encode([*TEXTS, pair, LONG_TEXT], True, "right", None) for index in (0, 1)
        ] + [pool.model(index).encode(TEXTS, True, "right", PROMPT) for index in (0, 1)]
        return list(await asyncio.gather(*calls))

    plain_0, plain_1, prompted_0, prompted_1 = with_pool(worker_paths, encode_both)
    for reference, encodings in zip(references, (plain_0, plain_1)):
        expected = [reference.encoding(t, truncate=True) for t in [*TEXTS, (pair.first, pair.second), LONG_TEXT]]
        assert [e.input_ids.tolist() for e in encodings] == [e.ids for e in expected]
        assert [e.token_type_ids.tolist() for e in encodings] == [e.type_ids for e in expected]
    # Truncation is each model's own length.
    assert len(plain_0[-1].input_ids) == len(references[0].ids(LONG_TEXT)) < MINILM_MAX_LENGTH
    assert len(plain_1[-1].input_ids) == BPE_MAX_LENGTH
    for reference, encodings in zip(references, (prompted_0, prompted_1)):
        assert [e.input_ids.tolist() for e in encodings] == [reference.ids(PROMPT + t) for t in TEXTS]
    # Only model 1 leaves the prompt out of pooling: <s> plus the prompt's tokens.
    assert {e.pool_start for e in prompted_0} == {0}
    prompt_tokens = len(references[1].ids(PROMPT)) - 1
    assert prompt_tokens > 1 and {e.pool_start for e in prompted_1} == {prompt_tokens}


def test_each_model_refuses_over_its_own_limits(worker_paths: list[str]) -> None:
    # Under MiniLM's character limit (64 x 250), over the BPE model's (16 x 250).
    many_characters = "word " * (BPE_MAX_LENGTH * 250 // 5 + 1)

    async def calls(pool: TokenizerPool) -> list[object]:
        return list(await asyncio.gather(
            pool.model(0).encode([LONG_TEXT], False, "right", None),
            pool.model(1).encode([LONG_TEXT], False, "right", None),
            pool.model(0).tokenize([many_characters], False, None, "json"),
            pool.model(1).tokenize([many_characters], False, None, "json"),
            return_exceptions=True,
        ))

    encoded_0, encoded_1, tokenized_0, tokenized_1 = with_pool(worker_paths, calls)
    assert isinstance(encoded_0, list)
    assert isinstance(encoded_1, InvalidInputError)
    assert encoded_1.message.startswith(f"`inputs` must have less than {BPE_MAX_LENGTH} tokens. Given: ")
    assert isinstance(tokenized_0, list)
    assert isinstance(tokenized_1, InvalidInputError)
    assert tokenized_1.message == (
        f"`inputs` must have less than {BPE_MAX_LENGTH * 250} characters. Given: {len(many_characters)}"
    )


def test_each_model_tokenizes_and_decodes_as_its_own_tokenizer(
    worker_paths: list[str], references: list[Reference]
) -> None:
    ids = [reference.ids(TEXTS[1]) for reference in references]

    async def calls(pool: TokenizerPool) -> tuple[list[list[bytes]], list[list[str]]]:
        tokenized = asyncio.gather(*(pool.model(index).tokenize(TEXTS, True, None, "json") for index in (0, 1)))
        decoded = asyncio.gather(
            *(pool.model(index).decode([ids[index]], skip) for index in (0, 1) for skip in (True, False))
        )
        return await tokenized, await decoded

    (tokens_0, tokens_1), decoded = with_pool(worker_paths, calls)
    for reference, tokens in zip(references, (tokens_0, tokens_1)):
        for text, answer in zip(TEXTS, tokens):
            parsed = orjson.loads(answer)
            encoding = reference.encoding(text)
            assert [t["id"] for t in parsed] == encoding.ids
            assert [t["special"] for t in parsed] == [bool(m) for m in encoding.special_tokens_mask]
            for token in parsed:
                if not token["special"]:  # the text it covers, by UTF-8 byte offsets
                    assert text.encode()[token["start"]:token["stop"]].decode() == token["text"]
    expected = [references[index].decode(ids[index], skip) for index in (0, 1) for skip in (True, False)]
    assert decoded == [[text] for text in expected]
    assert decoded[2] == [TEXTS[1]], "the byte-level BPE decodes back to the text"


def test_a_model_index_the_workers_lack_is_refused_and_they_go_on_serving(worker_paths: list[str]) -> None:
    path = worker_paths[0]

    async def calls() -> None:
        link = EncodeLink(encode_socket_path(path))
        try:
            bad = await asyncio.wait_for(link.call(["hello"], True, False, None, model=2), HANG_S)
            good = await asyncio.wait_for(link.call(["hello"], True, False, None, model=1), HANG_S)
        finally:
            link.close()
        assert bad.error_kind == ErrorKind.TOKENIZER_FAILED
        assert bad.error == "tokenizer worker has no model 2: it serves 2 model(s). This is a bug."
        assert good.error_kind == ErrorKind.NONE and good.lengths

    asyncio.run(calls())
    with grpc.insecure_channel(f"unix://{path}") as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        for call in (
            lambda: list(stub.Tokenize(tokenizer_pb2.TokenizeRequest(inputs=["hello"], model=9), timeout=HANG_S)),
            lambda: stub.Decode(tokenizer_pb2.DecodeRequest(ids=[pack_u32([1, 2])], model=9), timeout=HANG_S),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert refused.value.details() == "tokenizer worker has no model 9: it serves 2 model(s). This is a bug."
        answer = stub.Decode(tokenizer_pb2.DecodeRequest(ids=[pack_u32([101, 7592, 102])], skip_special_tokens=True, model=0), timeout=HANG_S)
        assert list(answer.texts) == ["hello"]

    # The router side refuses an index it was not given, before any call.
    async def router_side(pool: TokenizerPool) -> None:
        with pytest.raises(IndexError, match="serves 2 model"):
            pool.model(2)
        assert (await pool.model(0).encode(["still serving"], True, "right", None))[0].input_ids[0] == 101

    with_pool(worker_paths, router_side)


def test_worker_choice_counts_every_models_calls(worker_paths: list[str]) -> None:
    """A model's backlog steers the other model's calls to the less busy worker."""

    async def held(pool: TokenizerPool) -> tuple[int, int]:
        # Model 0's five calls leave worker 0 one call busier (3, 2); model 1's five
        # then even it out only if they see model 0's calls (per-model counts: 6, 4).
        calls = [asyncio.ensure_future(pool.model(0).encode([LONG_TEXT] * 4, True, "right", None)) for _ in range(5)]
        calls += [asyncio.ensure_future(pool.model(1).encode([f"text {i}"], True, "right", None)) for i in range(5)]
        await asyncio.sleep(0)
        counts = (pool.in_flight(0), pool.in_flight(1))
        assert all(isinstance(r, list) for r in await asyncio.gather(*calls))
        return counts

    assert with_pool(worker_paths, held) == (5, 5)
