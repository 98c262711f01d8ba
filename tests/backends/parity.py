"""Shared by the engine parity tests: tokenized batches and what transformers
computes for them text by text, with no padding anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedserve.backends.base import ModelBatch


def encode(model_dir: Path, texts: list[str], pairs: list[str] | None = None) -> tuple[ModelBatch, list[list[int]], list[list[int]]]:
    """The batch the router would send, and each sequence's ids and token types."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(100)
    encodings = [tokenizer.encode(t) if pairs is None else tokenizer.encode(t, pairs[i]) for i, t in enumerate(texts)]
    ids = np.concatenate([np.asarray(e.ids, np.uint32) for e in encodings])
    types = np.concatenate([np.asarray(e.type_ids, np.uint32) for e in encodings])
    lengths = [len(e.ids) for e in encodings]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    positions = np.concatenate([np.arange(n, dtype=np.uint32) for n in lengths])
    batch = ModelBatch(ids, types, positions, cu, max(lengths))
    return batch, [e.ids for e in encodings], [e.type_ids for e in encodings]


def reference_states(model: object, ids: list[int], types: list[int] | None = None) -> np.ndarray:
    """Last hidden states of one sequence, alone (so unpadded), float32."""
    import torch

    inputs = {"input_ids": torch.tensor([ids])}
    if types is not None:
        inputs["token_type_ids"] = torch.tensor([types])
    with torch.inference_mode():
        output = model(**inputs)  # type: ignore[operator]
    return output.last_hidden_state[0].numpy()  # type: ignore[no-any-return]


def reference_pooled(model_dir: Path, sequences: list[list[int]], pooling: str) -> np.ndarray:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    rows = []
    for ids in sequences:
        hidden = reference_states(model, ids)
        rows.append({"mean": hidden.mean(0), "cls": hidden[0], "last_token": hidden[-1]}[pooling])
    return np.stack(rows)


def reference_logits(model_dir: Path, sequences: list[list[int]], types: list[list[int]]) -> np.ndarray:
    """A classifier's logits for each sequence alone, by transformers (eager attention)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    uses_types = int(getattr(model.config, "type_vocab_size", 0) or 0) > 1
    rows = []
    with torch.inference_mode():
        for ids, type_ids in zip(sequences, types):
            inputs = {"input_ids": torch.tensor([ids])}
            if uses_types:
                inputs["token_type_ids"] = torch.tensor([type_ids])
            rows.append(model(**inputs).logits[0].numpy())
    return np.stack(rows)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


def embed_over_http(url: str, texts: list[str], **extra: object) -> np.ndarray:
    """A server's /embed answer for `texts`, as float32 rows."""
    import httpx

    response = httpx.post(f"{url}/embed", json={"inputs": texts, **extra}, timeout=120)
    assert response.status_code == 200, response.text
    return np.asarray(response.json(), dtype=np.float32)


def st_encode(model_dir: Path, texts: list[str], prompt_name: str | None = None,
              trust_remote_code: bool = False) -> np.ndarray:
    """sentence-transformers' own `encode` of `texts`, float32 rows."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", trust_remote_code=trust_remote_code)
    return np.asarray(model.encode(texts, prompt_name=prompt_name), dtype=np.float32)


def assert_native_matches_remote_code(model_dir: Path, texts: list[str], cache_dir: Path) -> None:
    """The torch engine's own implementation of a remote-code family, mean-pooled, against
    transformers running the checkpoint's own code text by text: a padded batch of mixed
    lengths, then one text alone."""
    from embedserve.backends.base import EngineSpec
    from embedserve.backends.engines import load_engine
    from embedserve.backends.padding import padded_chunks

    engine = load_engine("torch", EngineSpec(model_dir, "cpu", "", "mean", cache_dir))
    for part in (texts, texts[2:3]):
        batch, sequences, types = encode(model_dir, part)
        if len(part) > 1:
            assert any(c.lengths.min() < c.lengths.max() for c in padded_chunks(batch, None, 0))
        got = engine.embed(batch).pooled
        assert cosine(got, remote_code_mean(model_dir, sequences, types)).min() >= 0.9999


def remote_code_mean(model_dir: Path, sequences: list[list[int]], types: list[list[int]]) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), "reference must be the model's own code"
    with torch.inference_mode():
        return np.stack([
            model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([t])).last_hidden_state[0].mean(0).numpy()
            for ids, t in zip(sequences, types)
        ])
