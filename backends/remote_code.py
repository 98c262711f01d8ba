"""The Python fallback engine: models whose code ships in the model directory
(`auto_map` in config.json), loaded with trust_remote_code in their own process."""

from __future__ import annotations

from embedserve.backends.base import EngineSpec
from embedserve.backends.torch_backend import TorchBackend


class RemoteCodeBackend(TorchBackend):
    name = "python"

    def __init__(self, spec: EngineSpec) -> None:
        # The launcher refuses this engine without the opt-in already; checked again
        # here so that no other path into this process runs repository code.
        if not spec.trust_remote_code:
            raise ValueError("the python backend runs code from the model repository, which needs "
                             "--trust-remote-code or TRUST_REMOTE_CODE=true")
        super().__init__(spec, trust_remote_code=True)
