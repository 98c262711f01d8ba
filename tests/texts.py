"""Fixed, varied test texts: 1 to 300 words, ASCII and not."""

from __future__ import annotations

import random

_WORDS = (
    "search retrieval embedding vector index query passage document ranking model server batch token "
    "latency throughput cluster kubernetes python network memory cache river mountain history music "
    "language science garden winter coffee library station market ocean planet engine theory"
).split()
_FOREIGN = ["café", "naïve", "Zürich", "東京", "Москва", "São Paulo", "über", "façade", "日本語の文", "emoji 🙂"]


def varied_texts(count: int = 50, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    lengths = [1, 2, 3, 5, 300, 250, 120] + [rng.randint(1, 300) for _ in range(count - 7)]
    texts = []
    for i, n in enumerate(lengths[:count]):
        words = [rng.choice(_WORDS) for _ in range(n)]
        if i % 3 == 0:
            words[rng.randrange(n)] = rng.choice(_FOREIGN)
        text = " ".join(words)
        texts.append(text.capitalize() + ("." if i % 2 else "?"))
    return texts
