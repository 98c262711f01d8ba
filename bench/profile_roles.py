"""`python -m bench.profile_roles OUT [--server-args "..."] [--texts N]`: py-spy on every
server process under the near-free bench load (`python -m bench cpu-per-request`'s).

Each process's samples land in OUT/<role>-<pid>.txt as collapsed stacks (py-spy's `raw`
format: one `frame;frame;... count` line per stack), with a summary printed per process:
the functions holding the most samples, by their own time and with their callees. This is
how the findings in bench/CPU_NOTES.md were read. Needs py-spy (`pip install py-spy`),
and ptrace rights over the server's processes (they are this user's children here).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.corpus import build_corpus
from bench.cpu_per_request import WARMUP_TEXTS, _bundled_model_dir
from bench.mp_load import run_client_processes
from bench.near_free_model import build_near_free_model
from bench.process_cpu import role_pids
from bench.server import HOST, ServerProcess, free_port, server_command

SAMPLES_PER_S = 200


def summarize(collapsed: Path, top: int = 15) -> str:
    """The functions with the most samples in one collapsed-stack file: own and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")") for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{collapsed.name}: no samples"
    lines = [f"{collapsed.name}: {total} samples", "  own time:"]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("  with callees:")
    lines += [f"    {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_roles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the collapsed stacks")
    parser.add_argument("--server-args", default="", help='extra server flags, e.g. "--router-workers 2"')
    parser.add_argument("--texts", type=int, default=8000, help="corpus texts to send (default 8000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections (default 32)")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("error: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    bundled = _bundled_model_dir()
    corpus = build_corpus(bundled, args.texts, 0)
    warmup = build_corpus(bundled, WARMUP_TEXTS, 1_000_003)
    with tempfile.TemporaryDirectory(prefix="embedserve-near-free-") as tmp:
        model_dir = build_near_free_model(Path(tmp), bundled)
        port = free_port()
        server = ServerProcess(server_command(model_dir, port, ["--backend", "torch", *shlex.split(args.server_args)]),
                               port)
        server.start()
        try:
            server.wait_healthy()
            assert server.popen is not None
            run_client_processes(HOST, port, warmup.requests, args.clients, 2)
            outputs: list[Path] = []
            spies: list[subprocess.Popen[bytes]] = []
            for role, pids in role_pids(server.popen.pid).items():
                for pid in pids:
                    outputs.append(args.out / f"{role}-{pid}.txt")
                    spies.append(subprocess.Popen(
                        [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(SAMPLES_PER_S),
                         "--nonblocking", "-o", str(outputs[-1])],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)  # py-spy attaches
            result = run_client_processes(HOST, port, corpus.requests, args.clients, 2)
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for spy in spies:
                spy.wait(timeout=60)
        finally:
            server.stop_and_report()
    print(f"{len(corpus.requests)} requests in {result.seconds:.1f}s, failures {dict(result.failures) or 'none'}")
    for output in outputs:
        print(summarize(output) if output.exists() else f"{output.name}: py-spy wrote nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
