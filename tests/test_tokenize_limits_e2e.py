"""TEI's character guard on every tokenizing path, and a server that stays responsive
while tokenize requests are huge (issue 11, point 2). Real launcher, real workers,
real sockets.

Timing bounds compare with a baseline measured in the same test (medians of several
probes), so a loaded machine slows both sides alike.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import RunningServer, start_server
from tests.models import build_tiny_model

# Room for a 2 M-character /tokenize and for 32 inputs just under the character limit.
PAYLOAD_LIMIT = 8_000_000
WORDS = "the quick brown fox jumps over the lazy dog while tokenizers count characters "
# Allowed extra median latency of a one-word /embed while over-long requests arrive.
EMBED_DELAY_BOUND_S = 0.1


def _text(characters: int) -> str:
    return (WORDS * (characters // len(WORDS) + 1))[:characters]


def _limit(server: RunningServer) -> int:
    return int(httpx.get(f"{server.url}/info").json()["max_input_length"]) * 250


def _refusal(limit: int, given: int) -> str:
    return f"Input validation error: `inputs` must have less than {limit} characters. Given: {given}"


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120)


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The bundled embedding model with a payload limit that lets huge bodies in, and
    no auto-truncation (the OpenAI route's only setting)."""
    with start_server("--payload-limit", str(PAYLOAD_LIMIT), "--auto-truncate", "false",
                      tmp_dir=tmp_path_factory.mktemp("roomy")) as running:
        yield running


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[RunningServer]:
    path = build_tiny_model("reranker", tmp_path_factory.mktemp("models") / "reranker", model_dir)
    with start_server("--model-id", str(path), "--payload-limit", str(PAYLOAD_LIMIT),
                      tmp_dir=tmp_path_factory.mktemp("limits-rr")) as running:
        yield running


# ------------------------------------------------------------------ responsiveness


@dataclass
class Probes:
    """Latencies of /health and of a one-word /embed, taken in turn."""

    health_status: list[int] = field(default_factory=list)
    health_s: list[float] = field(default_factory=list)
    embed_s: list[float] = field(default_factory=list)

    def take(self, client: httpx.Client, rounds: int, pause_s: float = 0.05, embed: bool = True) -> None:
        for _ in range(rounds):
            started = time.perf_counter()
            self.health_status.append(client.get("/health").status_code)
            self.health_s.append(time.perf_counter() - started)
            if not embed:
                time.sleep(pause_s)
                continue
            started = time.perf_counter()
            response = client.post("/embed", json={"inputs": "hello"})
            self.embed_s.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            time.sleep(pause_s)

    def summary(self) -> str:
        embed = f"; embed median {statistics.median(self.embed_s) * 1000:.0f} ms" if self.embed_s else ""
        failed = sum(status != 200 for status in self.health_status)
        return (f"health median {statistics.median(self.health_s) * 1000:.0f} ms, "
                f"max {max(self.health_s) * 1000:.0f} ms, {failed} not 200{embed}")


class Load:
    """Threads that repeat a call until stopped, recording what each call returned."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.outcomes: list[tuple[str, float, Any]] = []
        self._lock = threading.Lock()

    def add(self, name: str, call: Callable[[], Any], repeat: bool = True) -> None:
        def run() -> None:
            while True:
                started = time.perf_counter()
                outcome = call()
                with self._lock:
                    self.outcomes.append((name, time.perf_counter() - started, outcome))
                if not repeat or self._stop.is_set():
                    return

        self._threads.append(threading.Thread(target=run, name=name, daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=300)
            assert not thread.is_alive(), f"{thread.name} never finished"

    def wait_for_first(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.outcomes) < count:
            assert time.monotonic() < deadline, f"no answers after {timeout_s}s: {self.outcomes}"
            time.sleep(0.01)


def _grpc_code(call: Callable[[], Any]) -> Callable[[], tuple[grpc.StatusCode, str]]:
    def run() -> tuple[grpc.StatusCode, str]:
        try:
            call()
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, ""

    return run


def test_huge_tokenize_is_refused_at_once_while_health_and_embed_stay_fast(roomy: RunningServer) -> None:
    limit = _limit(roomy)
    http_text, grpc_text = _text(2_000_000), _text(3_500_000)
    with httpx.Client(base_url=roomy.url, timeout=60) as client:
        baseline = Probes()
        baseline.take(client, rounds=9)

        # Encoded once: the probes should compete with the server's work, not the test's.
        http_body = json.dumps({"inputs": http_text}).encode()
        grpc_request = tei_pb2.EncodeRequest(inputs=grpc_text)

        def http_tokenize() -> tuple[int, Any]:
            with httpx.Client(base_url=roomy.url, timeout=120) as own:
                response = own.post("/tokenize", content=http_body, headers={"content-type": "application/json"})
                return response.status_code, response.json()

        channel = grpc.insecure_channel(roomy.grpc_target)
        stub = tei_pb2_grpc.TokenizeStub(channel)
        load = Load()
        for i in range(3):
            load.add(f"http-{i}", http_tokenize)
        load.add("grpc", _grpc_code(lambda: stub.Tokenize(grpc_request, timeout=120)))
        load.add("grpc-stream", _grpc_code(lambda: list(stub.TokenizeStream(
            iter([tei_pb2.EncodeRequest(inputs="fine"), grpc_request]), timeout=120))))
        with load:
            load.wait_for_first(5)
            during = Probes()
            during.take(client, rounds=9)
        channel.close()

    refusal_s = [elapsed for _, elapsed, _ in load.outcomes]
    print(f"\nbaseline: {baseline.summary()}\nwhile {len(load.outcomes)} huge tokenize calls ran: {during.summary()}; "
          f"their answers: median {statistics.median(refusal_s) * 1000:.0f} ms, max {max(refusal_s) * 1000:.0f} ms")
    for name, _, outcome in load.outcomes:
        if name.startswith("http"):
            assert outcome == (422, {"error": _refusal(limit, 2_000_000), "error_type": "Validation"})
        else:
            assert outcome == (grpc.StatusCode.INVALID_ARGUMENT, _refusal(limit, 3_500_000))
    assert {name for name, _, _ in load.outcomes} == {"http-0", "http-1", "http-2", "grpc", "grpc-stream"}
    assert len(load.outcomes) >= 10, "each kind of huge call ran repeatedly"
    assert set(during.health_status) == {200}
    assert statistics.median(during.embed_s) <= statistics.median(baseline.embed_s) + EMBED_DELAY_BOUND_S
    # Refused before any tokenizing: tokenizing 2 M characters takes seconds.
    assert statistics.median(refusal_s) < 1.0


def test_large_legal_tokenize_keeps_health_up_and_the_router_loop_free(roomy: RunningServer) -> None:
    limit = _limit(roomy)
    texts = [_text(limit - i) for i in range(32)]  # each just under the limit
    with httpx.Client(base_url=roomy.url, timeout=60) as client:
        baseline = Probes()
        baseline.take(client, rounds=9)

        def http_tokenize() -> tuple[int, bytes]:
            # Parsed after the probes: parsing tens of MB here would hold this process's
            # GIL and delay the probe thread, not the server.
            response = httpx.post(f"{roomy.url}/tokenize", json={"inputs": texts}, timeout=300)
            return response.status_code, response.content

        channel = grpc.insecure_channel(roomy.grpc_target, options=[("grpc.max_receive_message_length", -1)])
        stub = tei_pb2_grpc.TokenizeStub(channel)
        grpc_requests = [tei_pb2.EncodeRequest(inputs=text, add_special_tokens=True) for text in texts[:8]]
        load = Load()
        load.add("http", http_tokenize, repeat=False)
        load.add("grpc", lambda: list(stub.TokenizeStream(iter(grpc_requests), timeout=300)), repeat=False)
        with load:
            during = Probes()
            while len(load.outcomes) < 2:
                # /health only: a one-word /embed rightly waits for the busy worker.
                during.take(client, rounds=1, pause_s=0.02, embed=False)
        channel.close()

    print(f"\nbaseline: {baseline.summary()}\nwhile 32 inputs of ~{limit} characters were tokenized "
          f"({len(during.health_s)} probes): {during.summary()}; "
          f"calls took {', '.join(f'{name} {elapsed:.1f} s' for name, elapsed, _ in load.outcomes)}")
    outcomes = {name: outcome for name, _, outcome in load.outcomes}
    status, body = outcomes["http"]
    assert status == 200, body
    http_tokens = json.loads(body)
    assert len(http_tokens) == 32
    streamed = outcomes["grpc"]
    assert len(streamed) == 8
    for text, tokens, message in zip(texts, http_tokens, streamed):
        as_dicts = [
            {"id": t.id, "text": t.text, "special": t.special,
             "start": t.start if t.HasField("start") else None, "stop": t.stop if t.HasField("stop") else None}
            for t in message.tokens
        ]
        assert as_dicts == tokens
        assert tokens[0]["special"] and tokens[-1]["special"]
        assert all(text.encode()[t["start"]:t["stop"]].decode() == t["text"] for t in tokens[1:-1])
    assert set(during.health_status) == {200}
    # The router only forwards bytes the worker wrote: /health is never held up by
    # a whole tokenize answer being built (that took seconds).
    assert max(during.health_s) < max(baseline.health_s) + 0.5


# ------------------------------------------------------------------ every path has the guard


@dataclass(frozen=True)
class TokenizingPath:
    """One tokenizing path: sends `text` (with or without truncation), returns (ok, error message)."""

    name: str
    send: Callable[[RunningServer, str, bool], tuple[bool, str]]
    truncates: bool = True  # False: the path never truncates, so only the refusal applies
    half: bool = False  # a text pair: each side has half the limit


def _http(path: str, body: Callable[[str, bool], object], error_key: str = "error") -> Callable[..., tuple[bool, str]]:
    def send(server: RunningServer, text: str, truncate: bool) -> tuple[bool, str]:
        response = _post(server, path, body(text, truncate))
        if response.status_code == 200:
            return True, ""
        assert response.status_code == 422, response.text
        payload = response.json()
        if error_key == "error":
            assert payload["error_type"] == "Validation"
        return False, str(payload[error_key])

    return send


def _grpc(call: Callable[[grpc.Channel, str, bool], Any]) -> Callable[..., tuple[bool, str]]:
    def send(server: RunningServer, text: str, truncate: bool) -> tuple[bool, str]:
        with grpc.insecure_channel(server.grpc_target) as channel:
            try:
                call(channel, text, truncate)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
                return False, str(exc.details())
        return True, ""

    return send


EMBEDDING_PATHS = [
    TokenizingPath("/embed", _http("/embed", lambda t, tr: {"inputs": t, "truncate": tr})),
    TokenizingPath("/embed batch", _http("/embed", lambda t, tr: {"inputs": ["short", t], "truncate": tr})),
    TokenizingPath("/embed_all", _http("/embed_all", lambda t, tr: {"inputs": t, "truncate": tr})),
    TokenizingPath("/", _http("/", lambda t, tr: {"inputs": t, "truncate": tr})),
    TokenizingPath("/similarity", _http("/similarity", lambda t, tr: {
        "inputs": {"source_sentence": "short", "sentences": [t]}, "parameters": {"truncate": tr}})),
    TokenizingPath("/vertex", _http("/vertex", lambda t, tr: {"instances": [{"inputs": t, "truncate": tr}]})),
    # OpenAI has no truncate field: the server's --auto-truncate (off here) decides.
    TokenizingPath("/v1/embeddings", _http("/v1/embeddings", lambda t, tr: {"input": t}, error_key="message"),
          truncates=False),
    TokenizingPath("/tokenize", _http("/tokenize", lambda t, tr: {"inputs": ["short", t]}), truncates=False),
    TokenizingPath("grpc Embed", _grpc(lambda ch, t, tr: tei_pb2_grpc.EmbedStub(ch).Embed(
        tei_pb2.EmbedRequest(inputs=t, truncate=tr)))),
    TokenizingPath("grpc EmbedStream", _grpc(lambda ch, t, tr: list(tei_pb2_grpc.EmbedStub(ch).EmbedStream(
        iter([tei_pb2.EmbedRequest(inputs=t, truncate=tr)]))))),
    TokenizingPath("grpc EmbedAll", _grpc(lambda ch, t, tr: tei_pb2_grpc.EmbedStub(ch).EmbedAll(
        tei_pb2.EmbedAllRequest(inputs=t, truncate=tr)))),
    TokenizingPath("grpc Tokenize", _grpc(lambda ch, t, tr: tei_pb2_grpc.TokenizeStub(ch).Tokenize(
        tei_pb2.EncodeRequest(inputs=t))), truncates=False),
    TokenizingPath("grpc TokenizeStream", _grpc(lambda ch, t, tr: list(tei_pb2_grpc.TokenizeStub(ch).TokenizeStream(
        iter([tei_pb2.EncodeRequest(inputs=t)])))), truncates=False),
]

RERANKER_PATHS = [
    TokenizingPath("/predict", _http("/predict", lambda t, tr: {"inputs": t, "truncate": tr})),
    TokenizingPath("/predict pair", _http("/predict", lambda t, tr: {"inputs": [t, "short"], "truncate": tr}), half=True),
    TokenizingPath("/rerank", _http("/rerank", lambda t, tr: {"query": "short", "texts": [t], "truncate": tr}), half=True),
    TokenizingPath("grpc Predict", _grpc(lambda ch, t, tr: tei_pb2_grpc.PredictStub(ch).Predict(
        tei_pb2.PredictRequest(inputs=t, truncate=tr)))),
    TokenizingPath("grpc PredictPair", _grpc(lambda ch, t, tr: tei_pb2_grpc.PredictStub(ch).PredictPair(
        tei_pb2.PredictPairRequest(inputs=[t, "short"], truncate=tr))), half=True),
    TokenizingPath("grpc Rerank", _grpc(lambda ch, t, tr: tei_pb2_grpc.RerankStub(ch).Rerank(
        tei_pb2.RerankRequest(query="short", texts=[t], truncate=tr))), half=True),
]


def _check_path(server: RunningServer, path: TokenizingPath) -> None:
    limit = _limit(server) // 2 if path.half else _limit(server)
    text = _text(limit + 1)
    ok, message = path.send(server, text, False)
    assert (ok, message) == (False, _refusal(limit, limit + 1)), path.name
    if path.truncates:
        assert path.send(server, text, True) == (True, ""), path.name
        # Far over the limit too: cut to the limit before tokenizing.
        assert path.send(server, _text(3 * limit), True) == (True, ""), path.name


@pytest.mark.parametrize("path", EMBEDDING_PATHS, ids=[p.name for p in EMBEDDING_PATHS])
def test_embedding_paths_have_the_character_guard(roomy: RunningServer, path: TokenizingPath) -> None:
    _check_path(roomy, path)


@pytest.mark.parametrize("path", RERANKER_PATHS, ids=[p.name for p in RERANKER_PATHS])
def test_classifier_paths_have_the_character_guard(reranker: RunningServer, path: TokenizingPath) -> None:
    _check_path(reranker, path)
