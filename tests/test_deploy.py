"""deploy/: the Helm chart and the Dockerfiles, checked offline against the real server.

The chart is linted and rendered by Helm's own Go library (helm-python-sdk, no cluster),
every manifest is validated against the Kubernetes OpenAPI schemas that kubernetes-validate
ships (strict: unknown fields fail), and what the manifests say about the server — flags,
probe routes, ports, writable paths, metric names — is checked against the server's own code:
`launcher.build_parser()`, the router's routes and its metrics. The `helm test` script and
the prefetch init step run for real on this machine.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

from embedserve import launcher
from embedserve.proto.logs import parse_log_level
from embedserve.router.app import create_app
from embedserve.router.metrics import Metrics
from embedserve.router.settings import RouterSettings
from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "embedserve"
DOCKER = ROOT / "deploy" / "docker"
RELEASE = "emb"
NAMESPACE = "search"
# The newest Kubernetes whose schemas kubernetes-validate ships, and the chart's floor
# (Chart.yaml kubeVersion): every manifest must be valid on both.
KUBE_CURRENT = "1.37.0"
KUBE_OLDEST = "1.30.0"
KUBE_VERSIONS = (KUBE_OLDEST, KUBE_CURRENT)
GPU_RESOURCE = "nvidia.com/gpu"
# The per-network-namespace sysctl below which binding a port takes root or CAP_NET_BIND_SERVICE.
UNPRIVILEGED_PORT_START = "net.ipv4.ip_unprivileged_port_start"
SERVER_CONTAINER = "embedserve"

Manifest = dict[str, Any]


# ---------------------------------------------------------------- value sets


def _ci_values(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


# Every ci/*-values.yaml, the defaults, and one set for the branches the examples leave out
# (hostPath, gRPC off, no preStop hook, a fractional graceful timeout, an existing Secret).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    **{path.name.removesuffix("-values.yaml"): _ci_values(path.name.removesuffix("-values.yaml"))
       for path in sorted((CHART / "ci").glob("*-values.yaml"))},
    "hostpath-nogrpc": {
        "server": {"grpcPort": 0, "port": 8080, "jsonOutput": False, "gracefulTimeout": 12.5, "autoTruncate": False,
                   "bodyReadTimeout": 7.5, "exportCacheMaxGB": 2.5, "defaultRequestTimeoutMs": 20000,
                   "modelId": "/var/models/e5-small", "pooling": "mean", "corsAllowOrigin": ["*"]},
        "modelStorage": {"type": "hostPath", "mountPath": "/var/models", "readOnly": True,
                         "hostPath": {"path": "/mnt/models", "type": "Directory"}},
        "offline": True,
        "preStopSleepSeconds": 0,
        "apiKey": {"existingSecret": "shared-keys", "existingSecretKey": "embeddings"},
        "hfToken": {"existingSecret": "hub", "existingSecretKey": "token"},
        "tests": {"enabled": False},
        "topologySpreadConstraints": [],
        "metrics": {"port": 0},
    },
}
GPU_SETS = {"gpu"}
REQUIRED_SETS = {"cpu", "gpu", "hpa", "servicemonitor", "apikey", "airgapped"}


@dataclass
class Release:
    """One rendering of the chart: its manifests by kind and its NOTES."""

    values: dict[str, Any]
    # The values the templates saw: defaults coalesced with `values` (nulls dropped).
    merged: dict[str, Any]
    # (template path, manifest), NOTES.txt aside.
    manifests: list[tuple[str, Manifest]]
    notes: str

    def all(self, kind: str) -> list[Manifest]:
        return [m for _, m in self.manifests if m["kind"] == kind]

    def one(self, kind: str) -> Manifest:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def deployment(self) -> Manifest:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def server(self) -> dict[str, Any]:
        return _container(self.pod_spec, SERVER_CONTAINER)

    def test_pods(self) -> list[Manifest]:
        return [p for p in self.all("Pod") if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]


def _container(pod_spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    matches = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(matches) == 1, f"no container {name!r}"
    container: dict[str, Any] = matches[0]
    return container


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


_RENDERED: dict[str, Release] = {}


def render(chart: helm.Chart, name: str) -> Release:
    """VALUE_SETS[name] rendered once per session."""
    if name not in _RENDERED:
        values = VALUE_SETS[name]
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        manifests: list[tuple[str, Manifest]] = []
        notes = ""
        for template, text in sorted(rendered.items()):
            if template.endswith("NOTES.txt"):
                notes = text
            else:
                manifests.extend((template, doc) for doc in yaml.safe_load_all(text) if doc)
        _RENDERED[name] = Release(values, chart.merge_values(values), manifests, notes)
    return _RENDERED[name]


@pytest.fixture(params=sorted(VALUE_SETS))
def release(request: pytest.FixtureRequest, chart: helm.Chart) -> Release:
    return render(chart, request.param)


# ---------------------------------------------------------------- the server's own facts


@cache
def http_routes() -> dict[str, frozenset[str]]:
    """Path -> methods of the router's app, built but never started."""
    app = create_app(RouterSettings(model_id="m", served_model_name="m", backend_sockets=("x",),
                                    tokenizer_sockets=("y",)))
    routes: dict[str, frozenset[str]] = {}
    for route in app.routes:
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None)
        if path is not None:
            routes[path] = frozenset(methods or ())
    return routes


def container_env(container: Mapping[str, Any], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the process sees: the image's, Kubernetes' HOSTNAME, then the pod's.
    Secret references become a recognizable placeholder."""
    env = dict(base or {})
    env["HOSTNAME"] = f"{RELEASE}-embedserve-7d9f8b6c5d-x2x7k"
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = f"<secret {ref['name']}/{ref['key']}>"
    return env


def parse_launcher_args(argv: list[str], env: Mapping[str, str]) -> argparse.Namespace:
    """argv through the launcher's own parser, in the container's environment: its flags
    read their env twins when the parser is built."""
    assert all(isinstance(arg, str) for arg in argv), f"container args must be strings: {argv}"
    with mock.patch.dict(os.environ, env, clear=True):
        parser = launcher.build_parser()
        try:
            return parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"the launcher's parser rejects {shlex.join(argv)} (exit {exc.code})")


def image_flavor(release: Release) -> str:
    return "cuda" if release.merged["gpu"]["enabled"] else "cpu"


def server_args(release: Release) -> argparse.Namespace:
    return parse_launcher_args(release.server["args"], container_env(release.server, image_env(image_flavor(release))))


def mounts_by_path(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"].rstrip("/") or "/": m for m in container.get("volumeMounts", [])}


def mount_for(container: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The volume mount a path lies on (the deepest one)."""
    best: dict[str, Any] | None = None
    for mount_path, mount in mounts_by_path(container).items():
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            if best is None or len(mount_path) > len(best["mountPath"].rstrip("/")):
                best = mount
    return best


def volume(pod_spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    matches = [v for v in pod_spec.get("volumes", []) if v["name"] == name]
    assert len(matches) == 1, f"no volume {name!r}"
    found: dict[str, Any] = matches[0]
    return found


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert len(numbers) == 1, f"container port {port!r} not declared"
    number: int = numbers[0]
    return number


# ---------------------------------------------------------------- offline tooling


def test_tools_work_offline() -> None:
    # Both libraries carry what they need: Helm as a shared library in the wheel, the
    # Kubernetes schemas as package data. Nothing is fetched when the tests run.
    assert Path(helm.library_path).is_file()
    assert helm.helm_sdk_version().startswith("v4.")
    for version in KUBE_VERSIONS:
        assert version in kv_utils.all_versions(), f"kubernetes-validate ships no schemas for {version}"
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert metadata["kubeVersion"] == f">={KUBE_OLDEST}-0"


def test_every_required_value_set_is_covered() -> None:
    assert REQUIRED_SETS <= set(VALUE_SETS)


# ---------------------------------------------------------------- lint and schemas


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_clean(name: str) -> None:
    for version in KUBE_VERSIONS:
        report = helm.lint(CHART, VALUE_SETS[name], strict=True, kube_version=f"v{version}")
        assert report["errors"] == [], report
        # Strict lint: warnings count too. Info-level notes (no icon) are fine.
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


# ServiceMonitor is a CRD (monitoring.coreos.com/v1, Prometheus Operator): kubernetes-validate
# only has the built-in kinds. It gets this structural schema instead: the CRD's fields that
# the chart can emit, nothing else allowed, and metadata/selector checked against the real
# Kubernetes definitions.
_PROM_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_RELABEL_CONFIG = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                            "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                            "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                            "dropequal", "DropEqual"]},
    },
}
# The $id kubernetes-validate's definitions file declares.
_K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"$ref": _K8S_DEFS + "ObjectMeta"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"$ref": _K8S_DEFS + "LabelSelector"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": _PROM_DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _PROM_DURATION},
                            "relabelings": {"type": "array", "items": _RELABEL_CONFIG},
                            "metricRelabelings": {"type": "array", "items": _RELABEL_CONFIG},
                        },
                    },
                },
            },
        },
    },
}


def validate_service_monitor(manifest: Manifest, version: str) -> None:
    definitions = kv_utils.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry: referencing.Registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA, registry=registry).validate(manifest)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_every_manifest_is_schema_valid(release: Release) -> None:
    for template, manifest in release.manifests:
        for version in KUBE_VERSIONS:
            if manifest["kind"] == "ServiceMonitor":
                with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                    kubernetes_validate.validate(manifest, version, strict=True)
                validate_service_monitor(manifest, version)
                continue
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{template} ({manifest['kind']}) invalid on Kubernetes {version}: {where}: {exc.message}")
        # What the OpenAPI schemas leave to the API server's own validation.
        name = manifest["metadata"]["name"]
        assert _DNS_LABEL.match(name) and len(name) <= 63, f"{template}: bad name {name!r}"
        for key, value in manifest["metadata"].get("labels", {}).items():
            assert _LABEL_VALUE.match(value) and len(value) <= 63, f"{template}: bad label {key}={value!r}"


def test_service_monitor_is_the_only_custom_kind(release: Release) -> None:
    kinds = {m["kind"] for _, m in release.manifests}
    assert kinds <= {"Deployment", "Service", "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "Pod"}


def test_schema_enums_are_the_launchers_choices() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    server = schema["properties"]["server"]["properties"]
    with mock.patch.dict(os.environ, {}, clear=True):
        actions = {a.dest: a for a in launcher.build_parser()._actions}
    assert server["backend"]["enum"] == list(actions["backend"].choices or ())
    # "" leaves the flag out: the launcher's default.
    assert server["dtype"]["enum"] == ["", *(actions["dtype"].choices or ())]
    assert server["pooling"]["enum"] == ["", *(actions["pooling"].choices or ())]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"server": {"backend": "tensorrt"}}, "/server/backend"),
        ({"server": {"port": 0}}, "/server/port"),
        ({"server": {"port": 65536}}, "/server/port"),
        ({"server": {"grpcPort": -1}}, "/server/grpcPort"),
        ({"metrics": {"port": 900}}, "/metrics/port"),
        ({"server": {"logLevel": "info;rm -rf"}}, "/server/logLevel"),
        ({"server": {"maxBatchTokens": "lots"}}, "/server/maxBatchTokens"),
        ({"modelStorage": {"mountPath": "/tmp"}}, "/modelStorage/mountPath"),
        ({"gpu": {"enabled": True, "count": 0}}, "/gpu/count"),
        ({"serverr": {}}, "serverr"),
    ],
)
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"autoscaling": {"enabled": True, "cpu": {"enabled": False}}}, "autoscaling.cpu.enabled or"),
        ({"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}}, "resources.requests.cpu"),
        ({"modelStorage": {"prefetch": {"enabled": True}}}, "prefetch needs server.modelId"),
        ({"server": {"defaultPrompt": "query: ", "defaultPromptName": "query"}}, "exclusive"),
        ({"server": {"port": 50051}}, "server.port and server.grpcPort must differ"),
        ({"podSecurityContext": {"sysctls": [{"name": UNPRIVILEGED_PORT_START, "value": "1024"}]}},
         "sets net.ipv4.ip_unprivileged_port_start=1024, which keeps port 80 from the server's user"),
        ({"metrics": {"port": 8080}, "server": {"port": 8080}}, "metrics.port must differ from server.port"),
        ({"metrics": {"port": 7000}, "server": {"grpcPort": 7000}}, "metrics.port must differ"),
    ],
)
def test_template_refuses_contradictions(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# ---------------------------------------------------------------- the server's flags, routes, ports


def test_args_parse_with_the_launchers_parser(release: Release) -> None:
    args = server_args(release)
    server = release.merged["server"]
    # Kubernetes sets HOSTNAME to the pod name; the flag keeps the bind address an IP.
    assert args.hostname == "0.0.0.0"
    assert args.port == server["port"]
    assert args.grpc_port == server["grpcPort"]
    # Always explicit: the launcher's default (9000) may not be a port the pod exposes.
    assert "--prometheus-port" in release.server["args"]
    assert args.prometheus_port == release.merged["metrics"]["port"]
    assert args.model_id == (server["modelId"] or None)
    assert args.backend == server["backend"]
    assert args.dtype == (server["dtype"] or None)
    assert args.max_batch_tokens == server["maxBatchTokens"]
    assert args.max_batch_requests == server.get("maxBatchRequests")  # Helm drops null values
    assert args.max_concurrent_requests == server["maxConcurrentRequests"]
    assert args.payload_limit == server["payloadLimit"]
    assert args.auto_truncate is server["autoTruncate"]
    assert args.json_output is server["jsonOutput"]
    assert args.graceful_timeout == server["gracefulTimeout"]
    assert args.body_read_timeout == server["bodyReadTimeout"]
    assert args.default_request_timeout_ms == server["defaultRequestTimeoutMs"]
    assert float(container_env(release.server)["EMBEDSERVE_CACHE_MAX_GB"]) == server["exportCacheMaxGB"]
    assert args.cors_allow_origin == server["corsAllowOrigin"]
    assert args.huggingface_hub_cache == release.merged["modelStorage"]["mountPath"]
    # Secrets arrive through env valueFrom, never on the command line.
    assert not any(a.startswith(("--api-key", "--hf-token")) for a in release.server["args"])
    api_key = release.merged["apiKey"]
    if api_key["existingSecret"] or api_key["value"]:
        assert args.api_key is not None and args.api_key.startswith("<secret ")
    else:
        assert args.api_key is None


@pytest.mark.parametrize("log_level", ["trace", "INFO", "info,router=debug", "text_embeddings_router=debug,warn"])
def test_log_level_takes_teis_forms(chart: helm.Chart, log_level: str) -> None:
    rendered = chart.render({"server": {"logLevel": log_level}}, name=RELEASE, namespace=NAMESPACE)
    [deployment] = [doc for name, text in rendered.items() if not name.endswith("NOTES.txt")
                    for doc in yaml.safe_load_all(text) if doc and doc["kind"] == "Deployment"]
    assert container_env(deployment["spec"]["template"]["spec"]["containers"][0])["LOG_LEVEL"] == log_level
    assert parse_log_level(log_level).problems == ()


def test_image_entrypoint_is_not_overridden(release: Release) -> None:
    # args replace the image's CMD; the entrypoint (the launcher) stays the image's.
    assert "command" not in release.server
    image = release.merged["image"]
    if not image["tag"] and not image["digest"]:
        assert release.server["image"] == f"{image['repository']}:0.1.0-{image_flavor(release)}"


def test_probes_hit_real_routes_on_the_http_port(release: Release) -> None:
    args = server_args(release)
    routes = http_routes()
    container = release.server
    for kind in ("startupProbe", "readinessProbe"):
        probe = container[kind]
        get = probe["httpGet"]
        assert get["path"] == "/health", kind
        assert "GET" in routes[get["path"]], f"{kind}: {get['path']} is not a GET route"
        assert container_port(container, get["port"]) == args.port, kind
    # Liveness must not follow backend health: a backend restart would kill the pod.
    liveness = container["livenessProbe"]
    assert "httpGet" not in liveness
    assert container_port(container, liveness["tcpSocket"]["port"]) == args.port
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "model load needs >= 10 min"
    # Liveness only starts after startup succeeded, and then tolerates a minute of silence.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


def test_service_ports_reach_the_servers_listeners(release: Release) -> None:
    args = server_args(release)
    container = release.server
    service = release.one("Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert service["spec"]["selector"] == release.deployment["spec"]["selector"]["matchLabels"]
    assert container_port(container, ports["http"]["targetPort"]) == args.port
    # The --prometheus-port listener; without one, the HTTP listener, which serves /metrics too.
    metrics_port = args.prometheus_port or args.port
    assert container_port(container, ports["metrics"]["targetPort"]) == metrics_port
    assert "GET" in http_routes()["/metrics"]
    if not args.prometheus_port:
        assert "metrics" not in {p["name"] for p in container["ports"]}
    if args.grpc_port:
        assert container_port(container, ports["grpc"]["targetPort"]) == args.grpc_port
        assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    else:
        assert "grpc" not in ports
        assert "grpc" not in {p["name"] for p in container["ports"]}


def test_service_monitor_scrapes_metrics(chart: helm.Chart) -> None:
    for name in VALUE_SETS:
        enabled = render(chart, name).merged["metrics"]["serviceMonitor"]["enabled"]
        assert len(render(chart, name).all("ServiceMonitor")) == (1 if enabled else 0), name
    release = render(chart, "servicemonitor")
    monitor = release.one("ServiceMonitor")
    service = release.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert "GET" in http_routes()[endpoint["path"]]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_termination_grace_covers_the_drain(release: Release) -> None:
    args = server_args(release)
    spec = release.pod_spec
    pre_stop = spec["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pre_stop == release.merged["preStopSleepSeconds"]
    # The launcher: router drain up to graceful + 5 s, then the workers WORKER_STOP_TIMEOUT_S.
    needed = pre_stop + math.ceil(args.graceful_timeout) + 5 + launcher.WORKER_STOP_TIMEOUT_S
    assert needed < spec["terminationGracePeriodSeconds"] <= needed + 10


# ---------------------------------------------------------------- GPU


def test_gpu_limit_only_for_gpu_values(release: Release) -> None:
    gpu = release.merged["gpu"]
    pods = [release.pod_spec, *(p["spec"] for p in release.test_pods())]
    containers = [c for spec in pods for c in [*spec.get("initContainers", []), *spec["containers"]]]
    asked = {c["name"]: c.get("resources", {}).get("limits", {}).get(GPU_RESOURCE) for c in containers}
    # Extended resources: the limit alone is the request.
    assert all(GPU_RESOURCE not in c.get("resources", {}).get("requests", {}) for c in containers)
    if gpu["enabled"]:
        assert asked.pop(SERVER_CONTAINER) == gpu["count"]
        assert release.pod_spec.get("runtimeClassName") == (gpu["runtimeClassName"] or None)
        assert gpu["nodeSelector"].items() <= release.pod_spec["nodeSelector"].items()
        assert all(t in release.pod_spec["tolerations"] for t in gpu["tolerations"])
        assert release.server["image"].endswith("-cuda")
    else:
        assert "runtimeClassName" not in release.pod_spec
        assert not any(t.get("key") == GPU_RESOURCE for t in release.pod_spec.get("tolerations", []))
    # Nothing else (prefetch step, helm test pod) holds a GPU.
    assert set(asked.values()) == {None}


def test_gpu_values_are_the_gpu_sets(chart: helm.Chart) -> None:
    assert {n for n in VALUE_SETS if render(chart, n).merged["gpu"]["enabled"]} == GPU_SETS


# ---------------------------------------------------------------- hardening and writable paths


def _hardened(container: Mapping[str, Any]) -> None:
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True, container["name"]
    assert context["allowPrivilegeEscalation"] is False, container["name"]
    assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, container["name"]


def test_pods_run_non_root_on_a_read_only_root(release: Release) -> None:
    for spec in [release.pod_spec, *(p["spec"] for p in release.test_pods())]:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            _hardened(container)


def test_ports_below_1024_get_the_unprivileged_port_sysctl(release: Release) -> None:
    args = server_args(release)
    lowest = min(port for port in (args.port, args.grpc_port) if port)
    sysctls = {s["name"]: s["value"] for s in release.pod_spec["securityContext"].get("sysctls", [])}
    if lowest < 1024:
        # The pod's own network namespace lets the user bind it; no capability comes back.
        assert int(sysctls[UNPRIVILEGED_PORT_START]) <= lowest
        assert release.server["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    else:
        assert UNPRIVILEGED_PORT_START not in sysctls
    # The helm test pod binds nothing.
    for pod in release.test_pods():
        assert "sysctls" not in pod["spec"].get("securityContext", {})


def test_default_values_listen_on_80_like_tei(chart: helm.Chart) -> None:
    release = render(chart, "default")
    assert server_args(release).port == 80 and container_port(release.server, "http") == 80
    assert release.pod_spec["securityContext"]["sysctls"] == [{"name": UNPRIVILEGED_PORT_START, "value": "0"}]
    # The chart's other pod settings stay.
    assert release.pod_spec["securityContext"]["runAsNonRoot"] is True


def test_own_pod_sysctls_are_kept_beside_the_port_sysctl(chart: helm.Chart) -> None:
    own = {"name": "net.ipv4.tcp_keepalive_time", "value": "300"}
    rendered = chart.render({"podSecurityContext": {"sysctls": [own]}}, name=RELEASE, namespace=NAMESPACE)
    (deployment,) = [d for d in yaml.safe_load_all(rendered["embedserve/templates/deployment.yaml"]) if d]
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert context["sysctls"] == [own, {"name": UNPRIVILEGED_PORT_START, "value": "0"}]
    # One that already allows the port is left as given.
    allowed = {"name": UNPRIVILEGED_PORT_START, "value": "80"}
    rendered = chart.render({"podSecurityContext": {"sysctls": [allowed]}}, name=RELEASE, namespace=NAMESPACE)
    (deployment,) = [d for d in yaml.safe_load_all(rendered["embedserve/templates/deployment.yaml"]) if d]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["sysctls"] == [allowed]


def test_every_path_the_server_writes_is_a_writable_volume(release: Release) -> None:
    container = release.server
    spec = release.pod_spec
    args = server_args(release)
    env = container_env(container)
    scratch = {
        "--uds-path sockets": posixpath.dirname(args.uds_path),
        "HF_HOME (remote-code modules)": env["HF_HOME"],
        "HOME": env["HOME"],
    }
    for what, path in {**scratch, "EMBEDSERVE_CACHE_DIR (ONNX exports)": env["EMBEDSERVE_CACHE_DIR"]}.items():
        mount = mount_for(container, path)
        assert mount is not None, f"{what} ({path}) is on the read-only root filesystem"
        assert not mount.get("readOnly", False), f"{what} ({path}) is on a read-only mount"
        if what in scratch:
            assert "emptyDir" in volume(spec, mount["name"]), what
    # Unix socket paths must stay short (the launcher refuses beyond MAX_SOCKET_PATH_BYTES).
    assert len(f"{args.uds_path}-tokenizer-63".encode()) <= launcher.MAX_SOCKET_PATH_BYTES
    # The Hub cache is the model volume.
    model_mount = mount_for(container, args.huggingface_hub_cache)
    assert model_mount is not None and model_mount["name"] == "models"
    assert env["HUGGINGFACE_HUB_CACHE"] == args.huggingface_hub_cache
    assert model_mount.get("readOnly", False) is release.merged["modelStorage"]["readOnly"]


def test_air_gapped_install_reads_a_pvc_read_only(chart: helm.Chart) -> None:
    release = render(chart, "airgapped")
    args = server_args(release)
    env = container_env(release.server)
    spec = release.pod_spec
    assert env["HF_HUB_OFFLINE"] == "1"
    model_mount = mount_for(release.server, args.model_id)
    assert model_mount is not None and model_mount["readOnly"] is True
    claim = volume(spec, model_mount["name"])["persistentVolumeClaim"]
    assert claim == {"claimName": "embedding-models", "readOnly": True}
    # The claim exists already; nothing downloads.
    assert release.all("PersistentVolumeClaim") == []
    assert "initContainers" not in spec
    # ONNX exports cannot go next to the model: they land on the writable scratch volume.
    cache_mount = mount_for(release.server, env["EMBEDSERVE_CACHE_DIR"])
    assert cache_mount is not None and not cache_mount.get("readOnly", False)
    assert "emptyDir" in volume(spec, cache_mount["name"])
    assert release.server["image"] == "registry.internal.example/ml/embedserve:0.1.0-cpu"
    assert spec["imagePullSecrets"] == [{"name": "internal-registry"}]


def test_prefetch_fills_a_kept_pvc_that_the_server_reads_offline(chart: helm.Chart) -> None:
    release = render(chart, "gpu")
    spec = release.pod_spec
    (init,) = spec["initContainers"]
    assert init["image"] == release.server["image"]
    init_env = container_env(init)
    assert "HF_HUB_OFFLINE" not in init_env
    assert init_env["MODEL_ID"] == release.merged["server"]["modelId"]
    assert init_env["HUGGINGFACE_HUB_CACHE"] == server_args(release).huggingface_hub_cache
    # The step fetches what the server's backend loads, and repository code only with its opt-in.
    assert init_env["BACKEND"] == server_args(release).backend
    assert init_env["TRUST_REMOTE_CODE"] == "false" and server_args(release).trust_remote_code is False
    init_mount = mount_for(init, init_env["HUGGINGFACE_HUB_CACHE"])
    assert init_mount is not None and not init_mount.get("readOnly", False)
    assert container_env(release.server)["HF_HUB_OFFLINE"] == "1"
    (pvc,) = release.all("PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert volume(spec, "models")["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_prefetch_step_runs_the_launchers_resolver(chart: helm.Chart, tmp_path: Path) -> None:
    # A Hub cache holding one snapshot, as huggingface_hub lays it out; offline, the
    # resolver must find it there, exactly as the server will at start-up.
    (init,) = render(chart, "gpu").pod_spec["initContainers"]
    model_id = container_env(init)["MODEL_ID"]
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / ("models--" + model_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    env = {**container_env(init), "HUGGINGFACE_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf-home")}
    assert init["command"][:2] == ["python", "-c"]
    done = subprocess.run([sys.executable, *init["command"][1:]], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"model {model_id} ready in {snapshot}"
    # A model missing from the cache fails the init step with the launcher's one-line reason.
    env["MODEL_ID"] = "acme/not-downloaded"
    missing = subprocess.run([sys.executable, *init["command"][1:]], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1
    assert "prefetch failed: model acme/not-downloaded is neither a local directory nor in the Hugging Face cache" \
        in missing.stderr


# ---------------------------------------------------------------- autoscaling, disruption, spread


def test_hpa_scales_the_deployment_on_cpu_and_queue_size(chart: helm.Chart) -> None:
    release = render(chart, "hpa")
    hpa = release.one("HorizontalPodAutoscaler")
    deployment = release.deployment
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    # The HPA owns the replica count.
    assert "replicas" not in deployment["spec"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Resource"]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 75}
    # The metric prometheus-adapter serves is the gauge the router really exports.
    assert metrics["Pods"]["pods"]["metric"]["name"] == Metrics(max_input_length=512).queue_size.name
    assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "64"}
    assert release.server["resources"]["requests"]["cpu"]


def test_hpa_only_when_enabled(release: Release) -> None:
    enabled = release.merged["autoscaling"]["enabled"]
    assert len(release.all("HorizontalPodAutoscaler")) == (1 if enabled else 0)
    assert ("replicas" in release.deployment["spec"]) is not enabled


def test_disruption_budget_and_spread_select_the_pods(release: Release) -> None:
    selector = release.deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= release.deployment["spec"]["template"]["metadata"]["labels"].items()
    for pdb in release.all("PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert len(release.all("PodDisruptionBudget")) == (1 if release.merged["podDisruptionBudget"]["enabled"] else 0)
    for constraint in release.pod_spec.get("topologySpreadConstraints", []):
        assert constraint["labelSelector"]["matchLabels"] == selector


# ---------------------------------------------------------------- API key


def test_api_key_comes_from_a_secret(chart: helm.Chart) -> None:
    release = render(chart, "apikey")
    value = release.merged["apiKey"]["value"]
    (secret,) = release.all("Secret")
    key = release.merged["apiKey"]["existingSecretKey"]
    assert base64.b64decode(secret["data"][key]).decode() == value
    expected = {"secretKeyRef": {"name": secret["metadata"]["name"], "key": key}}
    for container in [release.server, *(p["spec"]["containers"][0] for p in release.test_pods())]:
        (entry,) = [e for e in container["env"] if e["name"] == "API_KEY"]
        assert entry["valueFrom"] == expected
    assert value not in json.dumps(release.deployment)
    # Pods read the key at start: a changed key must roll them.
    assert "checksum/api-key" in release.deployment["spec"]["template"]["metadata"]["annotations"]


def test_existing_secret_is_referenced_not_created(chart: helm.Chart) -> None:
    for name in ("airgapped", "hostpath-nogrpc"):
        release = render(chart, name)
        assert release.all("Secret") == []
        api_key = release.merged["apiKey"]
        (entry,) = [e for e in release.server["env"] if e["name"] == "API_KEY"]
        assert entry["valueFrom"]["secretKeyRef"] == {"name": api_key["existingSecret"],
                                                      "key": api_key["existingSecretKey"]}


# ---------------------------------------------------------------- helm test, for real


def test_helm_test_pod_is_a_test_hook(release: Release) -> None:
    pods = release.test_pods()
    if not release.merged["tests"]["enabled"]:
        assert pods == []
        return
    (pod,) = pods
    assert pod["spec"]["restartPolicy"] == "Never"
    env = container_env(pod["spec"]["containers"][0])
    service = release.one("Service")
    http_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert env["EMBEDSERVE_URL"] == f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{http_port}"
    assert "POST" in http_routes()["/embed"]


def _run_test_pod(pod: Manifest, url: str) -> subprocess.CompletedProcess[str]:
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    env = {**container_env(container), "EMBEDSERVE_URL": url, "PATH": os.environ.get("PATH", ""), "TIMEOUT_S": "30"}
    env = {k: v for k, v in env.items() if not v.startswith("<secret ")}
    return subprocess.run([sys.executable, *container["command"][1:]], env=env, capture_output=True, text=True,
                          timeout=90)


def test_helm_test_posts_a_real_embed(chart: helm.Chart, server: RunningServer) -> None:
    # The script of the rendered test pod, against a real embedserve: the same POST it makes
    # through the Service in a cluster.
    (pod,) = render(chart, "default").test_pods()
    done = _run_test_pod(pod, server.url)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"ok: 2 vectors of dimension 384 from http://\S+/embed\n", done.stdout), done.stdout
    # And it does fail when there is no server to answer.
    closed = _run_test_pod(pod, "http://127.0.0.1:9")
    assert closed.returncode == 1 and "POST http://127.0.0.1:9/embed" in closed.stderr


# ---------------------------------------------------------------- NOTES


def test_notes_explain_how_to_reach_the_release(release: Release) -> None:
    name = release.deployment["metadata"]["name"]
    assert f"service/{name}" in release.notes
    assert ("helm test" in release.notes) is release.merged["tests"]["enabled"]
    if release.merged["apiKey"]["existingSecret"] or release.merged["apiKey"]["value"]:
        assert "Authorization: Bearer" in release.notes


# ---------------------------------------------------------------- Dockerfiles


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage from {self.base}"
        return found[-1]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped, global
    ARG defaults substituted into FROM."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], rest).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: {keyword} before FROM"
            arg, _, default = rest.partition("=")
            global_args[arg] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def stage_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for word in shlex.split(rest):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {rest!r}: use KEY=value"
            env[key] = value
    return env


@cache
def image_env(flavor: str) -> dict[str, str]:
    return stage_env(parse_dockerfile(DOCKER / f"Dockerfile.{flavor}")[-1])


DOCKERFILES = ("cpu", "cuda")


@pytest.mark.parametrize("flavor", DOCKERFILES)
def test_dockerfile_entrypoint_and_cmd_parse_with_the_launcher(flavor: str) -> None:
    final = parse_dockerfile(DOCKER / f"Dockerfile.{flavor}")[-1]
    # Exec form (JSON): the launcher is PID 1 and gets SIGTERM itself, not a shell.
    entrypoint = json.loads(final.last("ENTRYPOINT"))
    cmd = json.loads(final.last("CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["embedserve"] and scripts["embedserve"] == "embedserve.launcher:main_entry"
    env = {**image_env(flavor), "HOSTNAME": "0f3c2a9d81b4"}  # Docker sets HOSTNAME to the container id
    args = parse_launcher_args(cmd, env)
    assert args.json_output is True
    # PORT=80 as in TEI's images; the user without capabilities binds it where the container's
    # network namespace sets net.ipv4.ip_unprivileged_port_start (tests/test_port80_e2e.py).
    assert env["PORT"] == "80" and args.port == 80
    exposed = {int(p.split("/")[0]) for rest in final.all("EXPOSE") for p in rest.split()}
    assert {args.port, args.grpc_port, args.prometheus_port} <= exposed
    assert args.huggingface_hub_cache == "/data"
    assert env["EMBEDSERVE_CACHE_DIR"].startswith("/data/")
    assert env["HF_HOME"] and env["PATH"].startswith("/opt/venv/bin:")
    # The healthcheck asks the address and port the launcher binds.
    assert "/health" in final.last("HEALTHCHECK") and "PORT" in final.last("HEALTHCHECK")
    assert "HOSTNAME" in final.last("HEALTHCHECK")


@pytest.mark.parametrize("flavor", DOCKERFILES)
def test_dockerfile_healthcheck_asks_the_port_the_launcher_binds(flavor: str, server: RunningServer) -> None:
    # The image's HEALTHCHECK command, run against a real server: on PORT, or on Vertex AI's
    # AIP_HTTP_PORT when set (the launcher's override), at the address HOSTNAME names.
    final = parse_dockerfile(DOCKER / f"Dockerfile.{flavor}")[-1]
    command = json.loads(final.last("HEALTHCHECK").split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    port = server.url.rsplit(":", 1)[1]

    def check(**env: str) -> int:
        base = {"PATH": os.environ.get("PATH", ""), "HOSTNAME": "127.0.0.1"}
        return subprocess.run([sys.executable, *command[1:]], env={**base, **env}, capture_output=True,
                              timeout=30).returncode

    assert check(PORT=port) == 0
    assert check(PORT="9", AIP_HTTP_PORT=port) == 0
    assert check(PORT="9") != 0


@pytest.mark.parametrize("flavor", DOCKERFILES)
def test_dockerfile_is_multistage_pinned_and_non_root(flavor: str, chart: helm.Chart) -> None:
    stages = parse_dockerfile(DOCKER / f"Dockerfile.{flavor}")
    assert len(stages) >= 2, "build tools stay in a build stage"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", stage.base), f"unpinned base {stage.base}"
        assert ":latest@" not in stage.base
    final = stages[-1]
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), f"USER {user}"
    # The chart's securityContext runs the image's own user.
    security = render(chart, "default").merged["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid or uid))
    assert "/opt/venv" in " ".join(final.all("COPY"))
    if flavor == "cuda":
        assert stages[-1].base.startswith("nvidia/cuda:") and "cudnn-runtime" in stages[-1].base
    # The build installs the extras the README names for each machine.
    build = " ".join(rest for stage in stages[:-1] for rest in stage.all("RUN"))
    assert {"cpu": '".[cpu]"', "cuda": '".[torch,gpu]"'}[flavor] in build
    assert "--constraint requirements.lock" in build


@pytest.mark.parametrize("flavor", DOCKERFILES)
def test_docker_context_holds_what_the_build_copies(flavor: str) -> None:
    dockerfile = DOCKER / f"Dockerfile.{flavor}"
    allowed = {line[1:] for line in (DOCKER / f"Dockerfile.{flavor}.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for stage in parse_dockerfile(dockerfile):
        for rest in stage.all("COPY"):
            if rest.startswith("--from="):
                continue
            *sources, _ = rest.split()
            for source in sources:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source in allowed, f"COPY {source}: excluded by the .dockerignore"


# ---------------------------------------------------------------- several models (issue 15)


def test_models_render_a_config_file_the_launcher_reads(chart: helm.Chart, tmp_path: Path) -> None:
    from embedserve.router.models_config import parse_models_config

    release = render(chart, "multimodel")
    args = server_args(release)
    assert args.model_id is None and args.models_config
    configmap = release.one("ConfigMap")
    entries = parse_models_config(yaml.safe_load(configmap["data"]["models.yaml"]))
    assert [(e.model_id, e.name) for e in entries] == [(m["model_id"], m.get("name", m["model_id"]))
                                                       for m in release.merged["models"]]
    assert entries[1].model_args(args).max_batch_tokens == 8192
    # The file is where the flag says, from that ConfigMap, read-only.
    mount = mount_for(release.server, args.models_config)
    assert mount is not None and mount["readOnly"] is True
    assert volume(release.pod_spec, mount["name"])["configMap"]["name"] == configmap["metadata"]["name"]
    assert "checksum/models" in release.deployment["spec"]["template"]["metadata"]["annotations"]


def test_no_models_keeps_the_single_model_chart(chart: helm.Chart) -> None:
    release = render(chart, "default")
    assert not release.all("ConfigMap")
    assert server_args(release).models_config is None


@pytest.mark.parametrize(("values", "complaint"), [
    ({"models": [{"name": "x"}]}, "model_id"),
    ({"models": [{"model_id": "a", "port": 80}]}, "port"),
    ({"models": [{"model_id": "a", "pooling": "max"}]}, "/models/0/pooling"),
])
def test_schema_checks_model_entries(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_models_and_a_single_model_id_are_exclusive(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="models and server.modelId"):
        chart.render({"models": [{"model_id": "a"}], "server": {"modelId": "b"}}, name=RELEASE, namespace=NAMESPACE)
