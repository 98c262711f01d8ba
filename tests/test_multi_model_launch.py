"""The launcher refuses bad ways of giving several models in one line, exit 2,
before any child starts (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, short_socket_prefix


def _refused(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "embedserve.launcher", "--hostname", "127.0.0.1", "--port", "0", "--grpc-port", "0",
         "--prometheus-port", "0", "--uds-path", short_socket_prefix(), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  - name: x\n", "`model_id` is required"),
    ("models:\n  - model_id: a\n    hostname: b\n", "unknown key(s) hostname"),
    ("models:\n  - model_id: a\n  - model_id: a\n", "two models are served as 'a'"),
])
def test_a_bad_models_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    assert message in _refused("--models-config", str(path))


def test_models_come_from_flags_or_the_file_not_both(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  - model_id: {model_dir}\n")
    assert "not both" in _refused("--models-config", str(path), "--model-id", str(model_dir))
    assert "--served-model-name names a single model" in _refused(
        "--models-config", str(path), "--served-model-name", "x")


def test_several_model_ids_need_distinct_names(model_dir: Path) -> None:
    assert "two models are served as" in _refused("--model-id", str(model_dir), "--model-id", str(model_dir))
    assert "--served-model-name names a single model" in _refused(
        "--model-id", str(model_dir), "--model-id", "/elsewhere", "--served-model-name", "x")


def test_a_missing_model_in_the_file_is_one_line(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  - model_id: {model_dir}\n  - model_id: {tmp_path}/nowhere\n    name: second\n")
    assert "does not exist" in _refused("--models-config", str(path))
