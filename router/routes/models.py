"""GET /v1/models and /v1/models/{name}: the served models, in OpenAI's list shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from embedserve.router.errors import ModelNotFoundError
from embedserve.router.routes._http import app_state, error_answer, json_response
from embedserve.router.served_model import ServedModel

OWNED_BY = "embedserve"


def _card(model: ServedModel, created: int) -> dict[str, object]:
    return {"id": model.name, "object": "model", "created": created, "owned_by": OWNED_BY}


async def list_models(request: Request) -> Response:
    state = app_state(request)
    return json_response({"object": "list", "data": [_card(m, state.started_at) for m in state.models]})


async def get_model(request: Request) -> Response:
    state = app_state(request)
    name = request.path_params["name"]
    model = state.models.get(name)
    if model is None:
        # OpenAI's route, OpenAI's not-found shape.
        return error_answer(ModelNotFoundError(f"The model `{name}` does not exist"), openai=True).response()
    return json_response(_card(model, state.started_at))
