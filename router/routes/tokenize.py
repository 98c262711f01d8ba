"""/tokenize and /decode: tokenizer only, no model, no permits, no x-* headers."""

from __future__ import annotations

from embedserve.router.routes._http import HttpCall, JsonPieces
from embedserve.router.routes._inference import Outcome, endpoint
from embedserve.router.schemas import DecodeRequest, TokenizeRequest, parse_decode_ids


async def handle_tokenize(call: HttpCall, body: TokenizeRequest) -> Outcome:
    inputs = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    arrays = await call.model.operations.tokenize(inputs, body.add_special_tokens, body.prompt_name, "json")
    # The worker wrote each input's JSON: the loop only passes on bytes, one input at a time.
    return Outcome(JsonPieces.array(arrays))


async def handle_decode(call: HttpCall, body: DecodeRequest) -> Outcome:
    id_lists, _ = parse_decode_ids(body.ids)
    return Outcome(await call.model.operations.decode(id_lists, body.skip_special_tokens))


tokenize = endpoint(TokenizeRequest, handle_tokenize)
decode = endpoint(DecodeRequest, handle_decode)

