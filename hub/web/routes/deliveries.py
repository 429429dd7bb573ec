"""A channel's history: its stored deliveries, newest first, each with its exact body, and
an export of them all (one JSON object a line)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hub.errors import invalid, not_found
from hub.formats import iso, loads
from hub.inbox import redeliver as resend
from hub.inbox.shapes import (
    DELIVERY_IDS,
    DeliveryPage,
    DeliverySummary,
    RedeliverRequest,
    Redelivery,
)
from hub.store.base import DeliveryRecord, EventQuery, Store
from hub.web.query import integer, text
from hub.web.routes.channels import MAX_TASK_ID, owned_channel
from hub.web.routes.common import hub, json_body, json_response
from hub.web.state import HubState

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
EXPORT_PAGE = 100
# A stored body is served as its sender's bytes, never as a page of the hub's origin.
_BODY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox",
    "cache-control": "no-store",
}


async def index(request: Request) -> Response:
    """``GET /v1/channels/{id}/deliveries?limit=&before=&task_id=``."""
    state = hub(request)
    channel = await owned_channel(state, request)
    params = request.query_params
    limit = DEFAULT_LIMIT
    if "limit" in params:
        limit = integer(params["limit"], "limit", 1, MAX_LIMIT)
    ref = text(params["task_id"], "task_id", MAX_TASK_ID) if "task_id" in params else None
    before = None
    if params.get("before"):
        cursor = await _record(state.store, params["before"])
        if cursor is None or cursor.channel_id != channel.id:
            raise invalid("before", "must be the id of one of this channel's deliveries")
        before = cursor.seq
    # One more than asked for says whether there is a next page.
    records = await state.store.list_deliveries(channel.id, limit + 1, before, ref)
    page = [describe(record) for record in records[:limit]]
    next_before = page[-1].id if len(records) > limit else None
    return json_response(DeliveryPage(page, next_before))


async def show(request: Request) -> Response:
    record = await owned_delivery(hub(request), request)
    return json_response(describe(record))


async def body(request: Request) -> Response:
    """The exact bytes received, with the content type they came with."""
    state = hub(request)
    record = await owned_delivery(state, request)
    data = await state.store.delivery_body(record.id)
    if data is None:
        raise not_found("delivery")
    media = record.content_type or "application/octet-stream"
    return Response(data, 200, headers={**_BODY_HEADERS, "content-type": media})


async def redeliver(request: Request) -> Response:
    """``POST /v1/deliveries/{id}/redeliver``: the stored request again, to ``url``; without
    one, its event to the channel's outbound webhooks. Each receiver's status and time."""
    state = hub(request)
    record = await owned_delivery(state, request)
    ask = await json_body(request, RedeliverRequest, optional=True)
    settings = state.settings
    allow = settings.loopback_allowed
    within = settings.webhook_timeout_seconds
    if ask.url is not None:
        url = await resend.checked_target(ask.url, allow_private=allow)
        data = await state.store.delivery_body(record.id)
        if data is None:
            raise not_found("delivery")
        headers = resend.replay_headers(record.headers)
        attempt = await resend.send_request(
            state.client, url, data, headers, within=within, allow_private=allow
        )
        return json_response(Redelivery(record.id, [attempt]))
    endpoints = [
        endpoint
        for endpoint in await state.store.list_endpoints(record.owner)
        if endpoint.channel_id == record.channel_id
    ]
    event = None
    if record.event_id is not None:
        query = EventQuery(channel_id=record.channel_id)
        found = await state.store.events_after(query, record.event_id - 1, 1)
        event = found[0] if found and found[0].id == record.event_id else None
    if event is None:
        raise invalid("url", "this delivery has no event left to send; give a url")
    if not endpoints:
        raise invalid("url", "the channel has no outbound webhooks; give a url")
    attempts = await resend.to_webhooks(
        state.client, endpoints, event, within=within, allow_private=allow
    )
    return json_response(Redelivery(record.id, list(attempts)))


async def export(request: Request) -> Response:
    """Every stored delivery of the channel, newest first, one JSON object a line (with its
    body in base64), streamed a page at a time so an export of any size is bounded."""
    state = hub(request)
    channel = await owned_channel(state, request)
    return StreamingResponse(
        _export_lines(state, channel.id),
        media_type="application/x-ndjson",
        headers={"cache-control": "no-store"},
    )


async def _export_lines(state: HubState, channel_id: str) -> AsyncIterator[bytes]:
    before: int | None = None
    encoder = msgspec.json.Encoder()
    while True:
        records = await state.store.list_deliveries(channel_id, EXPORT_PAGE, before)
        for record in records:
            data = await state.store.delivery_body(record.id)
            if data is None:
                continue  # pruned or erased meanwhile
            line = msgspec.structs.asdict(describe(record))
            line["body_base64"] = base64.b64encode(data).decode()
            yield encoder.encode(line) + b"\n"
        if len(records) < EXPORT_PAGE:
            return
        before = records[-1].seq


async def owned_delivery(state: HubState, request: Request) -> DeliveryRecord:
    owner = state.owner(request)
    record = await _record(state.store, request.path_params["delivery_id"])
    # Another key's delivery is indistinguishable from one that does not exist.
    if record is None or record.owner != owner:
        raise not_found("delivery")
    return record


async def _record(store: Store, delivery_id: str) -> DeliveryRecord | None:
    if not DELIVERY_IDS.matches(delivery_id):
        return None
    return await store.get_delivery(delivery_id)


def describe(record: DeliveryRecord) -> DeliverySummary:
    return DeliverySummary(
        id=record.id,
        channel_id=record.channel_id,
        event_id=record.event_id,
        received_at=iso(record.received_at),
        content_type=record.content_type,
        size=record.size,
        headers=[(name, value) for name, value in loads(record.headers)],
        query=record.query,
        task_id=record.ref,
        verified=record.verified,
    )
