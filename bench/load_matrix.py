"""Issue 12's served-throughput table: one server, four loads, each row with what the
GPU and every server role were doing meanwhile.

Rows: mixed requests of 1-8 bench-corpus texts and bulk requests of 32 texts, each at
a low and a high client count (64 and 512 on the GPU). The load is `bench/mp_load.py`
(several client processes, raw HTTP/1.1, base64 answers, every vector checked). Per
row: served tokens/s, p50/p99, failures by status, the GPU's busy fraction sampled from
NVML (or `nvidia-smi`) during the load, and the cores each role kept busy, read from
/proc (bench/process_cpu.py: the router role counts every router process).
`--smoke` runs the same code on CPU with the near-free model and a few clients, so the
GPU run works the first time.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.corpus import Corpus, build_corpus
from bench.mp_load import MpLoadResult, run_client_processes
from bench.process_cpu import CpuMeter
from bench.server import HOST, ServerProcess, free_port, server_command

BULK_TEXTS = 32
SAMPLE_EVERY_S = 0.1
WARMUP_REQUESTS = 64


@dataclass(frozen=True)
class MatrixSettings:
    clients: tuple[int, ...]  # e.g. (64, 512)
    load_processes: int
    mixed_texts: int  # corpus texts for each mixed row (requests of 1-8)
    bulk_requests_per_client: int  # bulk rows send this many 32-text requests per client
    server_args: tuple[str, ...]  # backend, dtype, budget, router workers, ...


@dataclass
class MatrixRow:
    workload: str  # "mixed 1-8" or "bulk 32"
    clients: int
    load_processes: int
    requests: int
    texts: int
    tokens_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failures: dict[str, int]
    failure_examples: dict[str, str]
    gpu_busy: float | None  # mean NVML utilization over the load, 0-1; None without a GPU
    gpu_busy_source: str
    cores: dict[str, float] = field(default_factory=dict)  # per role, and its busiest process


class GpuBusySampler:
    """Mean of NVML's utilization.gpu (the share of the last sample period in which a
    kernel ran) over the load, sampled by a thread; `nvidia-smi` when pynvml is missing."""

    def __init__(self) -> None:
        self.source = "none"
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader()

    def _reader(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "nvml"
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - no pynvml, no driver: try the CLI, then nothing
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"

            def query() -> float:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "--id=0"], capture_output=True, text=True, timeout=5, check=True).stdout
                return float(out.strip().splitlines()[0])

            return query
        return None

    def start(self) -> None:
        if self._read is None:
            return
        self._thread = threading.Thread(target=self._run, name="gpu-busy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                self._samples.append(self._read() / 100.0)
            except Exception:  # noqa: BLE001 - one failed sample is not the run's failure
                continue

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return sum(self._samples) / len(self._samples) if self._samples else None


def bulk_requests(corpus: Corpus, count: int, size: int = BULK_TEXTS) -> list[list[str]]:
    """`count` requests of `size` texts, going round the corpus (the server keeps no
    cache, so a text sent twice costs twice)."""
    texts = corpus.texts
    return [[texts[(start + k) % len(texts)] for k in range(size)] for start in range(0, count * size, size)]


def run_row(port: int, launcher_pid: int, workload: str, requests: list[list[str]], clients: int,
            load_processes: int) -> MatrixRow:
    meter = CpuMeter(launcher_pid)
    sampler = GpuBusySampler()
    started: list[float] = []

    def start_meters() -> None:
        meter.start()
        sampler.start()
        started.append(time.perf_counter())

    result: MpLoadResult = run_client_processes(HOST, port, requests, clients, load_processes, on_start=start_meters)
    wall = time.perf_counter() - started[0]
    busy = sampler.stop()
    cores = meter.cores_used(wall)
    cores["load generator"] = round(result.client_cpu_s / wall, 2)
    return MatrixRow(
        workload=workload, clients=clients, load_processes=result.processes, requests=result.requests,
        texts=result.texts, tokens_per_s=round(result.tokens_per_s), requests_per_s=round(result.requests_per_s, 1),
        p50_ms=round(result.latency_ms(0.5), 1), p99_ms=round(result.latency_ms(0.99), 1),
        failures=dict(result.failures), failure_examples=result.failure_examples,
        gpu_busy=None if busy is None else round(busy, 3), gpu_busy_source=sampler.source, cores=cores,
    )


def run_matrix(model_dir: Path, settings: MatrixSettings, seed: int = 0) -> list[MatrixRow]:
    """One server for all rows."""
    largest = max(settings.clients)
    corpus = build_corpus(model_dir, settings.mixed_texts, seed)
    mixed = [corpus.requests for _ in settings.clients]
    bulk = [bulk_requests(corpus, clients * settings.bulk_requests_per_client) for clients in settings.clients]
    warmup = build_corpus(model_dir, WARMUP_REQUESTS * 4, seed + 999).requests
    port = free_port()
    server = ServerProcess(server_command(model_dir, port, list(settings.server_args)), port)
    print(f"load matrix: {' '.join(server.command)}", flush=True)
    server.start()
    rows: list[MatrixRow] = []
    try:
        print(f"server healthy after {server.wait_healthy():.1f}s", flush=True)
        assert server.popen is not None
        run_client_processes(HOST, port, warmup, min(largest, 64), settings.load_processes)
        for workload, loads in (("mixed 1-8", mixed), (f"bulk {BULK_TEXTS}", bulk)):
            for clients, requests in zip(settings.clients, loads):
                row = run_row(port, server.popen.pid, workload, requests, clients, settings.load_processes)
                print(format_row(row), flush=True)
                rows.append(row)
    finally:
        server.stop_and_report()
    return rows


def format_row(row: MatrixRow) -> str:
    busy = "n/a" if row.gpu_busy is None else f"{row.gpu_busy:.0%}"
    roles = ", ".join(f"{role} {cores:.2f}" for role, cores in row.cores.items())
    return (f"[{row.workload}, {row.clients} clients] {row.tokens_per_s:,.0f} tokens/s, {row.requests_per_s:.0f} req/s, "
            f"p50 {row.p50_ms:.0f} / p99 {row.p99_ms:.0f} ms, GPU busy {busy} ({row.gpu_busy_source}), "
            f"failures {row.failures or 'none'} {row.failure_examples or ''}; cores: {roles}")


def format_table(rows: list[MatrixRow]) -> str:
    lines = ["| workload | clients | served tokens/s | p50 / p99 ms | GPU busy | router | tokenizer workers "
             "| backend | load generator | failures |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        busy = "n/a" if row.gpu_busy is None else f"{row.gpu_busy:.0%}"
        lines.append(
            f"| {row.workload} | {row.clients} | {row.tokens_per_s:,.0f} | {row.p50_ms:.0f} / {row.p99_ms:.0f} "
            f"| {busy} | {row.cores.get('router', 0):.2f} | {row.cores.get('tokenizer_pool', 0):.2f} "
            f"| {row.cores.get('backends', 0):.2f} | {row.cores.get('load generator', 0):.2f} "
            f"| {row.failures or 0} |")
    return "\n".join(lines)


def rows_as_json(rows: list[MatrixRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
