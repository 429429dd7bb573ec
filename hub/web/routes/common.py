"""What every handler needs: the hub's state, and JSON in and out."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from hub.bodies.read import read_body
from hub.web.decode import decode
from hub.web.state import HubState

T = TypeVar("T")

MAX_JSON_BYTES = 64 * 1024


def hub(connection: HTTPConnection) -> HubState:
    state: HubState = connection.app.state.hub
    return state


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data``, a shape (a ``Struct``) or plain JSON data, as the answer."""
    body = msgspec.json.encode(data)
    return Response(body, status, headers=headers, media_type="application/json")


async def json_body(
    request: Request, shape: type[T], *, optional: bool = False, limit: int = MAX_JSON_BYTES
) -> T:
    """The request's JSON body as ``shape``: 413 if too large, 400 if not JSON, 422 naming
    the field if not the shape. ``optional``: an empty body is an empty object."""
    body = await read_body(request, limit, hub(request).settings.body_timeout_seconds)
    if optional and not body.strip():
        body = b"{}"
    return decode(body, shape)
