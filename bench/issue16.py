"""Issue 16 on a GPU: the torch engine alone, today's unpadded math against fused and
GEMM-epilogue and compiled layer math (backends/layer_math.py), each eager and replayed
from CUDA graphs (`bench/gpu_issue16.sh`).

Model: BERT-base's shape with random weights (speed does not depend on them), CLS
pooling; batches formed from the bench corpus's mixed lengths under a real-token
budget, as the router forms them. Per row (layer math, graphs, dtype, budget):

- start-up: loading, the kernel check and the graph captures (`startup_s`; the captures
  alone in `capture_s`), then the first forward of the largest batch (`first_batch_s`:
  where `compiled` without graphs compiles);
- parity: min and mean cosine of the pooled rows against transformers in float32, text
  by text, on a 24-text batch and on one full budget batch;
- tokens/s: `embed` one batch at a time (`sync`), and launched two ahead as the
  server does (`pipelined`, backends/pipeline.py);
- how many forwards replayed a graph and how many ran eagerly.

Rows run in order until `--budget-s` is spent; a failing row records its error and the
next one runs. Writes `$OUT/issue16.json`. `--smoke`: a tiny model on CPU (the exact
per-sequence attention kernel; graphs through the eager stand-in), to check the script
where no GPU is lent.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import build_corpus
from bench.gpu_check import budget_batches, build_model, cosine, model_batch, tokenized

MIN_COSINE = 0.999
TARGET_TOKENS_PER_S = 2_500_000
PARITY_TEXTS = 24

# layer math : graphs : dtype : max batch tokens, most telling first (the budget may end the list).
GPU_ROWS = (
    "modules:off:float16:32768",  # today's engine
    "fused:on:float16:32768",
    "epilogue:on:float16:32768",
    "modules:on:float16:32768",
    "compiled:on:float16:32768",
    "fused:off:float16:32768",
    "modules:off:bfloat16:32768",
    "fused:on:bfloat16:32768",
    "epilogue:on:bfloat16:32768",
    "compiled:on:bfloat16:32768",
    "fused:on:float16:65536",
    "compiled:on:float16:65536",
    "compiled:off:float16:32768",
)
SMOKE_ROWS = ("modules:off:float32:1024", "fused:on:float32:1024", "epilogue:off:float32:1024",
              "modules:on:float32:512")


@dataclass(frozen=True)
class Row:
    layers: str
    graphs: str
    dtype: str
    max_batch_tokens: int

    @classmethod
    def parse(cls, text: str) -> Row:
        layers, graphs, dtype, tokens = text.split(":")
        return cls(layers, graphs, dtype, int(tokens))

    @property
    def name(self) -> str:
        return f"{self.layers} layers, graphs {self.graphs}, {self.dtype}, {self.max_batch_tokens} tokens"


@contextmanager
def engine_env(row: Row) -> Iterator[None]:
    names = {"EMBEDSERVE_TORCH_ATTENTION": "varlen", "EMBEDSERVE_TORCH_LAYERS": row.layers,
             "EMBEDSERVE_TORCH_GRAPHS": row.graphs}
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def reference_cls(model_dir: Path, encodings: list[Any], device: str) -> np.ndarray:
    """transformers in float32, each text alone (no padding), CLS rows."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").to(device).eval()
    with torch.inference_mode():
        rows = [model(input_ids=torch.tensor([e.ids], device=device)).last_hidden_state[0, 0].float().cpu().numpy()
                for e in encodings]
    del model
    return np.stack(rows)


def timed_tokens_per_s(engine: Any, batches: list[Any], seconds: float, ahead: bool) -> float:
    """`embed` batch after batch, or (`ahead`) launched with the previous one still in flight."""
    tokens, index, pending = 0, 0, None
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = batches[index % len(batches)]
        if ahead:
            launched = engine.launch_embed(batch)
            if pending is not None:
                pending.result()
            pending = launched
        else:
            engine.embed(batch)  # host arrays back: synchronous
        tokens += len(batch.input_ids)
        index += 1
    if pending is not None:
        pending.result()
    return tokens / (time.perf_counter() - started)


def run_row(row: Row, model_dir: Path, device: str, batches: list[Any], parity: list[tuple[Any, np.ndarray]],
            seconds: float, profile: bool = False) -> dict[str, Any]:
    import torch

    from embedserve.backends.base import EngineSpec
    from embedserve.backends.cuda_graphs import GraphedEncoder
    from embedserve.backends.torch_backend import TorchBackend

    result: dict[str, Any] = {"row": asdict(row)}
    if row.layers == "compiled":
        # Each row compiles anew (inductor's disk cache still helps): dynamo's per-function
        # cache would otherwise fill with earlier rows' entries and fall back to eager.
        torch._dynamo.reset()
    started = time.perf_counter()
    with engine_env(row):
        engine = TorchBackend(EngineSpec(model_dir, device.split(":")[0], row.dtype, "cls",
                                         Path(tempfile.mkdtemp(prefix="es-i16-")), max_batch_tokens=row.max_batch_tokens))
    result["startup_s"] = round(time.perf_counter() - started, 2)
    encoder = engine._varlen
    graphed = encoder if isinstance(encoder, GraphedEncoder) else None
    if graphed is not None:
        result.update(graphs_captured=graphed.captured, graph_buckets=len(graphed.buckets),
                      capture_s=round(graphed.capture_seconds, 2), graph_failure=graphed.failure)
    largest = max(batches, key=lambda b: len(b.input_ids))
    started = time.perf_counter()
    engine.embed(largest)
    synchronize(device)
    result["first_batch_s"] = round(time.perf_counter() - started, 2)
    result["attention"] = engine.attention + _compile_note(engine)

    cosines = []
    for batch, expected in parity:
        cosines.append(cosine(engine.embed(batch).pooled, expected))
    every = np.concatenate(cosines)
    result.update(min_cosine=float(every.min()), mean_cosine=float(every.mean()),
                  parity_ok=bool(every.min() >= MIN_COSINE))

    result["sync_tokens_per_s"] = round(timed_tokens_per_s(engine, batches, seconds / 2, ahead=False))
    result["pipelined_tokens_per_s"] = round(timed_tokens_per_s(engine, batches, seconds / 2, ahead=True))
    if graphed is not None:
        result.update(forwards_replayed=graphed.replayed, forwards_eager=graphed.eager)
    if profile:
        result["kernels"] = kernel_profile(engine, batches, device)
    del engine, encoder, graphed
    gc.collect()
    if device.startswith("cuda"):
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


# Kernel names by kind, for where a forward's device time goes (first match wins).
KERNEL_KINDS = (("attention", ("flash", "fmha", "attention", "attn")),
                ("gemm", ("gemm", "nvjet", "cutlass", "sm90_xmma", "matmul", "addmm", "bmm", "mm_")),
                ("copy", ("memcpy", "memset", "copy")))


def kernel_profile(engine: Any, batches: list[Any], device: str, count: int = 8, top: int = 10) -> dict[str, Any]:
    """torch.profiler over `count` embed batches: device time by kernel kind and the `top`
    kernels (on CPU, the operators' CPU time, which checks the code, not the GPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
        for batch in batches[:count]:
            engine.embed(batch)
        synchronize(device)
    field = "self_device_time_total" if cuda else "self_cpu_time_total"
    timed = [(event.key, float(getattr(event, field, 0.0))) for event in prof.key_averages()]
    timed = [(name, us) for name, us in timed if us > 0]
    total = sum(us for _, us in timed) or 1.0
    kinds: dict[str, float] = {}
    for name, us in timed:
        lowered = name.lower()
        kind = next((k for k, marks in KERNEL_KINDS if any(m in lowered for m in marks)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + us
    tokens = sum(len(b.input_ids) for b in batches[:count])
    return {"device_ms": round(total / 1000, 2), "tokens": tokens,
            "kinds": {k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top": [[name[:90], round(us / total, 3)] for name, us in sorted(timed, key=lambda t: -t[1])[:top]]}


def _compile_note(engine: Any) -> str:
    """A compile failure that happened after start-up (the first forward compiles)."""
    from embedserve.backends.cuda_graphs import GraphedEncoder
    from embedserve.backends.varlen import VarlenEncoder

    encoder = engine._varlen
    inner = encoder.inner if isinstance(encoder, GraphedEncoder) else encoder
    failure = inner.fused.compile_failure if isinstance(inner, VarlenEncoder) and inner.fused else None
    return f"; compile failed: {failure}" if failure and "compile failed" not in engine.attention else ""


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'layers':9} {'graphs':6} {'dtype':9} {'budget':>6} {'sync tok/s':>11} {'pipelined':>11} "
              f"{'min cos':>8} {'start s':>7} {'capture':>7} {'first s':>7}  notes")
    lines = [header, "-" * len(header)]
    for r in rows:
        row = r["row"]
        if "error" in r:
            lines.append(f"{row['layers']:9} {row['graphs']:6} {row['dtype']:9} {row['max_batch_tokens']:>6} "
                         f"FAILED: {r['error'][:100]}")
            continue
        notes = r.get("graph_failure") or ""
        if "forwards_replayed" in r:
            notes = f"{r['forwards_replayed']} replayed, {r['forwards_eager']} eager {notes}"
        if "compile failed" in r["attention"]:
            notes += " compile failed"
        lines.append(f"{row['layers']:9} {row['graphs']:6} {row['dtype']:9} {row['max_batch_tokens']:>6} "
                     f"{r['sync_tokens_per_s']:>11,} {r['pipelined_tokens_per_s']:>11,} {r['min_cosine']:>8.6f} "
                     f"{r['startup_s']:>7.1f} {r.get('capture_s', 0):>7.1f} {r['first_batch_s']:>7.1f}  {notes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.issue16")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on CPU: checks the script, not the GPU")
    parser.add_argument("--rows", default=None, help="comma-separated layers:graphs:dtype:tokens (default: all)")
    parser.add_argument("--texts", type=int, default=None, help="corpus texts to batch (default 4000; smoke 120)")
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per row (default 6; smoke 1)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="no new row starts after this many seconds")
    parser.add_argument("--profile", action="store_true", help="per row, device time by kernel kind (torch.profiler)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    began = time.perf_counter()
    rows = [Row.parse(r) for r in (args.rows.split(",") if args.rows else (SMOKE_ROWS if args.smoke else GPU_ROWS))]
    texts = args.texts or (120 if args.smoke else 4000)
    seconds = args.seconds or (1.0 if args.smoke else 6.0)

    import torch
    import transformers

    device = "cpu" if args.smoke else "cuda:0"
    summary: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                               "device": torch.cuda.get_device_name(0) if device != "cpu" else "cpu",
                               "model": "tiny BERT (2 x 64)" if args.smoke else "BERT-base shape (12 x 768), random",
                               "target tokens/s": TARGET_TOKENS_PER_S, "rows": []}
    model_dir = build_model(Path(tempfile.mkdtemp(prefix="es-i16-")) / "bert", tiny=args.smoke)
    corpus = build_corpus(model_dir, texts, seed=0)
    encodings = tokenized(model_dir, corpus.texts)
    batches_by_budget = {tokens: budget_batches(encodings, tokens) for tokens in {r.max_batch_tokens for r in rows}}
    # Parity: 24 texts in one batch, and the first full batch under the smallest budget.
    parity_sets = [encodings[:PARITY_TEXTS]]
    first = batches_by_budget[min(batches_by_budget)][0]
    parity_sets.append(encodings[: first.size])
    started = time.perf_counter()
    parity = [(model_batch(e), reference_cls(model_dir, e, device)) for e in parity_sets]
    summary["reference_s"] = round(time.perf_counter() - started, 1)
    summary["batches"] = {str(t): {"count": len(b), "mean tokens": int(np.mean([len(x.input_ids) for x in b])),
                                   "mean texts": round(float(np.mean([x.size for x in b])), 1)}
                          for t, b in batches_by_budget.items()}
    print(f"corpus: {texts} texts, batches {summary['batches']}; reference in {summary['reference_s']}s", flush=True)

    for row in rows:
        left = args.budget_s - (time.perf_counter() - began)
        if left < (10 if args.smoke else 25):
            summary["rows"].append({"row": asdict(row), "error": f"skipped: {left:.0f}s of the budget left"})
            continue
        print(f"== {row.name}", flush=True)
        try:
            result = run_row(row, model_dir, device, batches_by_budget[row.max_batch_tokens], parity, seconds,
                             args.profile)
        except Exception as exc:  # noqa: BLE001 - one row's failure is its result; the next row runs
            traceback.print_exc()
            result = {"row": asdict(row), "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            gc.collect()
            if device != "cpu":
                torch.cuda.empty_cache()
        print(json.dumps(result, default=str), flush=True)
        summary["rows"].append(result)
        if out is not None:  # after every row: a timeout still leaves what was measured
            (out / "issue16.json").write_text(json.dumps(summary, indent=1, default=str))

    measured = [r for r in summary["rows"] if "error" not in r]
    best = max(measured, key=lambda r: r["pipelined_tokens_per_s"], default=None)
    summary["best"] = {"row": best["row"], "pipelined_tokens_per_s": best["pipelined_tokens_per_s"],
                       "min_cosine": best["min_cosine"]} if best else None
    summary["seconds"] = round(time.perf_counter() - began, 1)
    print(format_table(summary["rows"]), flush=True)
    print(f"best: {json.dumps(summary['best'])}; target {TARGET_TOKENS_PER_S:,} tokens/s, min cosine {MIN_COSINE}")
    if out is not None:
        (out / "issue16.json").write_text(json.dumps(summary, indent=1, default=str))
    ok = bool(measured) and all(r["parity_ok"] for r in measured)
    print(f"issue16 {'ok' if ok else 'FAILED'}: {len(measured)} of {len(rows)} rows measured, "
          f"parity {'held' if ok else 'FAILED'} in every measured row", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
