"""The router's encode link to tokenizer workers (tokenizer_pool/link.py,
encode_server.py), against real worker processes; the frame-count test alone
uses a recording socket server in place of a worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import msgspec
import numpy as np
import pytest

from tests.conftest import short_socket_prefix
from tests.tokenizer_pool.workers import MAX_INPUT_LENGTH, running_worker
from embedserve.tokenizer_pool.encoder import Encoder, EncoderInput
from embedserve.tokenizer_pool.encoder import TextPair as EncoderPair
from embedserve.proto.frames import FrameReader, frame
from embedserve.tokenizer_pool.frames import EncodeCall, EncodeResult, encode_socket_path
from embedserve.tokenizer_pool.link import RETRY_AFTER_S
from embedserve.tokenizer_pool.pool import InvalidInputError, TextPair, TokenizerPool, TokenizerUnavailableError

# No test waits this long unless a call hangs, which is the failure.
HANG_S = 60.0


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> Encoder:
    return Encoder(model_dir, MAX_INPUT_LENGTH)


def test_calls_of_one_frame_are_answered_each_alone(model_dir: Path, encoder: Encoder) -> None:
    socket_path = short_socket_prefix() + "-tokenizer-0"
    words = [f"word{i}" for i in range(200)]
    inputs: list[list[str | list[int] | TextPair]] = [
        [" ".join(words[: 3 + i % 20])] * (1 + i % 3) for i in range(30)
    ]
    inputs[7] = [TextPair("a query", "a passage about it")]
    inputs[11] = [[101, 7592, 2088, 102], "hello world"]
    too_long = 17  # over the token limit without truncation: a 422 for this call alone
    inputs[too_long] = [" ".join(words)]

    async def run() -> list[object]:
        pool = TokenizerPool([socket_path], [MAX_INPUT_LENGTH])
        try:
            calls = [pool.model(0).encode(item, i != too_long, "right", None) for i, item in enumerate(inputs)]
            return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), HANG_S)
        finally:
            await pool.close()

    with running_worker(model_dir, socket_path):
        results = asyncio.run(run())
    assert not os.path.exists(encode_socket_path(socket_path)), "the worker removes its encode socket at exit"
    for index, (item, result) in enumerate(zip(inputs, results)):
        if index == too_long:
            assert isinstance(result, InvalidInputError)
            assert result.message.startswith(f"`inputs` must have less than {MAX_INPUT_LENGTH} tokens. Given: ")
            continue
        assert isinstance(result, list), result
        expected = encoder.encode([_as_encoder_input(i) for i in item], True, "right", None)
        assert [e.input_ids.tolist() for e in result] == [e.input_ids.tolist() for e in expected]
        assert [e.token_type_ids.tolist() for e in result] == [e.token_type_ids.tolist() for e in expected]
        assert [e.characters for e in result] == [e.characters for e in expected]


def _as_encoder_input(item: str | list[int] | TextPair) -> EncoderInput:
    if isinstance(item, TextPair):
        return EncoderPair(item.first, item.second)
    return np.array(item, np.uint32) if isinstance(item, list) else item


def test_calls_made_in_one_loop_iteration_leave_as_one_frame() -> None:
    socket_path = short_socket_prefix() + "-tokenizer-0"
    frames: list[list[EncodeCall]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = FrameReader()
        decoder = msgspec.msgpack.Decoder(list[EncodeCall])
        while data := await reader.read(65536):
            for payload in splitter.feed(data):
                calls = decoder.decode(payload)
                frames.append(calls)
                results = [EncodeResult(c.id, np.array([101, 102], "<u4").tobytes(), [2], None, [1]) for c in calls]
                writer.write(frame(msgspec.msgpack.encode(results)))
        writer.close()

    async def run() -> None:
        server = await asyncio.start_unix_server(answer, encode_socket_path(socket_path))
        pool = TokenizerPool([socket_path], [MAX_INPUT_LENGTH])
        try:
            await pool.model(0).encode(["connect first"], True, "right", None)
            answers = await asyncio.wait_for(
                asyncio.gather(*(pool.model(0).encode([f"text {i}"], True, "right", None) for i in range(25))), HANG_S
            )
            assert all(a[0].input_ids.tolist() == [101, 102] for a in answers)
        finally:
            await pool.close()
            server.close()

    asyncio.run(run())
    assert [len(calls) for calls in frames] == [1, 25]


def test_a_killed_worker_fails_its_calls_fast_and_a_restarted_one_is_reconnected(model_dir: Path) -> None:
    socket_path = short_socket_prefix() + "-tokenizer-0"
    text = " ".join(["a worker killed under load must not leave a call waiting"] * 40)

    async def load(pool: TokenizerPool, stop: asyncio.Event) -> dict[str, int]:
        outcomes = {"ok": 0, "unavailable": 0}

        async def client() -> None:
            while not stop.is_set():
                try:
                    await pool.model(0).encode([text] * 8, True, "right", None)
                    outcomes["ok"] += 1
                except TokenizerUnavailableError as exc:
                    assert exc.message.startswith("tokenizer worker unavailable: ")
                    outcomes["unavailable"] += 1
                    await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(16))), HANG_S)
        return outcomes

    async def run(worker: subprocess.Popen[bytes]) -> dict[str, int]:
        pool = TokenizerPool([socket_path], [MAX_INPUT_LENGTH])
        stop = asyncio.Event()
        try:
            running = asyncio.ensure_future(load(pool, stop))
            for _ in range(int(HANG_S / 0.01)):
                if pool.in_flight(0) >= 8:
                    break
                await asyncio.sleep(0.01)
            assert pool.in_flight(0) >= 8, "the load never reached the worker"
            worker.send_signal(signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, worker.wait)
            await asyncio.sleep(0.3)
            stop.set()
            outcomes = await running
            with running_worker(model_dir, socket_path):  # the launcher restarts it at the same path
                after = await asyncio.wait_for(pool.model(0).encode(["back again"], True, "right", None), HANG_S)
                assert after[0].input_ids[0] == 101
            return outcomes
        finally:
            await pool.close()

    with running_worker(model_dir, socket_path) as worker:
        outcomes = asyncio.run(run(worker))
    assert outcomes["unavailable"] >= 1, outcomes


def test_calls_move_to_a_live_worker_when_another_is_gone_and_come_back_after_its_restart(model_dir: Path) -> None:
    prefix = short_socket_prefix()
    paths = [f"{prefix}-tokenizer-0", f"{prefix}-tokenizer-1"]

    async def spread(pool: TokenizerPool) -> tuple[int, int]:
        """Calls each worker holds right after a burst of 20 is made."""
        calls = [asyncio.ensure_future(pool.model(0).encode([f"text {i}"], True, "right", None)) for i in range(20)]
        await asyncio.sleep(0)
        held = (pool.in_flight(0), pool.in_flight(1))
        assert len(await asyncio.wait_for(asyncio.gather(*calls), HANG_S)) == 20
        return held

    async def run(first: subprocess.Popen[bytes]) -> None:
        pool = TokenizerPool(paths, [MAX_INPUT_LENGTH])
        try:
            assert await spread(pool) == (10, 10), "a burst spreads while the links connect"
            first.kill()
            await asyncio.get_running_loop().run_in_executor(None, first.wait)
            # Its socket file is still there (SIGKILL), nobody listens: never sent, so moved on.
            assert (await spread(pool))[1] >= 10
            with running_worker(model_dir, paths[0]):  # restarted at the same path
                await asyncio.sleep(RETRY_AFTER_S)
                assert min(await spread(pool)) >= 5, "the restarted worker gets its share again"
        finally:
            await pool.close()

    with running_worker(model_dir, paths[0]) as first, running_worker(model_dir, paths[1]):
        asyncio.run(run(first))
