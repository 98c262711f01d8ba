"""The run cache gives exactly `tokenizers`' ids, or declines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from embedserve.tokenizer_pool import run_cache
from embedserve.tokenizer_pool.encoder import Encoder
from embedserve.tokenizer_pool.run_cache import RunCache

# Printable ASCII (no '[', which starts BERT's added tokens) and characters that
# exercise the normalizer: accents, case with context, CJK, combining marks,
# Unicode spaces and punctuation, zero-width and compatibility characters.
ALPHABET = [chr(c) for c in range(0x20, 0x7F) if c != 0x5B] + list(
    "\t\n\r\u00e9\u00c9\u00df\u0130\u03a3\u03c3\u03c2\u6771\u4eac\u00d8\u0301\u00a0\u3000\u200b\u2014\u00bf\u00ab\ufb01\u2460\u00b2"
)


def _tokenizer(model_dir: Path, edit: dict[str, object] | None = None) -> Tokenizer:
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    for key, value in (edit or {}).items():
        spec[key] = value
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    words = ["Search", "engine", "QUERY", "passage's", "e-mail", "x86_64", "naïve", "東京", "Σίσυφος", "2026-11-27"]
    texts = []
    for _ in range(count):
        if rng.random() < 0.5:
            texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 50))))
        else:
            texts.append(" ".join(rng.choice(words) + rng.choice(["", ",", ".", "!", "  ", "\n"]) for _ in range(rng.randint(1, 20))))
    return texts


def _assert_parity(tokenizer: Tokenizer, cache: RunCache, texts: list[str]) -> None:
    for start in range(0, len(texts), 5):
        batch = texts[start : start + 5]
        for add_special_tokens in (True, False):
            got = cache.encode(batch, add_special_tokens)
            assert got is not None
            want = [e.ids for e in tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)]
            assert got == want, batch


@pytest.mark.parametrize("lowercase", [True, False])
def test_same_ids_as_tokenizers(model_dir: Path, lowercase: bool) -> None:
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    tokenizer = _tokenizer(model_dir, {"normalizer": {**spec["normalizer"], "lowercase": lowercase}})
    cache = RunCache.for_tokenizer(tokenizer)
    assert cache is not None
    texts = _texts(0, 600)
    _assert_parity(tokenizer, cache, texts)  # learning
    _assert_parity(tokenizer, cache, texts)  # from the cache


def test_truncation_matches_tokenizers(model_dir: Path) -> None:
    tokenizer = _tokenizer(model_dir)
    cache = RunCache.for_tokenizer(tokenizer)
    assert cache is not None
    texts = _texts(1, 200)
    for direction in ("right", "left"):
        tokenizer.enable_truncation(12, direction=direction)
        for text in texts:
            ids = cache.encode([text], True)
            assert ids is not None
            assert cache.truncate(ids[0], 12, True, direction) == tokenizer.encode(text).ids


def test_added_tokens_and_control_characters_go_the_plain_way(model_dir: Path) -> None:
    cache = RunCache.for_tokenizer(_tokenizer(model_dir))
    assert cache is not None
    assert cache.encode(["fill the [MASK] here"], True) is None
    assert cache.encode(["a fine text", "bell\x07"], True) is None
    assert cache.encode(["a fine text"], True) is not None


def test_other_pipelines_are_declined(model_dir: Path) -> None:
    assert RunCache.for_tokenizer(_tokenizer(model_dir, {"pre_tokenizer": {"type": "Whitespace"}})) is None
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    stripping = [{**token, "lstrip": True} for token in spec["added_tokens"]]
    assert RunCache.for_tokenizer(_tokenizer(model_dir, {"added_tokens": stripping})) is None


def test_bounded_and_still_exact(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_cache, "_ENTRIES", 50)
    tokenizer = _tokenizer(model_dir)
    cache = RunCache.for_tokenizer(tokenizer)
    assert cache is not None
    long_word = "x" * 200
    _assert_parity(tokenizer, cache, [*_texts(2, 100), long_word])
    assert len(cache._ids) <= 50 + 100 * 50  # cleared whenever a call would overflow it
    assert long_word not in cache._ids


def test_encoder_uses_it_and_agrees_with_the_plain_way(model_dir: Path) -> None:
    cached = Encoder(model_dir, max_input_length=32)
    plain = Encoder(model_dir, max_input_length=32)
    plain._runs = None
    assert cached._runs is not None
    texts = _texts(3, 60)
    for direction in ("right", "left"):
        a = cached.encode_packed(texts, True, direction, "query: ")
        b = plain.encode_packed(texts, True, direction, "query: ")
        assert (a.ids, a.lengths, a.type_ids, a.characters) == (b.ids, b.lengths, b.type_ids, b.characters)
