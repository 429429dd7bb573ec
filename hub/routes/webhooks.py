"""Outbound webhook endpoints: a URL that gets a channel's or a task's events, signed."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from hub import events
from hub.errors import invalid, not_found
from hub.routes.common import hub, json_object, json_response, text
from hub.state import HubState
from hub.store.base import Endpoint
from hub.webhooks import new_secret, status

ENDPOINT_ID = re.compile(r"wh_[0-9a-f]{24}")
MAX_URL = 2048
MAX_ENDPOINTS = 10  # per channel or task, as named at creation


async def create(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    body = await json_object(request)
    unknown = set(body) - {"url", "channel_id", "task_id"}
    if unknown:
        raise invalid(sorted(unknown)[0], "unknown field")
    if "url" not in body:
        raise invalid("url", "is required")
    url = checked_url(body["url"], "url")
    channel_id = task_id = None
    if (body.get("channel_id") is None) == (body.get("task_id") is None):
        raise invalid("channel_id", "give exactly one of channel_id and task_id")
    if body.get("channel_id") is not None:
        channel_id = text(body["channel_id"], "channel_id", 64)
        channel = await state.store.get_channel(channel_id)
        if channel is None or channel.owner != owner:
            raise not_found("channel")
    else:
        task_id = text(body["task_id"], "task_id", 64)
        task = await state.store.get_task(task_id)
        if task is None or task.owner != owner:
            raise not_found("task")
    (endpoint,) = await add(state, owner, [url], channel_id=channel_id, task_id=task_id)
    return json_response(describe(state, endpoint), 201)


async def index(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    endpoints = await state.store.list_endpoints(owner)
    return json_response({"webhooks": [describe(state, e) for e in endpoints]})


async def show(request: Request) -> Response:
    state = hub(request)
    return json_response(describe(state, await _owned(state, request)))


async def delete(request: Request) -> Response:
    state = hub(request)
    endpoint = await _owned(state, request)
    await state.store.delete_endpoint(endpoint.id)
    return Response(status_code=204)


def checked_url(value: Any, field: str) -> str:
    """An http(s) URL without credentials. Where it points is checked at each send (a
    name may resolve elsewhere later), so a private address is refused then, not here."""
    url = text(value, field, MAX_URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(field, "must be an http(s) URL")
    if parts.username or parts.password:
        raise invalid(field, "must not carry credentials")
    return url


def urls(value: Any, field: str) -> list[str]:
    """The ``webhook_urls`` field of a channel or task being made."""
    if not isinstance(value, list):
        raise invalid(field, "must be a list of URLs")
    if len(value) > MAX_ENDPOINTS:
        raise invalid(field, f"at most {MAX_ENDPOINTS} URLs")
    return [checked_url(item, f"{field}[{i}]") for i, item in enumerate(value)]


async def add(
    state: HubState,
    owner: str,
    urls: list[str],
    *,
    channel_id: str | None = None,
    task_id: str | None = None,
    format: str = "standard",
) -> list[Endpoint]:
    added = []
    for url in urls:
        endpoint = Endpoint(
            id="wh_" + secrets.token_hex(12),
            owner=owner,
            url=url,
            secret=new_secret(),
            channel_id=channel_id,
            task_id=task_id,
            created_at=time.time(),
            format=format,
        )
        added.append(await state.store.add_endpoint(endpoint))
    return added


def describe(state: HubState, endpoint: Endpoint) -> dict[str, Any]:
    def at(value: float | None) -> str | None:
        return events.iso(value) if value is not None else None

    return {
        "id": endpoint.id,
        "url": endpoint.url,
        # Shown to the owner whenever asked, as receivers need it to verify signatures.
        "secret": endpoint.secret,
        "channel_id": endpoint.channel_id,
        "task_id": endpoint.task_id,
        "status": status(endpoint, state.settings.webhook_failing_after),
        "failures": endpoint.failures,
        "last_error": endpoint.last_error,
        "last_attempt_at": at(endpoint.last_attempt_at),
        "last_success_at": at(endpoint.last_success_at),
        "pending": endpoint.pending,
        "created_at": events.iso(endpoint.created_at),
    }


async def _owned(state: HubState, request: Request) -> Endpoint:
    owner = state.owner(request)
    endpoint_id = request.path_params["webhook_id"]
    endpoint = None
    if ENDPOINT_ID.fullmatch(endpoint_id):
        endpoint = await state.store.get_endpoint(endpoint_id)
    if endpoint is None or endpoint.owner != owner:
        raise not_found("webhook")
    return endpoint
