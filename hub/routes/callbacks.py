"""``POST /callbacks/{token}``: the providers' target. The signed token is the credential."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from hub import callbacks
from hub.routes.common import hub, json_response
from hub.signing import CALLBACK


async def receive(request: Request) -> Response:
    state = hub(request)
    token = request.path_params["token"]
    claims = state.signer.verify(CALLBACK, token)
    body = await callbacks.read_body(request, state.settings.max_callback_bytes)
    delivery = callbacks.delivery(
        request, token, claims, body, time.time(), state.settings.max_event_body_bytes
    )
    # Answered only once committed: a 200 means the bytes are on disk.
    event = await state.store.add_delivery(delivery)
    if event is None:
        return json_response({"ok": True, "duplicate": True})
    return json_response({"ok": True, "duplicate": False, "event_id": event.id})
