"""The images listen on port 80, as TEI's do, as a user without capabilities: that holds
where the container's network namespace sets net.ipv4.ip_unprivileged_port_start=0
(Docker since 20.10, containerd 2.0 for pods, and the chart's pod sysctl). Checked with a
real server in a network namespace of its own, run as the image's user with every
capability dropped; and where the sysctl is missing, the start fails in one clear line.

Needs root (to make the namespace and drop to the image's user), `unshare` and `setpriv`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.test_deploy import image_env


# Bits of /proc/<pid>/status CapEff (linux/capability.h).
CAP_DAC_READ_SEARCH = 1 << 2
CAP_NET_BIND_SERVICE = 1 << 10


def _namespaces_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_available(),
                                reason="needs root with unshare --net and setpriv (network namespaces)")


@pytest.fixture
def scratch() -> Iterator[Path]:
    # The image's user must reach it: not under pytest's root-only tmp_path.
    path = Path(tempfile.mkdtemp(prefix="es-port80-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _serve_in_namespace(port: str, port_start: str, scratch: Path) -> dict[str, Any]:
    args = ["--hostname", "127.0.0.1", "--grpc-port", "0", "--backend", "torch", "--tokenization-workers", "1",
            "--router-workers", "1", "--uds-path", f"{scratch}/s"]
    done = subprocess.run(["unshare", "--net", sys.executable, "-m", "tests.netns_server", port, port_start,
                           str(scratch), *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("flavor", ["cpu", "cuda"])
def test_images_listen_on_port_80(flavor: str) -> None:
    assert image_env(flavor)["PORT"] == "80"


def test_the_images_user_serves_port_80_where_the_sysctl_allows(scratch: Path) -> None:
    result = _serve_in_namespace(image_env("cpu")["PORT"], "0", scratch)
    assert result["healthy"], result["log"]
    assert result["exit_code"] == 0, result["log"]
    # Not root, and without the capability that binds low ports (at most read-and-search,
    # where this machine's interpreter sits in a root-only folder).
    assert result["uid"] == 10001
    assert result["capabilities"] & ~CAP_DAC_READ_SEARCH == 0 and not result["capabilities"] & CAP_NET_BIND_SERVICE


def test_without_the_sysctl_the_start_fails_in_one_line(scratch: Path) -> None:
    result = _serve_in_namespace("80", "-", scratch)
    assert not result["healthy"]
    assert result["exit_code"] == 3, result["log"]
    errors = [line for line in result["log"].splitlines() if " ERROR " in line]
    assert len(errors) == 1, result["log"]
    assert errors[0].endswith("cannot bind HTTP port 127.0.0.1:80: Permission denied (ports below 1024 need root "
                              "or CAP_NET_BIND_SERVICE: set the sysctl net.ipv4.ip_unprivileged_port_start=0 "
                              "for the container, or use a port above 1023)")
    assert "backend-0" not in result["log"]  # refused before any child started
