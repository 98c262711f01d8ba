"""What another local user can learn about a running server, and where it listens,
with real processes: secrets never in a command line or a readable environment,
one bind rule for HTTP and gRPC."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server

FLAG_KEY = "flag-key-5f1c0e7d"
ENV_KEY = "env-key-9b2a4c61"
HF_FLAG_TOKEN = "hf_flag_3e8d0a52"
HF_ENV_TOKEN = "hf_env_7c4b1f96"
SECRETS = (FLAG_KEY, ENV_KEY, HF_FLAG_TOKEN, HF_ENV_TOKEN)


def _read_as_nobody(path: str) -> bytes | None:
    """`path` as user nobody reads it; None when the kernel refuses."""
    result = subprocess.run(["cat", path], user="nobody", capture_output=True, timeout=30)
    return result.stdout if result.returncode == 0 else None


def _server_pids(server: RunningServer) -> dict[str, int]:
    pids = {"launcher": server.process.pid}
    for role in ("router", "backends", "tokenizer_pool"):
        for index, pid in enumerate(server.child_pids(role)):
            pids[f"{role}-{index}"] = pid
    return pids


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        # The flags win over the environment; neither may show anywhere.
        (("--api-key", FLAG_KEY, "--hf-token", HF_FLAG_TOKEN), {"API_KEY": ENV_KEY, "HF_TOKEN": HF_ENV_TOKEN},
         FLAG_KEY),
        ((), {"API_KEY": ENV_KEY, "HF_TOKEN": HF_ENV_TOKEN, "HUGGING_FACE_HUB_TOKEN": HF_ENV_TOKEN}, ENV_KEY),
    ],
    ids=["flags", "environment"],
)
def test_no_other_user_can_read_a_secret(args: tuple[str, ...], env: dict[str, str], key: str, tmp_path: Path) -> None:
    with start_server(*args, "--tokenization-workers", "2", tmp_dir=tmp_path, env=env) as server:
        pids = _server_pids(server)
        assert len(pids) == 5, pids  # launcher, router, backend, two tokenizer workers
        for name, pid in pids.items():
            cmdline = _read_as_nobody(f"/proc/{pid}/cmdline")
            assert cmdline is not None and b"-m\0" in cmdline, name  # readable: the check means something
            assert not any(s.encode() in cmdline for s in SECRETS), f"{name}: {cmdline!r}"
            environ = _read_as_nobody(f"/proc/{pid}/environ")
            assert environ is None or not any(s.encode() in environ for s in SECRETS), name
            if name != "launcher":  # children do not even get them (read as root, the owner)
                own_env = Path(f"/proc/{pid}/environ").read_bytes()
                assert not any(s.encode() in own_env for s in SECRETS), name

        body = {"inputs": "who may ask"}
        assert httpx.post(f"{server.url}/embed", json=body, timeout=60).status_code == 401
        authorized = httpx.post(f"{server.url}/embed", json=body, headers={"Authorization": f"Bearer {key}"},
                                timeout=60)
        assert authorized.status_code == 200
        info = httpx.get(f"{server.url}/info", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert info.status_code == 200 and not any(s in info.text for s in SECRETS)
    assert not any(s in server.log() for s in SECRETS)


# ------------------------------------------------------------------ binding


def _listeners(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses with a TCP socket listening on `port`, from /proc/net/tcp{,6}."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(bytes.fromhex(address_hex[i:i + 8])[::-1] for i in range(0, len(address_hex), 8))
            found.add(ipaddress.ip_address(raw))
    return found


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _ports(server: RunningServer) -> tuple[int, int]:
    return int(server.url.rsplit(":", 1)[1]), int(server.grpc_target.rsplit(":", 1)[1])


def test_a_name_binds_http_and_grpc_to_what_it_resolves_to(tmp_path: Path) -> None:
    with start_server("--hostname", "localhost", tmp_dir=tmp_path) as server:
        http_port, grpc_port = _ports(server)
        for what, port in (("HTTP", http_port), ("gRPC", grpc_port)):
            addresses = _listeners(port)
            assert addresses, f"nothing listens for {what} on {port}"
            assert all(_is_loopback(a) for a in addresses), f"{what} listens on {addresses}"
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_an_ip_binds_that_ip_for_http_and_grpc(server: RunningServer) -> None:
    http_port, grpc_port = _ports(server)  # the shared server runs with --hostname 127.0.0.1
    for port in (http_port, grpc_port):
        addresses = _listeners(port)
        assert addresses and all(_is_loopback(a) and not a.is_unspecified for a in addresses), addresses
