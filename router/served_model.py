"""The models one router serves: each a `ServedModel` with its own backends,
queue, permits, metrics and operations; the `ModelRegistry` finds them by name.

How a request chooses (README "Several models"): the path prefix
`/models/<name>/...`, else the `x-model` header (gRPC: metadata), else the
OpenAI body's `model` field, else the default model, the first one. A name no
model has is a 404, never another model's answer. With one model the OpenAI
`model` field is not checked, as TEI does not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from embedserve.router.backend_client import BackendClient
from embedserve.router.errors import ModelNotFoundError
from embedserve.router.infer import Inference
from embedserve.router.metrics import Metrics
from embedserve.router.multi_output import ModelHeads
from embedserve.router.operations import Operations
from embedserve.router.queue_handle import QueueHandle
from embedserve.router.settings import RouterSettings

MODEL_HEADER = "x-model"
PATH_PREFIX = "/models/"


@dataclass(frozen=True)
class BackendFacts:
    """What a model's backends told the router at start (all of them agree)."""

    hidden_size: int
    dtype: str
    backend: str
    is_padded: bool
    max_batch_size: int | None
    # A causal-LM reranker's prompt template and default instruction; "": none.
    reranker_template: str = ""
    reranker_instruction: str = ""
    # bge-m3's lexical and multi-vector heads, when the backends run them.
    heads: ModelHeads = ModelHeads()


@dataclass
class ServedModel:
    index: int
    name: str
    # The server's settings with this model's own fields (RouterSettings.model_views).
    settings: RouterSettings
    metrics: Metrics
    backends: list[BackendClient]
    facts: BackendFacts
    # This model's own batch queue and permits.
    queue: QueueHandle
    inference: Inference
    operations: Operations


class ModelRegistry:
    def __init__(self, models: Sequence[ServedModel]) -> None:
        assert models, "a router serves at least one model"
        self._models = list(models)
        self._by_name = {model.name: model for model in models}

    @property
    def default(self) -> ServedModel:
        return self._models[0]

    @property
    def several(self) -> bool:
        return len(self._models) > 1

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str) -> ServedModel | None:
        return self._by_name.get(name)

    def named(self, name: str) -> ServedModel:
        model = self._by_name.get(name)
        if model is None:
            raise ModelNotFoundError(f"The model `{name}` does not exist (served: {', '.join(self._by_name)})")
        return model

    def choose(self, name: str | None) -> ServedModel:
        """The model a name asks for; None: the default one."""
        return self.default if name is None else self.named(name)

    def split_path(self, path: str) -> tuple[ServedModel, str] | None:
        """`/models/<name>/<route>` → (that model, `/<route>`); None if the path has
        no such prefix. Names may hold '/' (Hub ids): the longest served name that
        fits wins. A prefix naming no model raises ModelNotFoundError."""
        if not path.startswith(PATH_PREFIX):
            return None
        rest = path[len(PATH_PREFIX):]
        best: ServedModel | None = None
        for model in self._models:
            fits = rest == model.name or rest.startswith(model.name + "/")
            if fits and (best is None or len(model.name) > len(best.name)):
                best = model
        if best is None:
            raise ModelNotFoundError(f"The model `{rest.split('/', 1)[0]}` does not exist "
                                     f"(served: {', '.join(self._by_name)})")
        # `/models/<name>` alone is that model's `/`.
        return best, rest[len(best.name):] or "/"
