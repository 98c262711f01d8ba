from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.tokenizer_pool.encoder import EncodeError, Encoder, FramedText, TextPair


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> Encoder:
    return Encoder(model_dir, max_input_length=16)


def test_truncation_directions(encoder: Encoder) -> None:
    text = " ".join(f"w{i}" for i in range(40))
    right = encoder.encode([text], truncate=True, direction="right", prompt=None)[0]
    left = encoder.encode([text], truncate=True, direction="left", prompt=None)[0]
    assert len(right.input_ids) == len(left.input_ids) == 16
    assert right.input_ids[0] == left.input_ids[0] == 101 and right.input_ids[-1] == left.input_ids[-1] == 102
    assert right.input_ids[1:3].tolist() != left.input_ids[1:3].tolist()
    with pytest.raises(EncodeError, match="must have less than 16 tokens"):
        encoder.encode([text], truncate=False, direction="right", prompt=None)


def test_character_guard(encoder: Encoder) -> None:
    huge = "a " * 3000  # 6000 chars > 16 * 250
    with pytest.raises(EncodeError, match="must have less than 4000 characters"):
        encoder.encode([huge], truncate=False, direction="right", prompt=None)
    assert len(encoder.encode([huge], truncate=True, direction="right", prompt=None)[0].input_ids) == 16


def test_ids_prompts_and_counts(encoder: Encoder) -> None:
    text = encoder.encode(["hello world"], truncate=True, direction="right", prompt=None)[0]
    ids = encoder.encode([np.array([101, 7592, 2088, 102], np.uint32)], truncate=True, direction="right", prompt=None)[0]
    assert ids.input_ids.tolist() == text.input_ids.tolist() == [101, 7592, 2088, 102]
    assert (text.characters, ids.characters) == (11, 4)
    prompted = encoder.encode(["world"], truncate=True, direction="right", prompt="hello ")[0]
    assert prompted.input_ids.tolist() == [101, 7592, 2088, 102]
    with pytest.raises(EncodeError, match="out of the vocabulary"):
        encoder.encode([np.array([10**6], np.uint32)], truncate=True, direction="right", prompt=None)


def test_tokenize_refuses_past_the_character_guard_and_never_truncates(encoder: Encoder) -> None:
    with pytest.raises(EncodeError, match=r"must have less than 4000 characters. Given: 4001"):
        encoder.tokenize(["ok", "a" * 3990], add_special_tokens=True, prompt="0123456789a")
    tokens = encoder.tokenize(["word " * 100], add_special_tokens=True, prompt=None)[0]
    assert len(tokens.ids) == 102  # far past max_input_length: /tokenize shows every token
    assert (tokens.texts[0], tokens.starts[0], tokens.special[0]) == ("[CLS]", None, True)


def test_tokenize_offsets_are_utf8_bytes(encoder: Encoder) -> None:
    text = "Zürich 東京 ok"
    tokens = encoder.tokenize([text], add_special_tokens=False, prompt=None)[0]
    encoded = text.encode()
    for piece, start, stop in zip(tokens.texts, tokens.starts, tokens.stops):
        assert start is not None and stop is not None
        assert encoded[start:stop].decode() == piece


def test_prompt_tokens_left_out_of_pooling_only_when_asked(model_dir: Path) -> None:
    # all-MiniLM's tokenizer: "query : " is [CLS] query : [SEP], so the prompt takes 3 leading tokens.
    excluding = Encoder(model_dir, max_input_length=16, exclude_prompt_from_pooling=True)
    text = " ".join(f"w{i}" for i in range(40))
    prompted = excluding.encode([text, "hi"], truncate=True, direction="right", prompt="query: ")
    assert [e.pool_start for e in prompted] == [3, 3]
    # The prompt is measured whole, whatever the request's truncation.
    assert excluding.encode(["hi"], truncate=True, direction="left", prompt="query: ")[0].pool_start == 3
    assert excluding.encode(["hi"], truncate=True, direction="right", prompt=None)[0].pool_start == 0
    including = Encoder(model_dir, max_input_length=16)
    assert including.encode(["hi"], truncate=True, direction="right", prompt="query: ")[0].pool_start == 0


def test_packed_encodings_match_one_array_per_input(encoder: Encoder) -> None:
    ids_input = np.array([101, 7592, 2088, 102], np.uint32)
    for inputs in (["hello world", "a much longer text than the first one"], [TextPair("query", "a passage")],
                   ["text", ids_input, TextPair("first", "second")], [ids_input]):
        arrays = encoder.encode(inputs, truncate=True, direction="right", prompt=None)
        packed = encoder.encode_packed(inputs, truncate=True, direction="right", prompt=None)
        assert packed.lengths == [len(a.input_ids) for a in arrays]
        assert packed.characters == [a.characters for a in arrays]
        assert np.frombuffer(packed.ids, "<u4").tolist() == np.concatenate([a.input_ids for a in arrays]).tolist()
        type_ids = np.concatenate([a.token_type_ids for a in arrays])
        if type_ids.any():
            assert packed.type_ids is not None and np.frombuffer(packed.type_ids, "<u4").tolist() == type_ids.tolist()
        else:
            assert packed.type_ids is None  # all zero: not sent


def test_framed_text_cuts_only_the_body(encoder: Encoder) -> None:
    """A causal reranker's prompt: the frame's tokens stay whole at both ends, whichever
    side of the body the truncation cuts; no special tokens are added."""
    ids = encoder._tokenizer.encode
    prefix, suffix = "judge this :", "answer yes or no"
    body = " ".join(f"w{i}" for i in range(40))
    head, tail = ids(prefix, add_special_tokens=False).ids, ids(suffix, add_special_tokens=False).ids
    framed = FramedText(prefix, body, suffix)
    for direction in ("right", "left"):
        encoded = encoder.encode([framed], truncate=True, direction=direction, prompt=None)[0].input_ids.tolist()
        assert len(encoded) == 16 and encoded[: len(head)] == head and encoded[-len(tail):] == tail
        whole_body = ids(body, add_special_tokens=False).ids
        kept = encoded[len(head): -len(tail)]
        assert kept == (whole_body[: len(kept)] if direction == "right" else whole_body[-len(kept):])
    short = encoder.encode([FramedText(prefix, "w1", suffix)], truncate=False, direction="right", prompt=None)[0]
    assert short.input_ids.tolist() == head + ids("w1", add_special_tokens=False).ids + tail
    assert short.characters == len(prefix) + 2 + len(suffix)
    with pytest.raises(EncodeError, match="must have less than 16 tokens"):
        encoder.encode([framed], truncate=False, direction="right", prompt=None)
    with pytest.raises(EncodeError, match="template alone takes"):
        encoder.encode([FramedText(body, "w1", suffix)], truncate=True, direction="right", prompt=None)
    with pytest.raises(EncodeError, match="cannot be mixed"):
        encoder.encode([framed, "plain"], truncate=True, direction="right", prompt=None)
    with pytest.raises(EncodeError, match="`prompt_name` cannot be set"):
        encoder.encode([framed], truncate=True, direction="right", prompt="query: ")
