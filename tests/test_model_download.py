"""What a launch downloads from the Hub: the allow-list chosen from the repository's
file list (unit), and real downloads from a local Hub stand-in (a real HTTP server)
into a real huggingface_hub cache, through the launcher (integration)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedserve.router.model_download import backend_files, checkpoint_files, metadata_files, onnx_files
from tests.backends.parity import cosine
from tests.conftest import ROOT, free_port, short_socket_prefix, start_server
from tests.hub_standin import HubStandIn, commit_of, hub_standin
from tests.models import build_remote_code_model, build_st_dense_model, build_tiny_model

TEXTS = ["downloaded from a Hub stand-in", "short"]

ST_REPO = [
    "config.json", "tokenizer.json", "vocab.txt", "modules.json", "1_Pooling/config.json", "README.md",
    ".gitattributes", "model.safetensors", "pytorch_model.bin", "onnx/model.onnx", "onnx/model_qint8_avx512.onnx",
    "2_Dense/config.json", "2_Dense/model.safetensors", "2_Dense/pytorch_model.bin", "openvino/openvino_model.bin",
]
METADATA = ["1_Pooling/config.json", "2_Dense/config.json", "2_Dense/model.safetensors", "config.json",
            "modules.json", "tokenizer.json", "vocab.txt"]


# ---------------------------------------------------------------- the allow-list


def test_metadata_is_configs_tokenizer_and_dense_weights() -> None:
    assert metadata_files(ST_REPO) == METADATA
    bin_dense = [name for name in ST_REPO if name != "2_Dense/model.safetensors"]
    assert "2_Dense/pytorch_model.bin" in metadata_files(bin_dense)
    # bge-m3's head files decide the backend (router/model_config.M3_HEAD_FILES): fetched with the metadata.
    m3 = metadata_files([*ST_REPO, "colbert_linear.pt", "sparse_linear.pt", "onnx/colbert_linear.pt"])
    assert set(m3) - set(METADATA) == {"colbert_linear.pt", "sparse_linear.pt"}


def test_torch_takes_safetensors_and_never_the_pickles_beside_them() -> None:
    assert backend_files(ST_REPO, ["torch"], trust_remote_code=False) == ["model.safetensors"]


def test_bin_only_checkpoints_sharded_or_not() -> None:
    assert checkpoint_files(["config.json", "pytorch_model.bin", "training_args.bin"]) == ["pytorch_model.bin"]
    sharded = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]
    assert backend_files(["config.json", *sharded], ["python"], False) == sharded[:2]
    assert "pytorch_model.bin.index.json" in metadata_files(sharded)
    safetensor_shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                         "model.safetensors.index.json", *sharded]
    assert backend_files(safetensor_shards, ["torch"], False) == safetensor_shards[:2]


def test_onnx_takes_its_model_where_the_engine_looks_else_the_checkpoint() -> None:
    assert backend_files(ST_REPO, ["onnx"], False) == ["onnx/model.onnx"]
    root = ["config.json", "model.onnx", "model.onnx_data", "model.safetensors"]
    assert onnx_files(root) == ["model.onnx", "model.onnx_data"]
    assert backend_files(root, ["onnx"], False) == ["model.onnx", "model.onnx_data"]
    both = [*root, "onnx/model.onnx", "onnx/model.onnx_data"]
    assert backend_files(both, ["onnx"], False) == ["onnx/model.onnx", "onnx/model.onnx_data"]
    # No ONNX file: the engine exports the checkpoint.
    assert backend_files(["config.json", "model.safetensors"], ["onnx"], False) == ["model.safetensors"]
    # torch never takes ONNX files; both engines together take both.
    assert backend_files(root, ["torch"], False) == ["model.safetensors"]
    assert backend_files(root, ["onnx", "torch"], False) == ["model.onnx", "model.onnx_data", "model.safetensors"]


def test_repository_code_only_with_the_opt_in() -> None:
    remote = ["config.json", "configuration_tiny.py", "modeling_tiny.py", "model.safetensors"]
    assert backend_files(remote, ["python"], trust_remote_code=False) == ["model.safetensors"]
    assert backend_files(remote, ["python"], trust_remote_code=True) == [
        "configuration_tiny.py", "model.safetensors", "modeling_tiny.py"]
    assert not any(name.endswith(".py") for name in metadata_files(remote))


# ---------------------------------------------------------------- against a Hub stand-in


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-repos")
    # (a) a sentence-transformers pipeline in safetensors, with files no backend here
    # loads beside it: the same weights pickled, and ONNX variants.
    st = build_st_dense_model(root / "st", model_dir)
    shutil.copy(_pickled(st, root / "st-pickled"), st / "pytorch_model.bin")
    (st / "onnx").mkdir()
    # Only their names matter here: a download test never reads them.
    (st / "onnx" / "model.onnx").write_bytes(b"onnx file not fetched by the torch engine")
    (st / "onnx" / "model_qint8_avx512.onnx").write_bytes(b"a variant no engine here loads")
    (st / "train.py").write_text("print('repository code that must not be fetched')\n")
    # (b) a checkpoint in pytorch_model.bin only.
    pickled = build_tiny_model("reranker", root / "bin-source", model_dir)
    bin_only = root / "bin"
    bin_only.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(pickled / name, bin_only / name)
    shutil.copy(_pickled(pickled, root / "bin-pickled"), bin_only / "pytorch_model.bin")
    # (c) a model whose architecture is its own code (auto_map).
    remote = build_remote_code_model(root / "remote", model_dir)
    # (d) an ONNX model at the repository root (with external data) beside its checkpoint.
    onnx = build_tiny_model("reranker", root / "onnx", model_dir)
    (onnx / "model.onnx").write_bytes(b"root onnx graph")
    (onnx / "model.onnx_data").write_bytes(b"root onnx weights")
    # A repository without any weights (a tokenizer-only one, say).
    empty = root / "empty"
    empty.mkdir()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        shutil.copy(bin_only / name, empty / name)
    return {"acme/empty": empty, "acme/tiny-st": st, "acme/tiny-bin": bin_only, "acme/tiny-remote": remote, "acme/tiny-onnx": onnx}


def _pickled(model_dir: Path, scratch: Path) -> Path:
    from transformers import AutoModel

    AutoModel.from_pretrained(model_dir).save_pretrained(scratch, safe_serialization=False)
    return scratch / "pytorch_model.bin"


@pytest.fixture
def hub(repos: dict[str, Path]) -> Iterator[HubStandIn]:
    with hub_standin(repos) as running:
        yield running


def _online(hub: HubStandIn) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}


# Plans the launch (model, download, backend) without starting children.
PLAN_ONLY = """
import sys, launcher
args = launcher.build_parser().parse_args(sys.argv[1:])
try:
    plan = launcher.plan_launch(args)
except launcher.LaunchError as exc:
    sys.exit(f"launch refused: {exc}")
print(plan.backend)
"""


def _plan(hub: HubStandIn, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PLAN_ONLY, "--hostname", "127.0.0.1", "--huggingface-hub-cache", str(cache), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **_online(hub)},
    )


def _snapshot(cache: Path, repo_id: str) -> set[str]:
    folder = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit_of(repo_id)
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def test_safetensors_model_fetches_what_torch_loads_only(hub: HubStandIn, tmp_path: Path) -> None:
    done = _plan(hub, tmp_path, "--model-id", "acme/tiny-st", "--backend", "torch")
    assert done.returncode == 0, done.stderr
    files = _snapshot(tmp_path, "acme/tiny-st")
    assert "model.safetensors" in files and "modules.json" in files and "tokenizer.json" in files
    assert any(name.endswith("_Dense/config.json") for name in files)
    assert any(name.endswith("_Dense/model.safetensors") for name in files)
    assert not {"pytorch_model.bin", "onnx/model.onnx", "train.py"} & files
    assert files == hub.downloaded("acme/tiny-st")


def test_bin_only_model_fetches_its_pickle(hub: HubStandIn, tmp_path: Path) -> None:
    done = _plan(hub, tmp_path, "--model-id", "acme/tiny-bin", "--backend", "torch")
    assert done.returncode == 0, done.stderr
    assert _snapshot(tmp_path, "acme/tiny-bin") == {
        "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
        "pytorch_model.bin"}
    # With the Hub out of reach (and HF_HUB_OFFLINE unset), the cache still serves.
    hub.url = f"http://127.0.0.1:{free_port()}"
    unreachable = _plan(hub, tmp_path, "--model-id", "acme/tiny-bin", "--backend", "torch")
    assert unreachable.returncode == 0, unreachable.stderr
    assert "cannot list acme/tiny-bin on the Hub (ConnectionError); looking in the cache" in unreachable.stderr


def test_remote_code_is_fetched_only_with_the_opt_in(hub: HubStandIn, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "embedserve.launcher", "--hostname", "127.0.0.1", "--port", "0", "--grpc-port", "0",
         "--uds-path", short_socket_prefix(), "--huggingface-hub-cache", str(tmp_path / "refused"),
         "--model-id", "acme/tiny-remote"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **_online(hub)},
    )
    assert refused.returncode == 2
    [line] = [line for line in refused.stderr.splitlines() if " ERROR " in line]
    assert "acme/tiny-remote" in line and "--trust-remote-code or set TRUST_REMOTE_CODE=true" in line
    fetched = _snapshot(tmp_path / "refused", "acme/tiny-remote")
    assert "config.json" in fetched and not any(name.endswith((".py", ".safetensors")) for name in fetched)

    trusted = _plan(hub, tmp_path / "trusted", "--model-id", "acme/tiny-remote", "--trust-remote-code")
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.split()[-1] == "python"
    fetched = _snapshot(tmp_path / "trusted", "acme/tiny-remote")
    assert {"configuration_tiny.py", "modeling_tiny.py", "model.safetensors", "config.json"} <= fetched


def test_root_onnx_model_under_the_onnx_backend(hub: HubStandIn, tmp_path: Path) -> None:
    done = _plan(hub, tmp_path, "--model-id", "acme/tiny-onnx", "--backend", "onnx")
    assert done.returncode == 0, done.stderr
    files = _snapshot(tmp_path, "acme/tiny-onnx")
    assert {"model.onnx", "model.onnx_data", "config.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files


def test_prefetch_step_fetches_for_a_gpu_and_a_cpu_server(hub: HubStandIn, tmp_path: Path) -> None:
    # The chart's prefetch step runs without the server's GPUs: with `auto` it fetches
    # what torch (a GPU) and onnx (CPU) would load.
    script = (ROOT / "deploy" / "helm" / "embedserve" / "files" / "prefetch.py").read_text()
    env = {**os.environ, **_online(hub), "MODEL_ID": "acme/tiny-st", "HUGGINGFACE_HUB_CACHE": str(tmp_path),
           "BACKEND": "auto", "TRUST_REMOTE_CODE": "false"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    files = _snapshot(tmp_path, "acme/tiny-st")
    assert {"model.safetensors", "onnx/model.onnx", "modules.json"} <= files
    assert not {"pytorch_model.bin", "onnx/model_qint8_avx512.onnx", "train.py"} & files


def test_downloaded_model_serves_embed_then_starts_offline_from_the_cache(
    hub: HubStandIn, repos: dict[str, Path], tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    cache = tmp_path / "hub-cache"
    args = ("--model-id", "acme/tiny-st", "--backend", "torch", "--huggingface-hub-cache", str(cache))
    with start_server(*args, tmp_dir=tmp_path, env=_online(hub)) as server:
        online = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS}, timeout=60)
        assert online.status_code == 200, online.text
        assert httpx.get(f"{server.url}/info").json()["model_id"] == "acme/tiny-st"
    expected = SentenceTransformer(str(repos["acme/tiny-st"]), device="cpu").encode(TEXTS)
    assert cosine(np.array(online.json()), expected).min() >= 0.9999
    # The same launch offline reads the cache only.
    served = len(hub.downloads)
    with start_server(*args, tmp_dir=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": hub.url}) as server:
        offline = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS}, timeout=60)
    assert offline.json() == online.json()
    assert len(hub.downloads) == served


def test_unknown_repository_fails_in_one_line(hub: HubStandIn, tmp_path: Path) -> None:
    done = _plan(hub, tmp_path, "--model-id", "acme/missing")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "launch refused: cannot fetch model acme/missing: no such repository on the Hub (a private one needs --hf-token)")
    weightless = _plan(hub, tmp_path, "--model-id", "acme/empty", "--backend", "onnx")
    assert weightless.stderr.strip().splitlines()[-1] == (
        "launch refused: model acme/empty has no weights the onnx backend loads: no *.safetensors or "
        "pytorch_model*.bin at the repository root, no onnx/model.onnx or model.onnx")
    bad_revision = _plan(hub, tmp_path, "--model-id", "acme/tiny-bin", "--revision", "v9")
    assert bad_revision.stderr.strip().splitlines()[-1] == (
        "launch refused: cannot fetch model acme/tiny-bin: revision v9 not found in the repository")
