"""/tokenize and /decode: tokenizer only, no model, no permits, no x-* headers."""

from __future__ import annotations

from starlette.requests import Request

from router.errors import EmptyInputError, TokenizerError, input_validation
from router.model_ops import resolve_prompt
from router.routes._inference import Outcome, endpoint
from router.schemas import DecodeRequest, TokenizeRequest, check_batch_size, parse_decode_ids
from router.state import AppState
from tokenizer_pool.pool import InvalidInputError, TokenizationError


async def handle_tokenize(request: Request, state: AppState, body: TokenizeRequest) -> Outcome:
    inputs = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    if not inputs:
        raise EmptyInputError("`inputs` cannot be empty")
    check_batch_size(len(inputs), state.settings.max_client_batch_size)
    prompt = resolve_prompt(state.settings, body.prompt_name)
    try:
        results = await state.tokenizers.tokenize(inputs, body.add_special_tokens, prompt)
    except TokenizationError as exc:
        raise TokenizerError(exc.message) from exc
    return Outcome(
        [
            [{"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop} for t in tokens]
            for tokens in results
        ]
    )


async def handle_decode(request: Request, state: AppState, body: DecodeRequest) -> Outcome:
    id_lists, _ = parse_decode_ids(body.ids)
    check_batch_size(len(id_lists), state.settings.max_client_batch_size)
    try:
        return Outcome(await state.tokenizers.decode(id_lists, body.skip_special_tokens))
    except InvalidInputError as exc:
        raise input_validation(exc.message) from exc
    except TokenizationError as exc:
        raise TokenizerError(exc.message) from exc


tokenize = endpoint(TokenizeRequest, handle_tokenize)
decode = endpoint(DecodeRequest, handle_decode)

