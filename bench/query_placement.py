"""Where a query's forward costs least between bulk slices, in-process (bench/PRIORITY_NOTES.md).

`python -m bench.query_placement [--onnx PATH]`: the main two-thread ONNX session runs
bulk slices back to back; after each, one 12-token query runs on the main session or on
a second one-thread session, with the main session spinning or not. Prints what a query
adds per cycle in wall time and in process CPU (medians of interleaved sets).
Without --onnx it takes the newest optimized export in embedserve's cache (start the
server once to make it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CACHE = Path.home() / ".cache" / "embedserve" / "onnx"


def session(path: Path, threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    from embedserve.backends.onnx_backend import cpu_session

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return cpu_session(path, options)


def feed(sequences: int, length: int, names: set[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = rng.integers(1000, 5000, (sequences, length), dtype=np.int64)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {name: value for name, value in inputs.items() if name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=None)
    parser.add_argument("--sets", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=40)
    args = parser.parse_args()
    from embedserve.backends.onnx_backend import OPTIMIZED_STEP

    path = args.onnx or max(DEFAULT_CACHE.glob(f"*-{OPTIMIZED_STEP}/model.onnx"), key=lambda p: p.stat().st_mtime)
    mains = {"spinning": session(path, 2, True), "not spinning": session(path, 2, False)}
    one_thread = session(path, 1, False)
    names = {i.name for i in one_thread.get_inputs()}
    rng = np.random.default_rng(0)
    bulk, query = feed(2, 96, names, rng), feed(1, 12, names, rng)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.sets):
        for spin, main_session in mains.items():
            for place, query_session in (("none", None), ("main session", main_session), ("one-thread session", one_thread)):
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(args.cycles):
                    main_session.run(None, bulk)
                    if query_session is not None:
                        query_session.run(None, query)
                samples.setdefault((spin, place), []).append(
                    ((time.perf_counter() - wall) * 1000 / args.cycles, (time.process_time() - cpu) * 1000 / args.cycles))
    medians = {key: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
               for key, runs in samples.items()}
    print(f"{path}\n| main session | query on | ms per bulk slice (wall / CPU) | query adds (wall / CPU) |")
    print("|---|---|---|---|")
    for (spin, place), (wall, cpu) in medians.items():
        base_wall, base_cpu = medians[(spin, "none")]
        print(f"| {spin} | {place} | {wall:.1f} / {cpu:.1f} | {wall - base_wall:+.1f} / {cpu - base_cpu:+.1f} |")


if __name__ == "__main__":
    main()
