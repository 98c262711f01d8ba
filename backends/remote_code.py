"""The Python fallback engine: models whose code ships in the model directory
(`auto_map` in config.json), loaded with trust_remote_code in their own process."""

from __future__ import annotations

from backends.base import EngineSpec
from backends.torch_backend import TorchBackend


class RemoteCodeBackend(TorchBackend):
    name = "python"

    def __init__(self, spec: EngineSpec) -> None:
        super().__init__(spec, trust_remote_code=True)
