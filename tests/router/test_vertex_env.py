"""Vertex AI's environment as the launcher reads it, and the routes the router adds for it."""

from __future__ import annotations

import pytest

from embedserve.router.app import create_app
from embedserve.router.settings import RouterSettings
from embedserve.router.vertex_env import VertexEnv, VertexEnvError, read_vertex_env


def test_unset_keeps_the_port_and_adds_no_route() -> None:
    assert read_vertex_env({}, 3000) == VertexEnv(3000)
    assert read_vertex_env({"AIP_HTTP_PORT": "", "AIP_PREDICT_ROUTE": " "}, 3000) == VertexEnv(3000)


def test_the_port_and_routes_vertex_sets(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"AIP_HTTP_PORT": "8080", "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict",
               "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2"}
    with caplog.at_level("INFO"):
        assert read_vertex_env(environ, 80) == VertexEnv(8080, environ["AIP_PREDICT_ROUTE"],
                                                         environ["AIP_HEALTH_ROUTE"])
    assert "AIP_HTTP_PORT is set: overriding port 80 by port 8080" in caplog.text


@pytest.mark.parametrize("raw", ["http", "-1", "65536", "80.5"])
def test_a_port_that_is_no_port_keeps_the_flag(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    # TEI ignores an AIP_HTTP_PORT that does not parse; we say so.
    with caplog.at_level("WARNING"):
        assert read_vertex_env({"AIP_HTTP_PORT": raw}, 3000).http_port == 3000
    assert f"AIP_HTTP_PORT={raw!r} is not a port number; serving HTTP on port 3000" in caplog.text


@pytest.mark.parametrize("raw", ["predict", "/v1/x?y=1", "/v1/{model}", "/v1/a b", "/v1/x#top"])
def test_a_route_the_server_cannot_serve_is_refused(raw: str) -> None:
    with pytest.raises(VertexEnvError, match="AIP_PREDICT_ROUTE=.* is not a route"):
        read_vertex_env({"AIP_PREDICT_ROUTE": raw}, 3000)


def _paths(settings: RouterSettings) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for route in create_app(settings).routes:
        routes.setdefault(getattr(route, "path"), set()).update(getattr(route, "methods", None) or ())
    return routes


BASE = RouterSettings(model_id="m", served_model_name="m", backend_sockets=("x",), tokenizer_sockets=("y",))


def test_routes_follow_the_settings() -> None:
    plain = _paths(BASE)
    assert "/v1/p:predict" not in plain and "/v1/h" not in plain
    vertex = _paths(RouterSettings(**{**BASE.__dict__, "vertex_predict_route": "/v1/p:predict",
                                      "vertex_health_route": "/v1/h"}))
    assert {"POST"} <= vertex["/v1/p:predict"] and "GET" not in vertex["/v1/p:predict"]
    assert "GET" in vertex["/v1/h"] and "POST" not in vertex["/v1/h"]
    # Vertex may name one path for both: GET is health, POST predicts.
    same = _paths(RouterSettings(**{**BASE.__dict__, "vertex_predict_route": "/v1/m", "vertex_health_route": "/v1/m"}))
    assert {"GET", "POST"} <= same["/v1/m"]
