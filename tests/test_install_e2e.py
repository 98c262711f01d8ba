"""The project installed from its wheel next to proto-plus, which owns the top-level
`proto` import name (every Google Cloud client library pulls it in): nothing of ours
may be imported as `proto`, `router` or `backends`, so both work in one environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, start_server


PARTS = ("router", "backends", "tokenizer_pool", "proto")


def test_every_package_folder_is_installed() -> None:
    # pyproject.toml lists them one by one (a package-dir mapping rules out `find`).
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"embedserve." + ".".join(init.parent.relative_to(ROOT).parts)
               for part in PARTS for init in (ROOT / part).rglob("__init__.py")}
    assert folders <= listed


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment holding our wheel; its dependencies (proto-plus among them)
    come from the test environment's site-packages, added by a .pth file."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(ROOT)], check=True, cwd=root)
    [wheel] = wheels.glob("embedserve-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Plain paths: the .pth files in them (our editable install's import hook) stay unread.
    dependencies = [entry for entry in sys.path if entry.endswith("site-packages")]
    Path(site, "test-environment.pth").write_text("".join(f"{entry}\n" for entry in dependencies))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, cwd=root)
    return python


def test_proto_plus_keeps_its_import_name(installed_python: Path, tmp_path: Path) -> None:
    # Run from outside the checkout: only what is installed can be imported.
    probe = ("import proto, embedserve.launcher, embedserve.proto.gen_pb.tei_pb2 as tei; "
             "print(proto.__file__); print(hasattr(proto, 'Message')); print(embedserve.launcher.__file__)")
    out = subprocess.run([str(installed_python), "-c", probe], check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout.split()
    assert not Path(out[0]).resolve().is_relative_to(ROOT / "proto")
    assert out[1] == "True"  # proto-plus's API, not our folder
    assert Path(out[2]).resolve() != ROOT / "launcher.py"  # the wheel's copy, not the checkout


def test_the_installed_server_starts_and_serves(installed_python: Path, tmp_path: Path) -> None:
    with start_server(tmp_dir=tmp_path, python=str(installed_python), cwd=tmp_path) as server:
        response = httpx.post(f"{server.url}/embed", json={"inputs": "one environment, two proto packages"})
        assert response.status_code == 200
        assert len(response.json()[0]) == 384
