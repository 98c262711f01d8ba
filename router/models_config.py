"""--models-config: the YAML file that lists the models one server serves.

    models:
      - model_id: BAAI/bge-small-en-v1.5     # required: a Hub id or a local directory
        name: embedder                       # served name; default the model id
        pooling: cls
        max_batch_tokens: 8192
      - model_id: /models/my-reranker

Only per-model settings go here (`PER_MODEL_KEYS`); the command line's values of
those flags are every model's defaults, a key here overrides them for its model.
Server-wide flags (port, API key, tokenizer workers, ...) stay on the command line.
Parsed and checked in full before anything starts: one clear line per mistake.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from embedserve.router.model_config import POOLING_FLAG_VALUES

BACKENDS = ("auto", "torch", "onnx", "python", "static")
DTYPES = ("float32", "float16", "bfloat16", "int8")

# key -> what a value must be; `str` keys with a fixed set name it in CHOICES.
PER_MODEL_KEYS: dict[str, type] = {
    "model_id": str,
    "name": str,
    "revision": str,
    "pooling": str,
    "dtype": str,
    "backend": str,
    "dense_path": str,
    "trust_remote_code": bool,
    "max_batch_tokens": int,
    "max_batch_requests": int,
    "max_concurrent_requests": int,
    "default_prompt": str,
    "default_prompt_name": str,
    "prompts": dict,
    "reranker_template": str,
    "reranker_instruction": str,
}
CHOICES: dict[str, Sequence[str]] = {"pooling": tuple(POOLING_FLAG_VALUES), "dtype": DTYPES, "backend": BACKENDS}


class ModelsConfigError(Exception):
    """A mistake in the models file or in how models were given; one line."""


@dataclass(frozen=True)
class ModelEntry:
    """One model to serve: its id, its served name, and the per-model settings
    that differ from the command line's (keys of PER_MODEL_KEYS)."""

    model_id: str | None  # None: the bundled default model
    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def model_args(self, args: argparse.Namespace) -> argparse.Namespace:
        """The launcher's flags as this model sees them: the command line's, with
        this entry's overrides. `prompts` adds to the model's own prompts."""
        merged = argparse.Namespace(**vars(args))
        merged.model_id = self.model_id
        merged.served_model_name = self.name
        merged.extra_prompts = {}
        for key, value in self.overrides.items():
            if key == "prompts":
                merged.extra_prompts = dict(value)
            elif key == "default_prompt":
                merged.default_prompt, merged.default_prompt_name = value, None
            elif key == "default_prompt_name":
                merged.default_prompt, merged.default_prompt_name = None, value
            elif key not in ("model_id", "name"):
                setattr(merged, key, value)
        return merged


def models_from_flags(model_ids: Sequence[str], served_model_name: str | None, default_id: str) -> list[ModelEntry]:
    """--model-id given zero, one or several times. `--served-model-name` names a
    single model; several are named by their ids (or use --models-config)."""
    if not model_ids:
        return [ModelEntry(None, served_model_name or default_id)]
    if len(model_ids) > 1 and served_model_name:
        raise ModelsConfigError("--served-model-name names a single model; with several --model-id, give each "
                                "its name in --models-config")
    entries = [ModelEntry(model_id, served_model_name or model_id) for model_id in model_ids]
    _check_unique([entry.name for entry in entries], "--model-id")
    return entries


def load_models_config(path: str | Path) -> list[ModelEntry]:
    """The file's models, in order (the first is the server's default model)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ModelsConfigError(f"cannot read --models-config {path}: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelsConfigError(f"--models-config {path} is not valid YAML: {_one_line(exc)}") from exc
    return parse_models_config(document, str(path))


def parse_models_config(document: object, source: str = "--models-config") -> list[ModelEntry]:
    if not isinstance(document, dict) or set(document) != {"models"}:
        raise ModelsConfigError(f"{source}: expected a mapping with one key, `models` (a list of models)")
    models = document["models"]
    if not isinstance(models, list) or not models:
        raise ModelsConfigError(f"{source}: `models` must be a non-empty list")
    entries = [_entry(item, f"{source}: models[{index}]") for index, item in enumerate(models)]
    _check_unique([entry.name for entry in entries], source)
    return entries


def _entry(item: object, where: str) -> ModelEntry:
    if not isinstance(item, dict):
        raise ModelsConfigError(f"{where} must be a mapping of settings")
    unknown = sorted(str(key) for key in item if key not in PER_MODEL_KEYS)
    if unknown:
        raise ModelsConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (per-model keys: "
                                f"{', '.join(PER_MODEL_KEYS)}; server-wide settings stay on the command line)")
    if "model_id" not in item:
        raise ModelsConfigError(f"{where}: `model_id` is required")
    for key, value in item.items():
        _check_value(key, value, f"{where}.{key}")
    if "default_prompt" in item and "default_prompt_name" in item:
        raise ModelsConfigError(f"{where}: give `default_prompt` or `default_prompt_name`, not both")
    model_id = str(item["model_id"])
    name = str(item.get("name", model_id))
    return ModelEntry(model_id, name, {key: value for key, value in item.items()})


def _check_value(key: str, value: object, where: str) -> None:
    expected = PER_MODEL_KEYS[key]
    # YAML's `true` is an int to Python: a bool is never a number here.
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ModelsConfigError(f"{where} must be a whole number, got {value!r}")
    if expected is int and value <= 0:  # type: ignore[operator]
        raise ModelsConfigError(f"{where} must be positive, got {value!r}")
    if expected is bool and not isinstance(value, bool):
        raise ModelsConfigError(f"{where} must be true or false, got {value!r}")
    if expected is str and (not isinstance(value, str) or not value.strip()):
        raise ModelsConfigError(f"{where} must be a non-empty string, got {value!r}")
    if expected is dict and (not isinstance(value, dict)
                             or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise ModelsConfigError(f"{where} must map prompt names to prompt texts (strings)")
    choices = CHOICES.get(key)
    if choices is not None and value not in choices:
        raise ModelsConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
    if key == "name" and (any(c.isspace() for c in str(value)) or str(value).startswith("/")
                          or str(value).endswith("/")):
        raise ModelsConfigError(f"{where} must have no spaces and not start or end with '/', got {value!r}")


def _check_unique(names: Sequence[str], source: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ModelsConfigError(f"{source}: two models are served as {name!r}; give each its own `name`")
        seen.add(name)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
