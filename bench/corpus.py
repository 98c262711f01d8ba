"""A deterministic, realistic-looking corpus of /embed requests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

# A few non-ASCII words so the server's tokenizer sees accents, umlauts and CJK,
# which the BERT normalizer strips or splits differently from plain ASCII.
NON_ASCII_WORDS: tuple[str, ...] = ("café", "naïve", "Zürich", "東京", "résumé", "São", "Øresund", "coöperate")

QUERY_SHARE = 0.30
QUERY_WORDS = (5, 25)
PASSAGE_WORDS = (80, 300)
TEXTS_PER_REQUEST = (1, 8)
NON_ASCII_RATE = 0.01
PUNCTUATION_RATE = 0.08
SENTENCE_END_RATE = 0.07


@dataclass(frozen=True)
class Corpus:
    requests: list[list[str]]

    @property
    def texts(self) -> list[str]:
        return [text for request in self.requests for text in request]

    def __len__(self) -> int:
        return sum(len(request) for request in self.requests)


def load_words(model_dir: Path) -> list[str]:
    """Whole-word vocab entries, so every word is one the tokenizer knows well."""
    words: list[str] = []
    with open(model_dir / "vocab.txt", encoding="utf-8") as handle:
        for line in handle:
            entry = line.rstrip("\n")
            # isascii keeps out the single CJK/accented characters of BERT's vocab;
            # the explicit NON_ASCII_WORDS cover those cases in a controlled amount.
            if len(entry) >= 3 and entry.isascii() and entry.isalpha():
                words.append(entry)
    if not words:
        raise ValueError(f"no usable words in {model_dir / 'vocab.txt'}")
    return words


def _text(rng: random.Random, words: list[str], n_words: int, question: bool) -> str:
    out: list[str] = []
    start_sentence = True
    for i in range(n_words):
        word = rng.choice(NON_ASCII_WORDS) if rng.random() < NON_ASCII_RATE else rng.choice(words)
        if start_sentence:
            word = word[:1].upper() + word[1:]
            start_sentence = False
        last = i == n_words - 1
        roll = rng.random()
        if not last and roll < SENTENCE_END_RATE:
            word += rng.choice(".!?")
            start_sentence = True
        elif not last and roll < SENTENCE_END_RATE + PUNCTUATION_RATE:
            word += rng.choice([",", ",", ";", ":"])
        out.append(word)
    out[-1] += "?" if question else "."
    return " ".join(out)


def _one_text(rng: random.Random, words: list[str]) -> str:
    if rng.random() < QUERY_SHARE:
        return _text(rng, words, rng.randint(*QUERY_WORDS), question=rng.random() < 0.5)
    return _text(rng, words, rng.randint(*PASSAGE_WORDS), question=False)


def build_corpus(model_dir: Path, n_texts: int, seed: int,
                 texts_per_request: tuple[int, int] = TEXTS_PER_REQUEST) -> Corpus:
    """`n_texts` texts split into requests of 1-8 (or `texts_per_request`); the last
    request is cut to fit."""
    rng = random.Random(seed)
    words = load_words(model_dir)
    requests: list[list[str]] = []
    remaining = n_texts
    while remaining > 0:
        size = min(rng.randint(*texts_per_request), remaining)
        requests.append([_one_text(rng, words) for _ in range(size)])
        remaining -= size
    return Corpus(requests=requests)


def build_queries(model_dir: Path, n_queries: int, seed: int, n_words: int = 8) -> list[str]:
    """Short search queries in the corpus' style (same vocabulary, half of them questions),
    each exactly `n_words` words: what a search box sends while an index is being built."""
    rng = random.Random(seed)
    words = load_words(model_dir)
    return [_text(rng, words, n_words, question=rng.random() < 0.5) for _ in range(n_queries)]
