"""Vertex AI's environment (AIP_HTTP_PORT, AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE), honoured
as TEI's `google` build does, by a real server: one router process and several fronts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, short_socket_prefix, start_server

PREDICT_ROUTE = "/v1/endpoints/1234/deployedModels/5678:predict"
HEALTH_ROUTE = "/v1/endpoints/1234/deployedModels/5678"
API_KEY = "vertex-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
INSTANCES = {"instances": [{"inputs": "Vertex sends instances"}, {"inputs": ["two", "inputs"], "normalize": False}]}


@pytest.mark.parametrize("router_workers", ["1", "2"])
def test_vertex_environment_moves_the_port_and_adds_the_routes(router_workers: str, tmp_path: Path) -> None:
    aip_port = free_port()
    env = {"AIP_HTTP_PORT": str(aip_port), "AIP_PREDICT_ROUTE": PREDICT_ROUTE, "AIP_HEALTH_ROUTE": HEALTH_ROUTE,
           "ROUTER_WORKERS": router_workers}
    with start_server("--api-key", API_KEY, "--router-workers", router_workers,
                      tmp_dir=tmp_path, env=env, listen_port=aip_port) as server:
        log = server.log()
        # --port (start_server's own) is overridden: nothing listens there.
        flag_port = int(log.split("overriding port ")[1].split()[0])
        assert f"overriding port {flag_port} by port {aip_port}" in log and flag_port != aip_port
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{flag_port}/health", timeout=5)
        # New connections, spread by the kernel over the fronts (--router-workers 2).
        for _ in range(6):
            with httpx.Client(base_url=server.url, timeout=60) as client:
                # The health route is public, as /health is.
                health = client.get(HEALTH_ROUTE)
                assert health.status_code == 200 and health.content == b""
                predicted = client.post(PREDICT_ROUTE, json=INSTANCES, headers=AUTH)
                assert predicted.status_code == 200, predicted.text
        vertex = httpx.post(f"{server.url}/vertex", json=INSTANCES, headers=AUTH, timeout=60)
        # The predict route is an inference route: the key is required.
        unauthorized = httpx.post(f"{server.url}{PREDICT_ROUTE}", json=INSTANCES, timeout=60)
        bad = httpx.post(f"{server.url}{PREDICT_ROUTE}", json={"instances": [{"inputs": 3}]}, headers=AUTH,
                         timeout=60)
        wrong_method = httpx.get(f"{server.url}{PREDICT_ROUTE}", headers=AUTH, timeout=60)
        # The built-in routes are all still there.
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    assert vertex.status_code == 200
    predictions = predicted.json()["predictions"]
    assert predicted.json() == vertex.json()
    assert len(predictions) == 2 and len(predictions[0]) == 1 and len(predictions[1]) == 2
    assert len(predictions[0][0]) == 384
    assert unauthorized.status_code == 401 and unauthorized.content == b""
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation", bad.text
    assert wrong_method.status_code == 405


def _launch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedserve.launcher", "--hostname", "127.0.0.1", "--port", "0", "--grpc-port", "0",
         "--uds-path", short_socket_prefix()],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**_base_env(), **env},
    )


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}


@pytest.mark.parametrize("name", ["AIP_PREDICT_ROUTE", "AIP_HEALTH_ROUTE"])
def test_a_route_that_is_no_path_refuses_to_start_in_one_line(name: str) -> None:
    result = _launch({name: "v1/endpoints/1:predict"})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert f"{name}='v1/endpoints/1:predict' is not a route: it must start with /" in errors[0]
    assert "backend-0" not in result.stderr
