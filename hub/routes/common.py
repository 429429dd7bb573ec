"""What every handler needs: the hub's state, JSON in and out, checked parameters."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from hub.callbacks import read_body
from hub.errors import HubError, invalid
from hub.signing import WATCH, Claims
from hub.state import HubState

MAX_JSON_BYTES = 64 * 1024
MAX_INT = 2**63 - 1


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
        raise HubError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid("body", "must be a JSON object")
    return value


def integer(value: Any, field: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high] (JSON numbers or query strings), else 422."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value.strip()):
        # The stripped text: str.strip() removes more than int() skips (\x1c to \x1f).
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}")
    return value


def text(value: Any, field: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > max_length or "\0" in value:
        raise invalid(field, f"must be at most {max_length} characters, without NUL")
    return value


def watch_url(
    state: HubState, stream_url: str, *, channel_id: str | None = None, task_id: str | None = None
) -> str:
    """``stream_url`` with a signed, expiring, read-only token in its query, for clients that
    cannot send headers (a browser's EventSource). It opens that one stream and no other."""
    expires = int(time.time()) + state.settings.watch_ttl_seconds
    token = state.signer.issue(WATCH, Claims(channel_id, expires, task_id=task_id))
    return f"{stream_url}?token={token}"


def check_watch(
    state: HubState, token: str, *, channel_id: str | None = None, task_id: str | None = None
) -> None:
    """401 (410 if expired) unless ``token`` is a watch token for exactly this stream."""
    claims = state.signer.verify(WATCH, token)
    if claims.channel_id != channel_id or claims.task_id != task_id:
        what = "channel" if channel_id is not None else "task"
        raise HubError(401, "invalid_token", f"the token is not valid for this {what}")
