"""Int8 recipes and session settings for the ONNX engine, measured in-process.

`python -m bench.int8_recipes` loads the ONNX engine's float32 graph (export and
fusions from the engine's own cache), quantizes it by each candidate recipe
(backends/int8_recipe.py), and runs every variant over the bench corpus's texts
tokenized like the server does (truncated to the model's max length), grouped into
batches the way the router groups them (arrival order, under a padded-token budget)
and padded into the engine's length-sorted chunks. Per variant: the time of one pass,
its speed-up over float32 in the same round (variants run interleaved, round after
round, because the machine is shared), and the mean and minimum cosine of the pooled,
normalized vectors to float32's. This picks candidates quickly; `python -m bench`
(a real server) confirms them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.corpus import build_corpus
from embedserve.backends.int8_recipe import INT8_RECIPE, Int8Recipe, quantize
from embedserve.backends.onnx_backend import CPU_CHUNK_TOKENS, cpu_session, fuse_transformer, quiet_third_party

ROUTER_BATCH_TOKENS = 16384  # the router's --max-batch-tokens default on 2 cores


@dataclass(frozen=True)
class Variant:
    name: str
    model: Path
    threads: int
    spinning: bool
    chunk_tokens: int
    denormal_as_zero: bool = False
    # The engine keeps onnxruntime from fusing SkipLayerNormalization on CPU; True runs
    # a graph fused the old way, with the session's own fusions all on.
    skip_layer_norm: bool = False


def _default_model_dir() -> Path:
    from bench.__main__ import default_model_dir

    return default_model_dir()


def _plain_model(model_dir: Path, cache_dir: Path) -> Path:
    from embedserve.backends.onnx_backend import resolve_onnx_model
    from embedserve.backends.onnx_cache import OnnxCache

    return resolve_onnx_model(model_dir, "feature-extraction", OnnxCache.at(cache_dir, 0))


def _float32_model(model_dir: Path, cache_dir: Path) -> Path:
    from embedserve.backends.onnx_backend import optimized_model
    from embedserve.backends.onnx_cache import OnnxCache

    config = json.loads((model_dir / "config.json").read_text())
    return optimized_model(_plain_model(model_dir, cache_dir), config, OnnxCache.at(cache_dir, 0))


def _recipes() -> dict[str, Int8Recipe]:
    ops = ("MatMul", "Attention")
    return {
        "matmul": Int8Recipe("matmul", ("MatMul",)),
        "matmul+attention": Int8Recipe("matmul+attention", ops),
        "matmul+attention+embed": Int8Recipe("matmul+attention+embed", (*ops, "EmbedLayerNormalization")),
        "m+a-attn-out-float": Int8Recipe("m+a-attn-out-float", ops, keep_float=("attention/output/dense",)),
        "m+a-ffn-out-float": Int8Recipe("m+a-ffn-out-float", ops, keep_float=(r"layer\.\d+/output/dense",)),
        "m+a-ffn-in-float": Int8Recipe("m+a-ffn-in-float", ops, keep_float=("intermediate/dense",)),
        "m+a-first-layer-float": Int8Recipe("m+a-first-layer-float", ops,
                                             keep_float=(r"layer\.0/", r"^Attention_0$")),
        "m+a-last-layer-float": Int8Recipe("m+a-last-layer-float", ops,
                                            keep_float=(r"layer\.5/", r"^Attention_5$")),
        "m+a-per-tensor": Int8Recipe("m+a-per-tensor", ops, per_channel=False),
        "chosen": INT8_RECIPE,
        **{f"m+a-outliers{k}": Int8Recipe(f"m+a-outliers{k}", ops, outlier_channels=k) for k in (1, 2, 4, 16)},
        **{f"m+a-outliers2-ratio{r}": Int8Recipe(f"m+a-outliers2-ratio{r}", ops, outlier_channels=2,
                                                 outlier_ratio=r) for r in (0.0, 12.0, 15.0)},
        **{f"m+a-outliers4-smooth{t:g}": Int8Recipe(f"m+a-outliers4-smooth{t:g}", ops, outlier_channels=4,
                                                     smooth_to=t) for t in (2.0, 4.0, 8.0)},
        **{f"matmul-outliers{k}": Int8Recipe(f"matmul-outliers{k}", ("MatMul",), outlier_channels=k) for k in (4,)},
        **{f"m+a-ffn-out-float-L{i}": Int8Recipe(f"m+a-ffn-out-float-L{i}", ops,
                                                 keep_float=(rf"layer\.{i}/output/dense",)) for i in range(6)},
    }


def _tokenized(model_dir: Path, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    from tokenizers import Tokenizer

    from embedserve.router.model_config import _max_seq_length

    max_length = _max_seq_length(model_dir) or 512
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return [(np.asarray(e.ids, np.uint32), np.asarray(e.type_ids, np.uint32)) for e in tokenizer.encode_batch(texts)]


def _router_batches(sequences: list[tuple[np.ndarray, np.ndarray]], budget: int) -> list[object]:
    """Arrival order, cut where max_len x size would pass the budget (the router pads-budgets)."""
    from embedserve.backends.base import ModelBatch

    groups: list[list[tuple[np.ndarray, np.ndarray]]] = [[]]
    longest = 0
    for seq in sequences:
        longest_if = max(longest, len(seq[0]))
        if groups[-1] and longest_if * (len(groups[-1]) + 1) > budget:
            groups.append([])
            longest_if = len(seq[0])
        groups[-1].append(seq)
        longest = longest_if
    batches = []
    for group in groups:
        lengths = np.asarray([len(ids) for ids, _ in group], np.uint32)
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
        ids = np.concatenate([i for i, _ in group]).astype(np.uint32)
        types = np.concatenate([t for _, t in group]).astype(np.uint32)
        positions = np.concatenate([np.arange(n, dtype=np.uint32) for n in lengths])
        batches.append(ModelBatch(ids, types, positions, cu, int(lengths.max())))
    return batches


def _runner(variant: Variant) -> Callable[[list[object]], np.ndarray]:
    import onnxruntime as ort

    from embedserve.backends.padding import padded_chunks
    from embedserve.backends.pooling import pool

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = variant.threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if variant.spinning else "0")
    if variant.denormal_as_zero:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = cpu_session(variant.model, options, fuse_skip_layer_norm=variant.skip_layer_norm)
    names = {i.name for i in session.get_inputs()}

    def run(batches: list[object]) -> np.ndarray:
        rows: list[np.ndarray] = []
        for batch in batches:
            out: dict[int, np.ndarray] = {}
            for chunk in padded_chunks(batch, variant.chunk_tokens, 0):  # type: ignore[arg-type]
                feed = {"input_ids": chunk.input_ids, "attention_mask": chunk.attention_mask}
                if "token_type_ids" in names:
                    feed["token_type_ids"] = chunk.token_type_ids
                (states,) = session.run(None, feed)
                for value, seq in zip(pool("mean", states, chunk.attention_mask, chunk.mean_mask), chunk.indices):
                    out[seq] = value
            rows.extend(out[i] for i in range(len(out)))
        vectors = np.stack(rows)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_recipes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="matmul,chosen",
                        help="comma-separated, among: " + ", ".join(_recipes()))
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--spinning", default="1", help="comma-separated 1/0: ORT intra-op spin-waiting")
    parser.add_argument("--chunk-tokens", default=str(CPU_CHUNK_TOKENS), help="comma-separated chunk budgets")
    parser.add_argument("--float32-variants", action="store_true",
                        help="also time float32 under every --spinning / --chunk-tokens setting")
    parser.add_argument("--denormal-as-zero", action="store_true",
                        help="also run every variant with onnxruntime's session.set_denormal_as_zero")
    parser.add_argument("--skip-layer-norm", action="store_true",
                        help="also run float32 and every recipe from a graph with SkipLayerNormalization fused")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "embedserve"))
    args = parser.parse_args(argv)

    model_dir = _default_model_dir()
    float32 = _float32_model(model_dir, Path(args.cache_dir))
    texts = build_corpus(model_dir, args.texts, args.seed).texts
    batches = _router_batches(_tokenized(model_dir, texts), ROUTER_BATCH_TOKENS)
    spins = [s == "1" for s in args.spinning.split(",")]
    chunks = [int(c) for c in args.chunk_tokens.split(",")]
    recipes = _recipes()
    scratch = Path(tempfile.mkdtemp(prefix="int8-recipes-"))
    reference = Variant("float32", float32, args.threads, spins[0], chunks[0])
    variants = [reference]
    if args.float32_variants:
        variants += [Variant(f"float32 spin={int(s)} chunk={c}", float32, args.threads, s, c)
                     for s in spins for c in chunks if (s, c) != (spins[0], chunks[0])]
    graphs = [("", float32, False)]
    if args.skip_layer_norm:
        fused = scratch / "skip-layer-norm.onnx"
        with quiet_third_party():
            fuse_transformer(_plain_model(model_dir, Path(args.cache_dir)), fused,
                             json.loads((model_dir / "config.json").read_text()), skip_layer_norm=True)
        graphs.append((" skip-layer-norm", fused, True))
        variants.append(Variant("float32 skip-layer-norm", fused, args.threads, spins[0], chunks[0],
                                skip_layer_norm=True))
    for name in args.recipes.split(","):
        for suffix, graph, skip_layer_norm in graphs:
            target = scratch / f"{len(variants)}.onnx"
            with quiet_third_party():
                quantize(graph, target, recipes[name], model_dir)
            variants += [Variant(f"{name}{suffix} spin={int(s)} chunk={c}", target, args.threads, s, c,
                                 skip_layer_norm=skip_layer_norm) for s in spins for c in chunks]
    if args.denormal_as_zero:
        variants += [Variant(f"{v.name} denormal=0", v.model, v.threads, v.spinning, v.chunk_tokens, True,
                             v.skip_layer_norm) for v in list(variants)]
    runners = {v.name: _runner(v) for v in variants}
    vectors = {name: run(batches[:1]) for name, run in runners.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            vectors[name] = run(batches)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    base = np.asarray(times[reference.name])
    base_cpu = np.asarray(cpu[reference.name])
    print(f"{len(texts)} texts (seed {args.seed}) in {len(batches)} batches, {args.rounds} rounds, "
          f"{args.threads} threads; speed-up = float32 time / variant time in the same round")
    print("CPU speed-up = float32 CPU seconds / variant CPU seconds (this process, all threads; steadier than "
          "wall time on a shared machine, but it counts spin-waiting)")
    width = max(22, 5 * args.rounds + 2)  # one "0.00 " per round
    names = max(44, *(len(name) + 2 for name in times))
    print(f"{'variant':<{names}}{'wall s/pass':<{width}}{'speed-up':<{width}}{'CPU speed-up':<{width}}"
          f"{'cos mean':>9}{'cos min':>9}")
    for name, seconds in times.items():
        ratios = base / np.asarray(seconds)
        cpu_ratios = base_cpu / np.asarray(cpu[name])
        cos = (vectors[name] * vectors[reference.name]).sum(axis=1)
        print(f"{name:<{names}}{' '.join(f'{s:.2f}' for s in seconds):<{width}}"
              f"{' '.join(f'{r:.2f}' for r in ratios):<{width}}"
              f"{' '.join(f'{r:.2f}' for r in cpu_ratios):<{width}}{cos.mean():>9.4f}{cos.min():>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
