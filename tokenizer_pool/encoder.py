"""Text -> token ids with TEI's rules: prompts, character guard, truncation, id inputs."""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal, cast

import numpy as np
from tokenizers import Encoding, Tokenizer

from embedserve.tokenizer_pool.frames import FramedText
from embedserve.tokenizer_pool.limits import EncodeError, character_limit, check_characters, guard_text
from embedserve.tokenizer_pool.run_cache import RunCache

# The wire's uint32 buffers are little-endian; array("I") writes native order.
assert array("I").itemsize == 4 and sys.byteorder == "little", "encode_packed assumes little-endian uint32"

__all__ = [
    "Direction", "EncodeError", "EncodedInput", "Encoder", "EncoderInput", "FramedText", "PackedEncodings", "TextPair",
    "TokenColumns", "UnknownModelError", "encoder_for",
]

Direction = Literal["right", "left"]

# A static model's input left with no token is sent as this one id, past any
# vocabulary: the static engine counts it for nothing (backends/static.py).
STATIC_EMPTY_ID = 2**32 - 1


@dataclass(frozen=True)
class TextPair:
    first: str
    second: str


EncoderInput = str | np.ndarray | TextPair | FramedText

# Distinct prefixes and suffixes of framed texts whose ids are kept (a template has two).
MAX_FRAME_PARTS = 16


@dataclass(frozen=True)
class TokenColumns:
    """One input's tokens as parallel lists: far cheaper than an object per token
    when a legal input has a hundred thousand of them."""

    ids: list[int]
    texts: list[str]
    special: list[bool]
    starts: list[int | None]
    stops: list[int | None]


@dataclass(frozen=True)
class PackedEncodings:
    """A request's encodings packed for the wire: `ids` holds every input's ids
    (little-endian uint32) back to back, `lengths` splits them."""

    ids: bytes
    lengths: list[int]
    # Same layout as `ids`; None when every type id is 0.
    type_ids: bytes | None
    characters: list[int]
    pool_start: int


@dataclass(frozen=True)
class EncodedInput:
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    characters: int
    # Leading tokens mean pooling leaves out (include_prompt false); 0: none.
    pool_start: int = 0


class Encoder:
    def __init__(self, model_dir: Path, max_input_length: int, exclude_prompt_from_pooling: bool = False,
                 static_embedding: bool = False) -> None:
        """`static_embedding`: model2vec's tokenization (`StaticRules`) instead of TEI's special tokens."""
        tokenizer_file = model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"{tokenizer_file} is missing: a fast tokenizer is required")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._truncation: tuple[Direction, int] | None = None
        self.max_input_length = max_input_length
        self._vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self._exclude_prompt_from_pooling = exclude_prompt_from_pooling
        self._prompt_lengths: dict[str, int] = {}
        self._frame_parts: dict[str, list[int]] = {}
        self._runs = RunCache.for_tokenizer(self._tokenizer)
        self._static = StaticRules.of(self._tokenizer, max_input_length) if static_embedding else None

    def encode(self, inputs: list[EncoderInput], truncate: bool, direction: Direction, prompt: str | None) -> list[EncodedInput]:
        id_lists, type_lists, characters, pool_start = self._encodings(inputs, truncate, direction, prompt)
        types = type_lists or [[0] * len(ids) for ids in id_lists]
        return [
            EncodedInput(np.asarray(ids, dtype=np.uint32), np.asarray(type_ids, dtype=np.uint32), chars, pool_start)
            for ids, type_ids, chars in zip(id_lists, types, characters)
        ]

    def encode_packed(
        self, inputs: list[EncoderInput], truncate: bool, direction: Direction, prompt: str | None
    ) -> PackedEncodings:
        """`encode`, with every input's ids in one uint32 buffer (the encode link's layout)."""
        id_lists, type_lists, characters, pool_start = self._encodings(inputs, truncate, direction, prompt)
        # array.array from the id lists: cheaper than one numpy array per input.
        ids = array("I", chain.from_iterable(id_lists)).tobytes()
        type_ids = None
        if type_lists is not None and any(map(any, type_lists)):
            type_ids = array("I", chain.from_iterable(type_lists)).tobytes()
        return PackedEncodings(ids, [len(i) for i in id_lists], type_ids, characters, pool_start)

    def _encodings(
        self, inputs: list[EncoderInput], truncate: bool, direction: Direction, prompt: str | None
    ) -> tuple[list[list[int]], list[list[int]] | None, list[int], int]:
        """Every input's ids and type ids (None: all 0), characters and pool start."""
        framed = [item for item in inputs if isinstance(item, FramedText)]
        if framed:
            if len(framed) != len(inputs):
                raise EncodeError("framed texts cannot be mixed with other inputs in one call")
            return self._framed(framed, truncate, direction, prompt), None, [_characters(f) for f in framed], 0
        texts: list[str | tuple[str, str]] = []
        characters: list[int] = []
        specials: list[bool] = []
        limit = character_limit(self.max_input_length)
        for item in inputs:
            if isinstance(item, TextPair):
                if prompt is not None:
                    raise EncodeError("`prompt_name` cannot be set with dual inputs")
                characters.append(len(item.first) + len(item.second))
                # Each side of a pair gets half the character budget, as in TEI.
                texts.append((guard_text(item.first, truncate, limit // 2), guard_text(item.second, truncate, limit // 2)))
                specials.append(True)
                continue
            if isinstance(item, str):
                text, add_special = (prompt or "") + item, True
                characters.append(len(text))
            else:
                assert not isinstance(item, FramedText)  # framed calls return above
                text, add_special = self._text_of_ids(item, prompt)
                characters.append(len(item))
            if self._static is not None:
                text, add_special = self._static.cut(text, truncate), False
            texts.append(guard_text(text, truncate, limit))
            specials.append(add_special)
        self._set_truncation(truncate, direction)
        pool_start = self._prompt_length(prompt) if prompt is not None and self._exclude_prompt_from_pooling else 0
        uniform = bool(specials) and (all(specials) or not any(specials))
        if uniform and self._runs is not None and not any(isinstance(t, tuple) for t in texts):
            from_runs = self._runs.encode(cast(list[str], texts), specials[0])
            if from_runs is not None:
                if truncate:
                    from_runs = [self._runs.truncate(ids, self.max_input_length, specials[0], direction) for ids in from_runs]
                self._check_lengths(map(len, from_runs))
                if self._static is not None:
                    from_runs = self._static.kept(from_runs)
                return from_runs, None, characters, pool_start
        encodings: list[Encoding]
        if uniform:
            # One call for the request: it saves a Python <-> Rust round trip per
            # text (~15% of the tokenizer's CPU on bench texts, rayon off).
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=specials[0] if specials else True)
        else:
            encodings = [
                self._tokenizer.encode(sequence[0], sequence[1], add_special_tokens=True)
                if isinstance(sequence, tuple)
                else self._tokenizer.encode(sequence, add_special_tokens=add_special)
                for sequence, add_special in zip(texts, specials)
            ]
        self._check_lengths(map(len, encodings))
        if self._static is not None:
            return self._static.kept([e.ids for e in encodings]), None, characters, pool_start
        return [e.ids for e in encodings], [e.type_ids for e in encodings], characters, pool_start

    def _framed(
        self, items: list[FramedText], truncate: bool, direction: Direction, prompt: str | None
    ) -> list[list[int]]:
        """Prefix, body and suffix encoded apart without special tokens and joined, the
        body cut to what the frame leaves of max_input_length (Qwen3-Reranker's model
        card encodes its prompts the same way)."""
        if prompt is not None:
            raise EncodeError("`prompt_name` cannot be set with a reranker template")
        self._set_truncation(False, "right")
        limit = character_limit(self.max_input_length)
        bodies = [guard_text(item.body, truncate, max(limit - len(item.prefix) - len(item.suffix), 0))
                  for item in items]
        encodings = self._tokenizer.encode_batch(bodies, add_special_tokens=False)
        id_lists = []
        for item, encoding in zip(items, encodings):
            prefix, suffix = self._frame_part(item.prefix), self._frame_part(item.suffix)
            body: list[int] = encoding.ids
            budget = self.max_input_length - len(prefix) - len(suffix)
            if truncate and len(body) > budget:
                if budget <= 0:
                    raise EncodeError(f"the reranker template alone takes {len(prefix) + len(suffix)} tokens, "
                                      f"more than the maximum input length {self.max_input_length}")
                body = body[:budget] if direction == "right" else body[len(body) - budget:]
            id_lists.append(prefix + body + suffix)
        self._check_lengths(map(len, id_lists))
        return id_lists

    def _frame_part(self, text: str) -> list[int]:
        known = self._frame_parts.get(text)
        if known is None:
            if len(self._frame_parts) >= MAX_FRAME_PARTS:
                self._frame_parts.clear()
            known = self._frame_parts[text] = list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return known

    def _check_lengths(self, lengths: Iterable[int]) -> None:
        for length in lengths:
            if length > self.max_input_length:
                raise EncodeError(f"`inputs` must have less than {self.max_input_length} tokens. Given: {length}")
            if length == 0 and self._static is None:
                raise EncodeError("`inputs` cannot be empty")

    def _prompt_length(self, prompt: str) -> int:
        """sentence-transformers' prompt_length: the prompt encoded alone, less its
        closing special token, i.e. the leading special token plus the prompt's."""
        known = self._prompt_lengths.get(prompt)
        if known is None:
            # Outside the request's truncation: the prompt is measured whole.
            saved = self._tokenizer.truncation
            self._tokenizer.no_truncation()
            known = max(len(self._tokenizer.encode(prompt, add_special_tokens=True).ids) - 1, 0)
            if saved is not None:
                self._tokenizer.enable_truncation(**saved)
            self._prompt_lengths[prompt] = known
        return known

    def _text_of_ids(self, ids: np.ndarray, prompt: str | None) -> tuple[str, bool]:
        # TEI decodes client ids to text and re-encodes them, so truncation and
        # prompts behave as for text. Without a prompt the client's own special
        # tokens are kept and none are added.
        self._check_vocabulary(ids)
        if prompt is None:
            return self._tokenizer.decode(ids.tolist(), skip_special_tokens=False), False
        return prompt + self._tokenizer.decode(ids.tolist(), skip_special_tokens=True), True

    def tokenize(self, inputs: list[str], add_special_tokens: bool, prompt: str | None) -> list[TokenColumns]:
        """Tokens with the text they cover and UTF-8 byte offsets (TEI's /tokenize)."""
        self.check_tokenizable(inputs, prompt)
        return [self.tokenize_one(item, add_special_tokens, prompt) for item in inputs]

    def check_tokenizable(self, inputs: list[str], prompt: str | None) -> None:
        """/tokenize never truncates: any input over the character limit is refused."""
        limit = character_limit(self.max_input_length)
        for item in inputs:
            check_characters(len(prompt or "") + len(item), limit)

    def tokenize_one(self, item: str, add_special_tokens: bool, prompt: str | None) -> TokenColumns:
        self._set_truncation(False, "right")
        text = (prompt or "") + item
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        byte_at = _byte_offsets(text)
        texts: list[str] = []
        starts: list[int | None] = []
        stops: list[int | None] = []
        special = [bool(flag) for flag in encoding.special_tokens_mask]
        for token, is_special, (start, stop) in zip(encoding.tokens, special, encoding.offsets):
            if is_special:
                texts.append(token)
                starts.append(None)
                stops.append(None)
            else:
                texts.append(text[start:stop])
                starts.append(byte_at(start))
                stops.append(byte_at(stop))
        return TokenColumns(list(encoding.ids), texts, special, starts, stops)

    def decode(self, id_lists: list[np.ndarray], skip_special_tokens: bool) -> list[str]:
        for ids in id_lists:
            self._check_vocabulary(ids)
        return [self._tokenizer.decode(ids.tolist(), skip_special_tokens=skip_special_tokens) for ids in id_lists]

    def _check_vocabulary(self, ids: np.ndarray) -> None:
        if len(ids) and int(ids.max()) >= self._vocab_size:
            raise EncodeError(f"token id {int(ids.max())} is out of the vocabulary (size {self._vocab_size})")

    def _set_truncation(self, truncate: bool, direction: Direction) -> None:
        wanted = (direction, self.max_input_length) if truncate else None
        if wanted == self._truncation:
            return
        if wanted is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(self.max_input_length, strategy="longest_first", direction=direction)
        self._truncation = wanted


class UnknownModelError(Exception):
    """A call names a model index the worker does not serve: the router and the
    worker were configured apart, a bug, answered as a tokenizer failure."""


def encoder_for(encoders: Sequence[Encoder], model: int) -> Encoder:
    """The encoder of `model`, an index into the worker's TokenizerConfig.models."""
    if not 0 <= model < len(encoders):
        raise UnknownModelError(
            f"tokenizer worker has no model {model}: it serves {len(encoders)} model(s). This is a bug."
        )
    return encoders[model]


def _characters(item: FramedText) -> int:
    return len(item.prefix) + len(item.body) + len(item.suffix)


@dataclass(frozen=True)
class StaticRules:
    """model2vec's `StaticModel.encode` tokenization, beside the encoder's own: no
    special tokens; when truncating, the text first cut to max_length x the median
    length of the vocabulary's tokens in characters; after truncation to max_length
    tokens, the unknown token dropped; an input with no token left is one
    STATIC_EMPTY_ID (a zero vector)."""

    char_limit: int
    unk_id: int | None

    @classmethod
    def of(cls, tokenizer: Tokenizer, max_length: int) -> StaticRules:
        median = int(np.median([len(token) for token in tokenizer.get_vocab()]))
        model = json.loads(tokenizer.to_str())["model"]
        # Unigram names its unknown token by id; WordPiece, BPE and WordLevel by text.
        unk_id = model.get("unk_id") if model.get("type") == "Unigram" else \
            (tokenizer.token_to_id(model["unk_token"]) if model.get("unk_token") is not None else None)
        return cls(max_length * median, unk_id)

    def cut(self, text: str, truncate: bool) -> str:
        return text[: self.char_limit] if truncate else text

    def kept(self, id_lists: list[list[int]]) -> list[list[int]]:
        if self.unk_id is not None:
            id_lists = [[i for i in ids if i != self.unk_id] for ids in id_lists]
        return [ids or [STATIC_EMPTY_ID] for ids in id_lists]


def _byte_offsets(text: str) -> Callable[[int], int]:
    """Character offset -> UTF-8 byte offset in `text`."""
    if text.isascii():
        return int
    table: list[int] = np.concatenate(
        [[0], np.cumsum([len(ch.encode("utf-8")) for ch in text], dtype=np.int64)]
    ).tolist()
    return table.__getitem__
