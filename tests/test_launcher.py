"""The launcher: flags, start-up failures, supervision and drain, with real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from embedserve.launcher import build_parser
from tests.conftest import ROOT, free_port, short_socket_prefix, start_server

LONG_TEXT = " ".join(["graceful shutdown drains requests that were accepted"] * 40)


def _run_launcher(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # An explicit --hostname: $HOSTNAME may not resolve on every machine (later args win).
        [sys.executable, "-m", "embedserve.launcher", "--hostname", "127.0.0.1", "--port", "0", "--grpc-port", "0",
         "--prometheus-port", "0", "--uds-path", short_socket_prefix(), *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
    )


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line]


def _the_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """A start refused for bad configuration: exit 2 and exactly one ERROR line."""
    assert result.returncode == 2
    errors = _error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_flags_have_tei_defaults_and_env_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args([])
    assert (args.max_concurrent_requests, args.max_batch_tokens, args.max_client_batch_size) == (512, 16384, 32)
    assert args.auto_truncate is True and args.payload_limit == 2_000_000 and args.port == 3000
    assert args.max_batch_requests is None and args.tokenization_workers >= 1
    monkeypatch.setenv("MAX_BATCH_TOKENS", "2048")
    monkeypatch.setenv("AUTO_TRUNCATE", "false")
    monkeypatch.setenv("PORT", "8080")
    args = build_parser().parse_args([])
    assert (args.max_batch_tokens, args.auto_truncate, args.port) == (2048, False, 8080)
    assert build_parser().parse_args(["--max-batch-tokens", "99", "--auto-truncate"]).max_batch_tokens == 99
    assert build_parser().parse_args(["--auto-truncate"]).auto_truncate is True


def test_trust_remote_code_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUST_REMOTE_CODE", raising=False)
    parse = build_parser().parse_args
    assert parse([]).trust_remote_code is False
    assert parse(["--trust-remote-code"]).trust_remote_code is True
    assert parse(["--trust-remote-code", "false"]).trust_remote_code is False
    assert parse(["--trust-remote-code=true"]).trust_remote_code is True
    monkeypatch.setenv("TRUST_REMOTE_CODE", "true")
    parse = build_parser().parse_args  # defaults are read from the environment when built
    assert parse([]).trust_remote_code is True
    assert parse(["--trust-remote-code", "false"]).trust_remote_code is False  # the flag wins


def test_help_lists_the_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "embedserve.launcher", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    for flag in ("--model-id", "--max-batch-tokens", "--tokenization-workers", "--uds-path", "--payload-limit",
                 "--default-prompt-name", "--json-output", "--huggingface-hub-cache", "--graceful-timeout",
                 "--body-read-timeout", "--trust-remote-code"):
        assert flag in out


def test_help_shows_real_defaults_never_none_nor_a_secret() -> None:
    env = {**os.environ, "API_KEY": "help-must-not-show-this"}
    out = subprocess.run([sys.executable, "-m", "embedserve.launcher", "--help"], capture_output=True, text=True, cwd=ROOT,
                         env=env).stdout
    assert "None" not in out and "help-must-not-show-this" not in out
    assert "(default: 16384)" in out and "(default: auto)" in out


def test_unresolvable_hostname_stops_at_once_with_one_clear_line() -> None:
    result = _run_launcher("--hostname", "no-such-host.invalid")
    error = _the_one_error_line(result)
    assert "--hostname 'no-such-host.invalid' is not an IP address and does not resolve" in error
    assert "model " not in result.stderr  # refused before the model is even looked at


def test_missing_model_directory_is_one_clear_line() -> None:
    result = _run_launcher("--model-id", "/nonexistent/model/dir")
    error = _the_one_error_line(result)
    assert "model directory /nonexistent/model/dir does not exist" in error


def test_unknown_hub_id_offline_is_one_clear_line(tmp_path: Path) -> None:
    result = _run_launcher("--model-id", "nobody/no-such-model", "--huggingface-hub-cache", str(tmp_path))
    error = _the_one_error_line(result)
    assert "neither a local directory nor in the Hugging Face cache" in error
    assert "HF_HUB_OFFLINE=0" in error


def test_a_failed_download_says_it_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed local port stands in for a network that cannot reach the Hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = _run_launcher("--model-id", "nobody/no-such-model", "--huggingface-hub-cache", str(tmp_path))
    error = _the_one_error_line(result)
    assert "cannot download model nobody/no-such-model from the Hugging Face Hub" in error
    assert "ConnectionError" in error


def test_default_prompt_name_must_exist(model_dir: Path) -> None:
    result = _run_launcher("--default-prompt-name", "query")
    assert result.returncode == 2
    assert "is not a prompt of this model" in result.stderr


def test_model_without_weights_fails_start_up_naming_the_backend(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "no-weights"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    for backend in ("onnx", "torch"):
        result = _run_launcher("--model-id", str(broken), "--backend", backend)
        assert result.returncode == 3
        [line] = [line for line in result.stderr.splitlines() if "cannot load" in line]
        assert f"cannot load {broken} with the {backend} backend" in line and "model.safetensors" in line
        assert "backend-0 failed to start" in result.stderr


def test_dead_router_stops_the_server_with_an_error(tmp_path: Path) -> None:
    with start_server(tmp_dir=tmp_path, expect_clean_exit=False) as server:
        [router_pid] = server.child_pids("router")
        os.kill(router_pid, signal.SIGKILL)
        code = server.process.wait(timeout=60)
        assert code == 4
        assert "router killed by SIGKILL; stopping the server" in server.log()
        time.sleep(0.5)
        assert server.child_pids("tokenizer_pool") == []
        assert server.child_pids("backends") == []


def test_sigterm_drains_accepted_requests(tmp_path: Path) -> None:
    with start_server("--max-batch-requests", "2", tmp_dir=tmp_path) as server:
        results: list[int] = []

        async def load() -> None:
            async with httpx.AsyncClient(timeout=120) as client:
                responses = await asyncio.gather(
                    *(client.post(f"{server.url}/embed", json={"inputs": [LONG_TEXT] * 16}) for _ in range(4))
                )
                results.extend(r.status_code for r in responses)

        thread = threading.Thread(target=lambda: asyncio.run(load()))
        thread.start()
        deadline = time.monotonic() + 30
        while server.metric("te_request_input_length_count") < 64 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=120)
        assert server.process.wait(timeout=60) == 0
        assert results == [200] * 4


def _fake_hub_cache(model_dir: Path, cache: Path, repo_id: str) -> None:
    """The layout huggingface_hub writes: blobs behind snapshots/<sha>, refs/main naming the sha."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model_dir, repo / "snapshots" / sha, symlinks=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)


def test_hub_id_served_from_the_cache_offline(model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    _fake_hub_cache(model_dir, cache, "someone/minilm")
    with start_server("--model-id", "someone/minilm", "--huggingface-hub-cache", str(cache), tmp_dir=tmp_path) as server:
        assert httpx.get(f"{server.url}/info").json()["model_id"] == "someone/minilm"
        body = httpx.post(f"{server.url}/v1/embeddings", json={"input": "cached"}).json()
        assert body["model"] == "someone/minilm" and len(body["data"][0]["embedding"]) == 384


def test_json_output_logs_json_lines() -> None:
    import json

    result = _run_launcher("--json-output", "--model-id", "/nonexistent/model/dir")
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1]["level"] == "ERROR" and "does not exist" in lines[-1]["message"]
    # TEI's field names (tracing-subscriber's flattened JSON), and ours beside them.
    assert lines[-1]["target"] == "launcher" and lines[-1]["filename"] == "launcher.py"
    assert isinstance(lines[-1]["line_number"], int) and lines[-1]["timestamp"].endswith("Z")
    assert lines[-1]["process"] == "launcher"


@pytest.mark.parametrize("flag", ["--body-read-timeout", "--graceful-timeout"])
def test_negative_timeouts_are_refused_in_one_line(flag: str) -> None:
    result = _run_launcher("--hostname", "127.0.0.1", flag, "-1")
    error = _the_one_error_line(result)
    assert f"{flag} must be 0 or more seconds, got -1.0" in error


def test_a_bad_environment_only_number_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSERVE_CACHE_MAX_GB", "lots")
    result = _run_launcher("--hostname", "127.0.0.1")
    assert result.returncode == 2
    assert result.stderr.strip() == "embedserve: error: EMBEDSERVE_CACHE_MAX_GB must be a number >= 0, got 'lots'"


@pytest.mark.parametrize("which", ["HTTP", "gRPC"])
def test_several_fronts_refuse_a_port_another_server_holds(which: str) -> None:
    # SO_REUSEPORT must not let the fronts join another server's listeners.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        flag = "--port" if which == "HTTP" else "--grpc-port"
        result = _run_launcher("--router-workers", "2", flag, port, "--port" if which == "gRPC" else "--grpc-port",
                               str(free_port()))
    assert result.returncode == 3
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and f"cannot bind {which} port 127.0.0.1:{port}" in errors[0], result.stderr
    assert "router-0" not in result.stderr  # refused before any front started


def test_one_router_refuses_a_taken_port_before_any_child_starts() -> None:
    # The launcher binds each port once first: one line, not the router's traceback.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = _run_launcher("--router-workers", "1", "--port", port)
    assert result.returncode == 3
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and f"cannot bind HTTP port 127.0.0.1:{port}: Address already in use" in errors[0], \
        result.stderr
    assert "backend-0" not in result.stderr and "failed to start" not in result.stderr
