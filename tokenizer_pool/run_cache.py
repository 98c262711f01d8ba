"""Token ids of a BERT-style tokenizer, assembled from cached runs of a text.

With BERT's normalizer and pre-tokenizer, ASCII whitespace and ASCII punctuation
always end a pre-token, and normalization works one character at a time. So a
text's ids are the concatenation of the ids of its runs: maximal stretches of
characters that are neither ASCII whitespace nor ASCII punctuation, and single
ASCII punctuation characters. Natural text repeats its words, so the ids of a run
are looked up in a dictionary far more cheaply than `tokenizers` re-derives them
(about 7x less CPU per text on the bench corpus once the words are known); the
runs not yet known are encoded in one `tokenizers` call joined by spaces and
split back by offsets. Only tokenizers whose pipeline makes this exact qualify
(`RunCache.for_tokenizer`), and texts holding what the run split cannot see
(added tokens, ASCII control characters) go the plain way.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections import ChainMap
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate, chain

from tokenizers import Tokenizer

__all__ = ["RunCache"]

# Runs, or one ASCII punctuation character; ASCII whitespace separates.
_RUN = re.compile(r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+|[!-/:-@\[-`{-~]")
# BERT's normalizer deletes these (control characters), which would join the runs
# around them; \t \n \r are whitespace to it, as they are to the run split.
_ASCII_CONTROL = "".join(chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
# A run this long is rare and WordPiece gives up on words over 100 characters;
# keeping such runs out of the cache keeps its memory bounded by entries.
_LONGEST_CACHED_RUN = 64
_ENTRIES = 1 << 17


@dataclass(frozen=True)
class _Specials:
    prefix: list[int]
    suffix: list[int]


class RunCache:
    def __init__(self, tokenizer: Tokenizer, lowercase: bool, specials: _Specials, blocked: str) -> None:
        self._tokenizer = tokenizer
        self._lowercase = lowercase
        self._specials = specials
        self._blocked = re.compile("[" + re.escape(blocked) + "]")
        self._ids: dict[str, list[int]] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> RunCache | None:
        """A cache for `tokenizer`, or None when its pipeline is not one the run
        split reproduces exactly."""
        serialized = tokenizer.to_str()
        spec = json.loads(serialized)
        normalizer, pre_tokenizer = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
        if normalizer.get("type") != "BertNormalizer" or pre_tokenizer.get("type") != "BertPreTokenizer":
            return None
        if (spec.get("model") or {}).get("type") != "WordPiece":
            return None
        if not normalizer.get("clean_text", True):
            return None  # control characters would then stay inside a run
        added = spec.get("added_tokens") or []
        if any(t["lstrip"] or t["rstrip"] or t["single_word"] or any(c.isspace() for c in t["content"]) for t in added):
            return None
        # Its own copy: the caller sets truncation on its tokenizer per request, and
        # the runs must be encoded whole.
        own = Tokenizer.from_str(serialized)
        own.no_padding()
        own.no_truncation()
        specials = _probe_specials(own)
        if specials is None:
            return None
        # An added token is matched in the raw text, possibly across a run's edge:
        # a text holding the first character of one goes the plain way.
        firsts = {t["content"][0] for t in added if t["content"]}
        blocked = _ASCII_CONTROL + "".join(sorted(firsts | {c.swapcase() for c in firsts}))
        return cls(own, bool(normalizer.get("lowercase", True)), specials, blocked)

    def encode(self, texts: list[str], add_special_tokens: bool) -> list[list[int]] | None:
        """Every text's ids, or None when one of them must go the plain way."""
        if any(self._blocked.search(text) for text in texts):
            return None
        run_lists = [_RUN.findall(self._normalize_ascii(text)) for text in texts]
        try:
            bodies = [list(chain.from_iterable(map(self._ids.__getitem__, runs))) for runs in run_lists]
        except KeyError:
            lookup = ChainMap(self._learn(chain.from_iterable(run_lists)), self._ids).__getitem__
            bodies = [list(chain.from_iterable(map(lookup, runs))) for runs in run_lists]
        if not add_special_tokens:
            return bodies
        prefix, suffix = self._specials.prefix, self._specials.suffix
        return [[*prefix, *body, *suffix] for body in bodies]

    def truncate(self, ids: list[int], max_length: int, add_special_tokens: bool, direction: str) -> list[int]:
        """`tokenizers`' truncation of one text's ids to `max_length`, its special
        tokens kept, from the right or the left."""
        if len(ids) <= max_length:
            return ids
        head, tail = (len(self._specials.prefix), len(self._specials.suffix)) if add_special_tokens else (0, 0)
        keep = max(max_length - head - tail, 0)
        body = ids[head : len(ids) - tail]
        body = body[:keep] if direction == "right" else body[len(body) - keep :]
        return [*ids[:head], *body, *ids[len(ids) - tail :]]

    def _normalize_ascii(self, text: str) -> str:
        # bytes.lower() lowers ASCII letters only: the cache key of a run that holds
        # other letters stays as written and `tokenizers` lowers it by its own rules.
        if not self._lowercase:
            return text
        return text.lower() if text.isascii() else text.encode("utf-8").lower().decode("utf-8")

    def _learn(self, runs: Iterable[str]) -> dict[str, list[int]]:
        """Encode the runs not yet known; keep the short ones, return them all."""
        distinct = list(dict.fromkeys(runs))
        missing = [run for run in distinct if run not in self._ids]
        if len(self._ids) + len(missing) > _ENTRIES:
            self._ids.clear()
            missing = distinct
        # One call for every unknown run: a call per run costs more than the text.
        encoding = self._tokenizer.encode(" ".join(missing), add_special_tokens=False)
        starts = list(accumulate((len(run) + 1 for run in missing[:-1]), initial=0))
        learned: dict[str, list[int]] = {run: [] for run in missing}
        pieces = list(learned.values())
        for token_id, (start, _) in zip(encoding.ids, encoding.offsets):
            pieces[bisect_right(starts, start) - 1].append(token_id)
        self._ids.update((run, ids) for run, ids in learned.items() if len(run) <= _LONGEST_CACHED_RUN)
        return learned


def _probe_specials(tokenizer: Tokenizer) -> _Specials | None:
    """The special tokens a single text gets, read off an encoding of a known word."""
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True)
    if not plain or any(full.type_ids):
        return None
    for at in range(len(full.ids) - len(plain) + 1):
        if full.ids[at : at + len(plain)] == plain:
            return _Specials(full.ids[:at], full.ids[at + len(plain) :])
    return None
