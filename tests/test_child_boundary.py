"""The launcher/child boundary, piece by piece: the config frame over a real pipe,
the bind rule, the command-line scrub of a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from embedserve.proto.child import encode_config, read_config
from embedserve.proto.gen_pb import config_pb2
from embedserve.router.bind import BindError, host_port, local_host, resolve_bind_hosts
from tests.conftest import ROOT


def test_config_frame_crosses_a_pipe_larger_than_its_buffer() -> None:
    # 1 MiB of prompts: the writer blocks until the reader drains the 64 KiB pipe buffer.
    model = config_pb2.ServedModel(model_id="m", prompts={f"p{i}": "x" * 1024 for i in range(1024)})
    config = config_pb2.RouterConfig(api_key="k", models=[model])
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with open(write_fd, "wb") as pipe:
            pipe.write(encode_config(config))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert read_config(config_pb2.RouterConfig, read_fd) == config
    finally:
        writer.join(timeout=10)
        os.close(read_fd)


@pytest.mark.parametrize("frame", [b"", b"\0\0", b"\0\0\0\x10short", b"\xff\xff\xff\xff"],
                         ids=["nothing", "half a length", "short body", "absurd length"])
def test_a_broken_frame_exits_with_a_clear_message(frame: bytes) -> None:
    result = subprocess.run([sys.executable, "-m", "embedserve.tokenizer_pool", "tokenizer-0"], input=frame, cwd=ROOT,
                            capture_output=True, timeout=120)
    assert result.returncode == 1
    assert "started by the embedserve launcher" in result.stderr.decode()


def test_bind_rule() -> None:
    assert resolve_bind_hosts("127.0.0.1") == ("127.0.0.1",)
    assert resolve_bind_hosts("0.0.0.0") == ("0.0.0.0",)
    assert resolve_bind_hosts("::1") == ("::1",)
    localhost = resolve_bind_hosts("localhost")
    assert localhost and set(localhost) <= {"127.0.0.1", "::1"}
    with pytest.raises(BindError, match="no-such-host.invalid"):
        resolve_bind_hosts("no-such-host.invalid")
    assert host_port("::1", 80) == "[::1]:80" and host_port("10.0.0.1", 80) == "10.0.0.1:80"
    assert local_host("0.0.0.0") == "127.0.0.1" and local_host("::") == "::1" and local_host("10.0.0.1") == "10.0.0.1"


def test_scrub_argv_changes_what_proc_cmdline_shows() -> None:
    script = ("import sys; from proto.redact import scrub_argv; ok = scrub_argv([sys.argv[2]]); "
              "sys.stdout.buffer.write(open('/proc/self/cmdline', 'rb').read()); sys.exit(0 if ok else 1)")
    result = subprocess.run([sys.executable, "-c", script, "--api-key", "s3cr3t-value"], cwd=ROOT,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"s3cr3t-value" not in result.stdout and b"--api-key\0************\0" in result.stdout
