"""Channels: an inbox with signed callback URLs, its SSE stream, and lookup by task id."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from hub.access.tokens import CALLBACK, Claims
from hub.enums import EventType
from hub.errors import Gone, Unauthorized, invalid, not_found
from hub.formats import iso, loads
from hub.inbox.shapes import (
    CallbackUrl,
    CallbackUrlRequest,
    ChannelList,
    ChannelRequest,
    NewChannel,
)
from hub.inbox.shapes import Channel as ChannelShape
from hub.shapes import CHANNEL_IDS, given
from hub.store.base import Channel, Event, EventQuery
from hub.streams import smee
from hub.streams.broker import SubscriptionClosed
from hub.streams.sse import EventStream
from hub.streams.watch import check_watch, watch_url
from hub.web.query import MAX_INT, integer, text
from hub.web.routes import webhooks
from hub.web.routes.common import hub, json_body, json_response
from hub.web.state import HubState
from hub.webhooks import endpoints

MAX_TYPES = 32
MAX_TASK_ID = 200
LIST_LIMIT = 100


async def create(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    body = await json_body(request, ChannelRequest, optional=True)
    hook_urls = endpoints.urls(
        body.webhook_urls, "webhook_urls", allow_private=state.settings.loopback_allowed
    )
    ttl = state.settings.channel_ttl_seconds
    if body.ttl_seconds is not None:
        ttl = _ttl(state, body.ttl_seconds)
    await state.quotas.check(owner, channels=1, webhooks=len(hook_urls))
    now = time.time()
    channel = Channel(
        id=CHANNEL_IDS.new(),
        owner=owner,
        label=body.label,
        created_at=now,
        expires_at=int(now) + ttl,
    )
    await state.store.create_channel(channel)
    added = await endpoints.add(state.store, owner, hook_urls, channel_id=channel.id)
    made = NewChannel(
        **msgspec.structs.asdict(_describe(state, channel)),
        callback_url=_callback_url(state, channel, channel.expires_at),
        webhooks=given([webhooks.describe(state, endpoint) for endpoint in added] or None),
    )
    return json_response(made, 201)


async def index(request: Request) -> Response:
    """The key's newest channels, newest first (for the dashboard and the CLI)."""
    state = hub(request)
    owner = state.owner(request)
    channels = await state.store.list_channels(owner, LIST_LIMIT)
    return json_response(ChannelList([_describe(state, channel) for channel in channels]))


async def show(request: Request) -> Response:
    state = hub(request)
    channel = await _owned_channel(state, request)
    return json_response(_describe(state, channel))


async def create_callback_url(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    body = await json_body(request, CallbackUrlRequest)
    channel = await _channel_of(state, owner, body.channel_id)
    now = int(time.time())
    if channel.expires_at <= now:
        raise Gone("channel_expired", "the channel has expired")
    expires_at = channel.expires_at
    if body.ttl_seconds is not None:
        # A URL never outlives its channel.
        expires_at = min(expires_at, now + _ttl(state, body.ttl_seconds))
    answer = CallbackUrl(
        channel_id=channel.id,
        callback_url=_callback_url(state, channel, expires_at),
        expires_at=iso(expires_at),
    )
    return json_response(answer, 201)


async def stream(request: Request) -> Response:
    state = hub(request)
    channel_id = request.path_params["channel_id"]
    token = request.query_params.get("token")
    if token is not None:
        check_watch(state.signer, token, channel_id=channel_id)
        if not CHANNEL_IDS.matches(channel_id):
            raise Unauthorized("invalid_token", "the token is not valid for this channel")
        channel = await state.store.get_channel(channel_id)
        if channel is None:
            raise not_found("channel")
        if channel.owner in state.keys.revoked:
            raise Unauthorized("revoked", "the key this watch URL was issued to is revoked")
    else:
        channel = await _owned_channel(state, request)
    query = EventQuery(
        channel_id=channel.id,
        ref=_optional_text(request, "task_id", MAX_TASK_ID),
        types=_types(request),
    )
    render = None
    wire = request.query_params.get("format")
    if wire is not None:
        if wire != smee.FORMAT:
            raise invalid("format", f"must be {smee.FORMAT} (or left out)")
        # smee's format has callbacks only: the stream asks for nothing else.
        query = dataclasses.replace(query, types=frozenset([EventType.CALLBACK_RECEIVED]))
        render = smee.frame
    state.quotas.check_streams(channel.owner)
    return EventStream(
        state.store, state.broker, state.streams, query, last_event_id(request),
        render=render, owner=channel.owner,
    )  # fmt: skip


async def task_result(request: Request) -> Response:
    """The latest callback about a provider task id, waiting up to ``wait`` seconds for it."""
    state = hub(request)
    channel = await _owned_channel(state, request)
    task_id = text(request.path_params["task_id"], "task_id", MAX_TASK_ID)
    wait = 0
    if "wait" in request.query_params:
        wait = integer(request.query_params["wait"], "wait", 0, state.settings.max_wait_seconds)
    query = EventQuery(
        channel_id=channel.id, ref=task_id, types=frozenset([EventType.CALLBACK_RECEIVED])
    )
    # Subscribe before looking in the store, so a callback landing in between is not missed.
    async with state.broker.subscribe(query, maxsize=1) as subscription:
        event = await state.store.latest_event(query)
        if event is None and wait > 0 and not state.shutting_down:
            try:
                if await subscription.wait(wait):
                    event = subscription.drain()[-1]
            except SubscriptionClosed:  # shutdown, or a burst overflowed its one slot
                event = await state.store.latest_event(query)
    if event is None:
        raise not_found("callback for this task_id")
    return json_response(_callback_record(event))


def last_event_id(connection: HTTPConnection) -> int | None:
    """``Last-Event-ID`` (what a reconnecting EventSource sends) or ``?last_event_id=``."""
    raw = connection.headers.get("last-event-id")
    field = "Last-Event-ID"
    if raw is None:
        raw = connection.query_params.get("last_event_id")
        field = "last_event_id"
    if raw is None or raw.strip() == "":
        return None
    return integer(raw, field, 0, MAX_INT)


def _types(request: Request) -> frozenset[str] | None:
    raw = _optional_text(request, "types", MAX_TYPES * 64)
    if raw is None:
        return None
    types = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not types or len(types) > MAX_TYPES:
        raise invalid("types", f"must name 1 to {MAX_TYPES} event types")
    return types


def _optional_text(request: Request, name: str, max_length: int) -> str | None:
    value = request.query_params.get(name)
    return None if value is None else text(value, name, max_length)


def _callback_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {"event_id": event.id}
    record.update(loads(event.data))
    return record


def _ttl(state: HubState, ttl: int) -> int:
    """Within this hub's setting (the shape says only that it is an integer)."""
    if not 1 <= ttl <= state.settings.max_ttl_seconds:
        raise invalid("ttl_seconds", f"must be between 1 and {state.settings.max_ttl_seconds}")
    return ttl


async def _owned_channel(state: HubState, request: Request) -> Channel:
    owner = state.owner(request)
    return await _channel_of(state, owner, request.path_params["channel_id"])


async def _channel_of(state: HubState, owner: str, channel_id: str) -> Channel:
    # Another key's channel is indistinguishable from one that does not exist.
    channel = await state.store.get_channel(channel_id) if CHANNEL_IDS.matches(channel_id) else None
    if channel is None or channel.owner != owner:
        raise not_found("channel")
    return channel


def _callback_url(state: HubState, channel: Channel, expires_at: int) -> str:
    token = state.signer.issue(CALLBACK, Claims(channel.id, expires_at))
    return f"{state.settings.public_url}/callbacks/{token}"


def _describe(state: HubState, channel: Channel) -> ChannelShape:
    stream_url = f"{state.settings.public_url}/v1/channels/{channel.id}/events"
    return ChannelShape(
        id=channel.id,
        label=channel.label,
        stream_url=stream_url,
        watch_url=watch_url(
            state.signer, stream_url, state.settings.watch_ttl_seconds, channel_id=channel.id
        ),
        created_at=iso(channel.created_at),
        expires_at=iso(channel.expires_at),
    )
