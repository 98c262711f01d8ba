"""One GPU check, sized for under 5 minutes on one H100 (`bench/gpu_check.sh`).

1. Builds a BERT-base-shaped model with random weights (speed does not depend on
   them) and a WordPiece tokenizer over a synthetic vocabulary.
2. Varlen attention: which kernel the torch engine finds, and the engine's fp16
   unpadded output against transformers in float32, text by text, for the
   BERT-base model, a tiny XLM-RoBERTa (position offset), a tiny reranker, and
   a tiny GTE (our implementation against its remote code).
3. The raw in-process forward throughput: fp16, SDPA, full batches of
   passage-length sequences, no tokenization, no HTTP.
4. The torch engine in-process on the bench corpus's mixed lengths, padded
   against unpadded, batches formed as the router forms them.
5. embedserve with the torch backend on the GPU, driven by the bench's load
   generator, unpadded (the default) and then padded, then unpadded again from
   several load processes; served tokens/s beside the raw figure, and the cores
   each part of the server kept busy (where the bottleneck is).
6. Issue 12's table (bench/load_matrix.py): one server at `--max-batch-tokens 65536`,
   mixed 1-8-text and bulk 32-text requests at 64 and 512 clients: served tokens/s,
   p50/p99, failures by status, GPU busy (NVML) and each role's cores.

`--matrix-only` runs part 6 alone (about 3 minutes); `--smoke` runs it on CPU with the
near-free model and a few clients, to check the script where no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import build_corpus
from bench.load import LoadResult, run_load, run_load_processes
from bench.load_matrix import MatrixSettings, format_table, rows_as_json, run_matrix
from bench.process_cpu import CpuMeter
from bench.server import ServerProcess, free_port, server_command

VOCAB_SIZE = 30522
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PARITY_TEXTS = 24
PARITY_MAX_TOKENS = 126  # the tiny models have 128 (+ 2 offset) positions
MIN_FP16_COSINE = 0.999


def build_model(target: Path, tiny: bool = False) -> Path:
    """BERT-base's shape with random weights; `tiny`: 2 layers of 64, for CPU smoke runs."""
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
    (target / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                               "model_max_length": 512}))
    (target / "special_tokens_map.json").write_text(json.dumps(
        {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}))
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    torch.manual_seed(0)
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else \
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    config = BertConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=512, **shape)
    config.architectures = ["BertModel"]
    BertModel(config).save_pretrained(target)
    return target


@contextmanager
def attention_mode(mode: str) -> Iterator[None]:
    previous = os.environ.get("EMBEDSERVE_TORCH_ATTENTION")
    os.environ["EMBEDSERVE_TORCH_ATTENTION"] = mode
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("EMBEDSERVE_TORCH_ATTENTION", None)
        else:
            os.environ["EMBEDSERVE_TORCH_ATTENTION"] = previous


def tokenized(model_dir: Path, texts: list[str], pairs: list[str] | None = None, max_length: int = 512) -> list[Any]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return [tokenizer.encode(t) if pairs is None else tokenizer.encode(t, pairs[i]) for i, t in enumerate(texts)]


def model_batch(encodings: list[Any]) -> Any:
    from embedserve.backends.base import ModelBatch

    ids = np.concatenate([np.asarray(e.ids, np.uint32) for e in encodings])
    types = np.concatenate([np.asarray(e.type_ids, np.uint32) for e in encodings])
    lengths = [len(e.ids) for e in encodings]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    positions = np.concatenate([np.arange(n, dtype=np.uint32) for n in lengths])
    return ModelBatch(ids, types, positions, cu, max(lengths))


def budget_batches(encodings: list[Any], max_tokens: int) -> list[Any]:
    """FIFO batches under a real-token budget, as the router forms them for an unpadded backend."""
    batches, current, tokens = [], [], 0
    for encoding in encodings:
        if current and tokens + len(encoding.ids) > max_tokens:
            batches.append(model_batch(current))
            current, tokens = [], 0
        current.append(encoding)
        tokens += len(encoding.ids)
    if current:
        batches.append(model_batch(current))
    return batches


def engine(model_dir: Path, mode: str, pooling: str = "cls") -> Any:
    from embedserve.backends.base import EngineSpec
    from embedserve.backends.torch_backend import TorchBackend

    with attention_mode(mode):
        return TorchBackend(EngineSpec(model_dir, "cuda", "float16", pooling, Path(tempfile.mkdtemp())))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


def check_kernels() -> dict[str, Any]:
    import torch

    from embedserve.backends.varlen import FAST_KERNELS, find_fast_kernel, kernel_error

    report: dict[str, Any] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    for name, make in FAST_KERNELS.items():
        for dtype in (torch.float16, torch.bfloat16):
            try:
                report[f"{name} {dtype}"] = f"max abs error {kernel_error(make(), 'cuda', dtype):.2e}"
            except Exception as exc:  # noqa: BLE001 - report why a kernel is unavailable
                report[f"{name} {dtype}"] = f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    chosen = find_fast_kernel("cuda", torch.float16)
    report["chosen fp16"] = chosen.name if chosen else None
    return report


def check_parity(bert_dir: Path, corpus_texts: list[str]) -> dict[str, float]:
    """Unpadded fp16 engine output against transformers fp32, text by text (no padding anywhere)."""
    import torch
    import transformers

    from tests.models import build_family_model, build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="es-parity-"))
    texts = corpus_texts[:PARITY_TEXTS]
    result: dict[str, float] = {}
    for name, model_dir, pooling in [
        ("bert-base", bert_dir, "cls"),
        ("tiny xlm-roberta", build_family_model("xlm-roberta", root / "xlmr", bert_dir), "cls"),
        ("tiny bert mean", build_family_model("bert", root / "bert", bert_dir), "mean"),
    ]:
        served = engine(model_dir, "varlen", pooling)
        encodings = tokenized(model_dir, texts, max_length=PARITY_MAX_TOKENS)
        got = served.embed(model_batch(encodings)).pooled
        del served
        reference = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager").cuda().eval()
        rows = []
        with torch.inference_mode():
            for e in encodings:
                hidden = reference(input_ids=torch.tensor([e.ids], device="cuda")).last_hidden_state[0].float()
                rows.append((hidden[0] if pooling == "cls" else hidden.mean(0)).cpu().numpy())
        result[f"{name} min cosine"] = float(cosine(got, np.stack(rows)).min())
        del reference

    reranker_dir = build_tiny_model("reranker", root / "reranker", bert_dir)
    served = engine(reranker_dir, "varlen")
    encodings = tokenized(reranker_dir, texts[:12], pairs=texts[12:24], max_length=PARITY_MAX_TOKENS)
    got = served.predict(model_batch(encodings))
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(reranker_dir).cuda().eval()
    with torch.inference_mode():
        expected = np.stack([
            reference(input_ids=torch.tensor([e.ids], device="cuda"),
                      token_type_ids=torch.tensor([e.type_ids], device="cuda")).logits[0].float().cpu().numpy()
            for e in encodings
        ])
    result["tiny reranker max abs logit error"] = float(np.abs(got - expected).max())
    torch.cuda.empty_cache()
    return result


def check_gte_parity(bert_dir: Path, corpus_texts: list[str]) -> dict[str, float]:
    """GTE's own implementation on the GPU (fp16, padded and unpadded) against its remote code in float32 on CPU."""
    import torch

    from tests.models import build_gte_model

    gte_dir = build_gte_model(Path(tempfile.mkdtemp(prefix="es-gte-")) / "gte", bert_dir,
                              rope_scaling={"type": "ntk", "factor": 2.0})
    encodings = tokenized(gte_dir, corpus_texts[:PARITY_TEXTS], max_length=PARITY_MAX_TOKENS)
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(gte_dir, trust_remote_code=True).eval()
    with torch.inference_mode():
        expected = np.stack([
            reference(input_ids=torch.tensor([e.ids]), token_type_ids=torch.tensor([e.type_ids]))
            .last_hidden_state[0, 0].numpy() for e in encodings
        ])
    result: dict[str, float] = {}
    for mode in ("auto", "padded"):
        served = engine(gte_dir, mode)
        got = served.embed(model_batch(encodings)).pooled
        result[f"gte {served.attention} min cosine"] = float(cosine(got, expected).min())
        del served
    torch.cuda.empty_cache()
    return result


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


def engine_tokens_per_s(model_dir: Path, mode: str, batches: list[Any], seconds: float) -> tuple[float, str]:
    """The torch engine alone (no router, no HTTP) on mixed-length batches."""
    import torch

    served = engine(model_dir, mode)
    served.embed(batches[0])
    torch.cuda.synchronize()
    tokens, started, index = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        batch = batches[index % len(batches)]
        served.embed(batch)  # returns host arrays: synchronous
        tokens += len(batch.input_ids)
        index += 1
    elapsed = time.perf_counter() - started
    attention = served.attention
    del served
    torch.cuda.empty_cache()
    return tokens / elapsed, attention


def served_run(model_dir: Path, mode: str, corpus: Any, args: argparse.Namespace,
               load_processes: int = 1) -> tuple[LoadResult, dict[str, float]]:
    """Served throughput, and the cores each part of the server (and the load generator) kept busy."""
    import resource

    port = free_port()
    command = server_command(model_dir, port, ["--backend", "torch", "--dtype", "float16",
                                               "--max-batch-tokens", str(args.max_batch_tokens),
                                               "--max-client-batch-size", "64"])
    with attention_mode(mode):
        server = ServerProcess(command=command, port=port)
        server.start()
    try:
        print(f"[{mode}] server healthy after {server.wait_healthy():.1f}s", flush=True)
        run_load(server.base_url, corpus.requests[:16], min(args.concurrency, 16))  # warm-up
        assert server.popen is not None
        meter = CpuMeter(server.popen.pid)
        meter.start()
        def load_cpu_seconds() -> float:
            own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime  # children: load processes

        before = load_cpu_seconds()
        started = time.perf_counter()
        if load_processes == 1:
            result = run_load(server.base_url, corpus.requests, args.concurrency)
        else:
            result = run_load_processes(server.base_url, corpus.requests, args.concurrency, load_processes)
        wall = time.perf_counter() - started
        cores = meter.cores_used(wall)
        cores["load generator"] = round((load_cpu_seconds() - before) / wall, 2)
        attention_lines = [line for line in server.log_tail().splitlines() if "attention:" in line]
        print(f"[{mode}] {attention_lines[-1] if attention_lines else 'no attention line in log'}", flush=True)
    finally:
        server.stop()
    print(f"[{mode}] served: {result.texts} texts in {result.seconds:.1f}s, {result.tokens_per_s:,.0f} tokens/s, "
          f"p50 {result.latency_ms(0.5):.0f} ms, p99 {result.latency_ms(0.99):.0f} ms, "
          f"errors {len(result.failures)}; cores busy: {cores}", flush=True)
    if result.failures:
        statuses = Counter(str(f.status) for f in result.failures)
        print(f"[{mode}] failures by status: {dict(statuses)}; first: {result.failures[0].detail}", flush=True)
    return result, cores


def section(summary: dict[str, Any], name: str, run: Callable[[], Any]) -> Any:
    """Run one part of the check; a failure is recorded and the rest still runs (one GPU lease, one try)."""
    started = time.perf_counter()
    try:
        value = run()
    except Exception as exc:  # noqa: BLE001 - reported in the summary and the exit code
        traceback.print_exc()
        summary[name] = f"FAILED: {type(exc).__name__}: {exc}"
        return None
    summary[name] = value
    print(f"== {name} ({time.perf_counter() - started:.0f}s): {json.dumps(value, indent=1, default=str)}", flush=True)
    return value


def matrix_settings(args: argparse.Namespace) -> MatrixSettings:
    server_args = ["--backend", "torch", "--max-batch-tokens", "65536",
                   # Every input of 512 clients x 32 texts may be in flight: 429s would be the figure.
                   "--max-concurrent-requests", "32768", "--max-client-batch-size", "64"]
    if not args.smoke:
        server_args += ["--dtype", "float16"]
    if args.router_workers is not None:
        server_args += ["--router-workers", str(args.router_workers)]
    if args.smoke:
        return MatrixSettings(clients=(4, 16), load_processes=2, mixed_texts=160, bulk_requests_per_client=2,
                              server_args=tuple(server_args))
    return MatrixSettings(clients=tuple(int(c) for c in args.matrix_clients.split(",")),
                          load_processes=args.matrix_load_processes, mixed_texts=args.matrix_texts,
                          bulk_requests_per_client=args.matrix_bulk_per_client, server_args=tuple(server_args))


def matrix_main(args: argparse.Namespace, out: Path | None) -> int:
    summary: dict[str, Any] = {}
    if args.smoke:
        from bench.cpu_per_request import _bundled_model_dir
        from bench.near_free_model import build_near_free_model

        root = Path(tempfile.mkdtemp(prefix="es-smoke-"))
        try:
            tokenizer_source = _bundled_model_dir()
        except ImportError:  # a machine like the GPU one, without the bundled model: our synthetic vocabulary
            tokenizer_source = build_model(root / "tiny", tiny=True)
        model_dir = build_near_free_model(root / "near-free", tokenizer_source)
    else:
        model_dir = build_model(Path(tempfile.mkdtemp(prefix="es-gpu-")) / "bert-base-random")
    section(summary, "load matrix", lambda: add_matrix(summary, model_dir, matrix_settings(args)))
    print(json.dumps(summary, indent=1, default=str))
    if out is not None:
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    rows = summary.get("load matrix rows") or []
    ok = bool(rows) and all(not row["failures"] for row in rows)
    print(f"load matrix {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def add_matrix(summary: dict[str, Any], model_dir: Path, settings: MatrixSettings) -> str:
    rows = run_matrix(model_dir, settings)
    summary["load matrix settings"] = {"clients": settings.clients, "load processes": settings.load_processes,
                                       "server args": " ".join(settings.server_args)}
    summary["load matrix rows"] = rows_as_json(rows)
    table = format_table(rows)
    print(table, flush=True)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check")
    parser.add_argument("--texts", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=32768)
    parser.add_argument("--seconds", type=float, default=10.0, help="per in-process throughput figure")
    parser.add_argument("--load-processes", type=int, default=4)
    parser.add_argument("--matrix-only", action="store_true", help="only issue 12's load table (part 6)")
    parser.add_argument("--smoke", action="store_true",
                        help="part 6 on CPU with the near-free model and few clients: checks the script, not the GPU")
    parser.add_argument("--router-workers", type=int, default=None,
                        help="the server's --router-workers for part 6 (default: the launcher's default)")
    parser.add_argument("--matrix-clients", default="64,512", help="client counts of part 6 (default 64,512)")
    parser.add_argument("--matrix-texts", type=int, default=24000, help="texts per mixed row of part 6")
    parser.add_argument("--matrix-bulk-per-client", type=int, default=8,
                        help="32-text requests per client in the bulk rows of part 6 (default 8)")
    parser.add_argument("--matrix-load-processes", type=int, default=6, help="client processes in part 6")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    if args.smoke or args.matrix_only:
        return matrix_main(args, out)
    summary: dict[str, Any] = {}

    model_dir = build_model(Path(tempfile.mkdtemp(prefix="es-gpu-")) / "bert-base-random")
    corpus = build_corpus(model_dir, args.texts, seed=0)

    section(summary, "kernels", check_kernels)
    parity = section(summary, "parity", lambda: check_parity(model_dir, corpus.texts))
    gte_parity = section(summary, "gte parity", lambda: check_gte_parity(model_dir, corpus.texts))
    raw = section(summary, "raw forward tokens/s (fp16 sdpa, 64 x 256)",
                  lambda: raw_forward_tokens_per_s(model_dir, batch=64, length=256, seconds=args.seconds))
    batches = budget_batches(tokenized(model_dir, corpus.texts[:2000]), args.max_batch_tokens)
    for mode in ("padded", "auto"):
        section(summary, f"engine tokens/s, mixed lengths, {mode}",
                lambda: engine_tokens_per_s(model_dir, mode, batches, args.seconds))
    served: dict[str, LoadResult] = {}

    def serve(mode: str, load_processes: int = 1) -> dict[str, Any]:
        result, cores = served_run(model_dir, mode, corpus, args, load_processes)
        served[mode if load_processes == 1 else f"{mode} x{load_processes}"] = result
        return {"tokens/s": result.tokens_per_s, "texts/s": result.texts_per_s, "p50 ms": result.latency_ms(0.5),
                "p99 ms": result.latency_ms(0.99), "errors": len(result.failures), "cores busy": cores}

    for mode in ("auto", "padded"):
        section(summary, f"served, {mode}", lambda: serve(mode))
    # One Python client tops out before the server does: the same load from several processes.
    section(summary, f"served, auto, {args.load_processes} load processes",
            lambda: serve("auto", args.load_processes))
    if raw and "auto" in served:
        summary["served unpadded / raw forward"] = served["auto"].tokens_per_s / raw
    if len(served) == 2:
        summary["served unpadded / served padded"] = served["auto"].tokens_per_s / served["padded"].tokens_per_s
    section(summary, "load matrix", lambda: add_matrix(summary, model_dir, matrix_settings(args)))

    print(json.dumps(summary, indent=1, default=str))
    if out is not None:
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    ok = parity is not None and all(v >= MIN_FP16_COSINE for k, v in parity.items() if "cosine" in k)
    ok = ok and parity["tiny reranker max abs logit error"] < 1e-2
    ok = ok and gte_parity is not None and all(v >= MIN_FP16_COSINE for v in gte_parity.values())
    ok = ok and len(served) == 3 and all(not r.failures for r in served.values())
    ok = ok and bool(summary.get("load matrix rows")) and all(not r["failures"] for r in summary["load matrix rows"])
    failed = [k for k, v in summary.items() if isinstance(v, str) and v.startswith("FAILED")]
    print(f"gpu check {'ok' if ok and not failed else 'FAILED'}; failed sections: {failed or 'none'}")
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
