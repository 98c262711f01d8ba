"""One GPU check, sized for under 5 minutes on one H100 (`bench/gpu_check.sh`).

1. Builds a BERT-base-shaped model with random weights (speed does not depend on
   them) and a WordPiece tokenizer over a synthetic vocabulary.
2. Measures the raw in-process forward throughput: fp16, SDPA, full batches of
   passage-length sequences, no tokenization, no HTTP.
3. Starts embedserve with the torch backend on the GPU and drives it with the
   bench's load generator; prints served tokens/s beside the raw figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import build_corpus
from bench.load import run_load
from bench.server import ServerProcess, free_port, server_command

VOCAB_SIZE = 30522
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_model(target: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    target.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [a + b + c for a in letters for b in letters for c in letters]  # 17576 whole words
    vocab = SPECIALS + words + [f"##{w}" for w in words[: VOCAB_SIZE - len(SPECIALS) - len(words)]]
    (target / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(target / "tokenizer.json"))
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    config.architectures = ["BertModel"]
    BertModel(config).save_pretrained(target)
    return target


def raw_forward_tokens_per_s(model_dir: Path, batch: int, length: int, seconds: float) -> float:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, dtype=torch.float16, attn_implementation="sdpa").cuda().eval()
    ids = torch.randint(1000, VOCAB_SIZE, (batch, length), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model(input_ids=ids, attention_mask=mask)
            runs += 1
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    del model
    torch.cuda.empty_cache()
    return runs * batch * length / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check")
    parser.add_argument("--texts", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=32768)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    model_dir = build_model(Path(tempfile.mkdtemp(prefix="es-gpu-")) / "bert-base-random")
    raw = raw_forward_tokens_per_s(model_dir, batch=64, length=256, seconds=20)
    print(f"raw in-process forward (fp16, SDPA, 64 x 256 tokens): {raw:,.0f} tokens/s", flush=True)

    corpus = build_corpus(model_dir, args.texts, seed=0)
    port = free_port()
    command = server_command(model_dir, port, ["--backend", "torch", "--dtype", "float16",
                                               "--max-batch-tokens", str(args.max_batch_tokens),
                                               "--max-client-batch-size", "64"])
    server = ServerProcess(command=command, port=port)
    server.start()
    try:
        print(f"server healthy after {server.wait_healthy():.1f}s", flush=True)
        run_load(server.base_url, corpus.requests[:16], min(args.concurrency, 16))  # warm-up
        result = run_load(server.base_url, corpus.requests, args.concurrency)
    finally:
        server.stop()
    print(f"served: {result.texts} texts in {result.seconds:.1f}s, {result.tokens_per_s:,.0f} tokens/s, "
          f"p50 {result.latency_ms(0.5):.0f} ms, p99 {result.latency_ms(0.99):.0f} ms, errors {len(result.failures)}")
    print(f"served / raw forward tokens/s: {result.tokens_per_s / raw:.2f}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
