"""The one rule for the addresses HTTP and gRPC listen on, from `--hostname`.

An IP literal binds that IP. A name binds what it resolves to (getaddrinfo), as
TEI binds `hostname:port` as given: `localhost` listens on loopback only, a pod
name on the pod's address. The launcher resolves once, before spawning anything
(an unresolvable name is a configuration error), and hands the addresses to the
router, whose HTTP and gRPC servers bind exactly those.
"""

from __future__ import annotations

import ipaddress
import socket


class BindError(ValueError):
    """`--hostname` is neither an IP address nor a name that resolves."""


def resolve_bind_hosts(hostname: str) -> tuple[str, ...]:
    """IP addresses to bind for `hostname`, in resolver order, without repeats."""
    try:
        return (str(ipaddress.ip_address(hostname)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BindError(f"--hostname {hostname!r} is not an IP address and does not resolve: {exc}") from exc
    hosts = dict.fromkeys(str(ipaddress.ip_address(info[4][0])) for info in infos)
    if not hosts:
        raise BindError(f"--hostname {hostname!r} resolves to no address")
    return tuple(hosts)


def host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 addresses in brackets (the form Hypercorn and gRPC take)."""
    return f"[{host}]:{port}" if ipaddress.ip_address(host).version == 6 else f"{host}:{port}"


def local_host(host: str) -> str:
    """An address this machine can connect to for a server bound on `host`."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
