"""A checkpoint's files, read for the architectures the torch engine implements
itself (backends/gte.py, nomic.py, jina.py) rather than through transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def read_config(model_dir: Path) -> dict[str, Any] | None:
    """config.json as a dict; None when it is missing or not a JSON object."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for path in files:
            state.update(load_file(str(path)))
        return state
    bins = sorted(model_dir.glob("pytorch_model*.bin"))
    if not bins:
        raise ValueError(f"no *.safetensors or pytorch_model*.bin weights in {model_dir}")
    state = {}
    for path in bins:
        state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state
