"""A sentence-transformers pipeline (`modules.json`) read as what we apply after
the transformer: one pooling, then Dense layers in order.

sentence-transformers runs Transformer -> Pooling -> Dense* -> Normalize. The
engines run the transformer and the pooling, then the Dense layers; Normalize
is the request's `normalize` flag, as in TEI. A module we cannot apply stops
the start: serving without it would answer wrong vectors with no error.
JSON only here, like the rest of `router/model_config.py`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["cls", "mean", "last_token", "splade"]
Activation = Literal["identity", "tanh", "relu", "sigmoid"]

logger = logging.getLogger("launcher")


class ModelConfigError(ValueError):
    """The model directory cannot be served as configured."""


# The classic boolean keys, in TEI's order of preference (core/src/download.rs).
CLASSIC_POOLING_KEYS: dict[str, Pooling] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "last_token",
}
# sentence-transformers 5.x writes one `pooling_mode` string (or a list, concatenated);
# the other modes it knows (max, mean_sqrt_len_tokens, weightedmean) we do not run.
POOLING_MODES: dict[str, Pooling] = {"cls": "cls", "mean": "mean", "lasttoken": "last_token"}

# torch.nn classes Dense configs name, by class name: each constructed without arguments.
ACTIVATIONS: dict[str, Activation] = {"Identity": "identity", "Tanh": "tanh", "ReLU": "relu", "Sigmoid": "sigmoid"}
# Dense's own default when its config names no activation (sentence_transformers Dense).
DEFAULT_ACTIVATION: Activation = "tanh"

# Module classes by their last name; the package moved in 5.x
# (sentence_transformers.models.Dense -> sentence_transformers.base.modules.dense.Dense).
APPLIED_MODULES = ("Pooling", "Dense")
# No effect on a served vector: Normalize is the request's `normalize`, Dropout is
# off at inference.
IGNORED_MODULES = ("Normalize", "Dropout")


@dataclass(frozen=True)
class DenseLayer:
    """One Dense module: activation(x @ weight.T + bias), weights in `path`."""

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: Activation


@dataclass(frozen=True)
class Pipeline:
    pooling_dir: Path  # where the Pooling module's config.json lives (if anywhere)
    dense_layers: tuple[DenseLayer, ...] = ()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path} must hold a JSON object")
    return data


def read_pipeline(model_dir: Path, dense_path: str | None = None) -> Pipeline:
    """The modules after the transformer; without modules.json, `1_Pooling` alone.

    `dense_path` (--dense-path) is TEI's choice among Dense folders such as stella's
    `2_Dense_<dims>` (backends/src/lib.rs): it replaces the Dense module when
    modules.json names exactly one, is ignored when it names several or none, and
    without modules.json is the Dense module applied after pooling (TEI's --help)."""
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        chosen = (read_dense(_chosen_dense_dir(model_dir, dense_path)),) if dense_path else ()
        return Pipeline(model_dir / "1_Pooling", chosen)
    try:
        modules = json.loads(modules_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{modules_path} is not valid JSON: {exc}") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelConfigError(f"{modules_path} must hold a list of modules")

    pooling_dir: Path | None = None
    dense_dirs: list[Path] = []
    # Normalize is left to the request's `normalize`, which only works as the last step.
    normalized_before_dense = False
    for index, module in enumerate(modules):
        type_name = str(module.get("type", ""))
        kind = type_name.rsplit(".", 1)[-1] if type_name.startswith("sentence_transformers.") else ""
        if index == 0:
            # The input module: the model itself, whatever class loads it (remote code
            # ships its own Transformer wrapper); the engine loads config.json and weights.
            continue
        folder = _module_dir(model_dir, str(module.get("path", "")))
        if kind == "Pooling":
            if pooling_dir is not None or dense_dirs:
                raise ModelConfigError("modules.json has a Pooling module after another Pooling or Dense module")
            pooling_dir = folder
        elif kind == "Dense":
            if normalized_before_dense:
                raise ModelConfigError("modules.json normalizes before a Dense module, which is not supported")
            dense_dirs.append(folder)
        elif kind in IGNORED_MODULES:
            normalized_before_dense |= kind == "Normalize"
        else:
            raise ModelConfigError(
                f"modules.json module {index} ({type_name or 'no type'}) is not supported: only "
                f"{', '.join(APPLIED_MODULES + IGNORED_MODULES)} can follow the transformer"
            )
    if dense_path is not None:
        dense_dirs = _apply_dense_path(model_dir, dense_dirs, dense_path)
    dense = [read_dense(folder) for folder in dense_dirs]
    if dense and pooling_dir is None:
        raise ModelConfigError("modules.json has Dense modules but no Pooling module before them")
    for previous, layer in zip(dense, dense[1:]):
        if previous.out_features != layer.in_features:
            raise ModelConfigError(f"{layer.path.name} takes {layer.in_features} features but "
                                f"{previous.path.name} gives {previous.out_features}")
    # No Pooling module named: TEI reads 1_Pooling all the same.
    return Pipeline(pooling_dir or model_dir / "1_Pooling", tuple(dense))


def _apply_dense_path(model_dir: Path, dense_dirs: list[Path], dense_path: str) -> list[Path]:
    if len(dense_dirs) == 1:
        chosen = _chosen_dense_dir(model_dir, dense_path)
        if chosen != dense_dirs[0]:
            logger.info("modules.json names Dense module %s; --dense-path %s is used instead",
                        dense_dirs[0].name, dense_path)
        return [chosen]
    logger.warning("--dense-path %s is ignored: modules.json names %s", dense_path,
                   f"{len(dense_dirs)} Dense modules, applied in order" if dense_dirs else "no Dense module")
    return dense_dirs


def _chosen_dense_dir(model_dir: Path, dense_path: str) -> Path:
    """The --dense-path folder, which must be a folder inside the model directory."""
    normalized = os.path.normpath(dense_path)
    folder = model_dir / normalized
    if os.path.isabs(normalized) or normalized in (".", "..") or normalized.startswith("../") \
            or not folder.is_dir():
        present = sorted(p.name for p in model_dir.glob("*Dense*") if p.is_dir())
        raise ModelConfigError(f"--dense-path {dense_path}: no such folder in the model directory "
                               f"(Dense folders there: {', '.join(present) or 'none'})")
    return folder


def _module_dir(model_dir: Path, relative: str) -> Path:
    # Lexically, not resolve(): Hub snapshots and local copies may hold symlinks.
    normalized = os.path.normpath(relative)
    if os.path.isabs(normalized) or normalized == ".." or normalized.startswith("../"):
        raise ModelConfigError(f"modules.json names {relative!r}, outside the model directory")
    return model_dir / normalized


def read_dense(folder: Path) -> DenseLayer:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelConfigError(f"Dense module {folder.name} has no config.json")
    config = read_json(config_path)
    try:
        in_features, out_features = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelConfigError(f"{config_path} needs integer in_features and out_features") from exc
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise ModelConfigError(f"Dense module {folder.name} reads or writes {config[key]!r}; "
                                "only the sentence embedding is supported")
    if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise ModelConfigError(f"Dense module {folder.name} has no model.safetensors or pytorch_model.bin")
    return DenseLayer(folder, in_features, out_features, bool(config.get("bias", True)),
                      _activation(folder.name, config))


def _activation(module: str, config: dict[str, Any]) -> Activation:
    if "activation_function" not in config:
        return DEFAULT_ACTIVATION
    name = config["activation_function"]
    if name is None:  # Dense(activation_function=None) means Identity
        return "identity"
    module_path, _, class_name = str(name).rpartition(".")
    if module_path.startswith("torch.") and class_name in ACTIVATIONS:
        return ACTIVATIONS[class_name]
    raise ModelConfigError(f"Dense module {module} uses activation {name}, which is not supported "
                        f"(supported: torch.nn {', '.join(ACTIVATIONS)})")


def pooling_of(config: dict[str, Any], source: Path) -> Pooling:
    """The pooling a Pooling config asks for, in either format sentence-transformers writes."""
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        if isinstance(modes, list) and len(modes) == 1:
            modes = modes[0]
        if isinstance(modes, str) and modes in POOLING_MODES:
            return POOLING_MODES[modes]
    else:
        for key, pooling in CLASSIC_POOLING_KEYS.items():
            if config.get(key):
                return pooling
    raise ModelConfigError(f"Pooling config {config} is not supported ({source})")
