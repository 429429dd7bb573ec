"""What every handler needs: the hub's state, and JSON in and out."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from hub.bodies.read import read_body
from hub.errors import Malformed, invalid
from hub.web.state import HubState

MAX_JSON_BYTES = 64 * 1024


def hub(connection: HTTPConnection) -> HubState:
    state: HubState = connection.app.state.hub
    return state


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type="application/json")


async def json_object(
    request: Request, *, optional: bool = False, limit: int = MAX_JSON_BYTES
) -> dict[str, Any]:
    """The request's JSON object body: 413 if too large, 400 if not JSON, 422 if not an object."""
    body = await read_body(request, limit, hub(request).settings.body_timeout_seconds)
    if not body.strip() and optional:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("bad_request", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid("body", "must be a JSON object")
    return value
