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
from hub.inbox import lookup, verify
from hub.inbox.shapes import (
    CALLBACK_URL_IDS,
    CallbackUrl,
    CallbackUrlInfo,
    CallbackUrlList,
    CallbackUrlRequest,
    ChannelList,
    ChannelOptions,
    ChannelRequest,
    NewChannel,
)
from hub.inbox.shapes import Channel as ChannelShape
from hub.shapes import CHANNEL_IDS, given
from hub.store.base import CallbackUrlRecord, Channel, Event, EventQuery
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
    retention = None
    if body.retention_seconds is not None:
        retention = body.retention_seconds
        if not 1 <= retention <= state.settings.retention_seconds:
            raise invalid(
                "retention_seconds",
                f"must be between 1 and HUB_RETENTION ({state.settings.retention_seconds})",
            )
    options = ChannelOptions(
        dedupe=body.dedupe,
        verify=None if body.verify is None else verify.checked(body.verify),
        task_id_path=body.task_id_path,
    )
    await state.quotas.check(owner, channels=1, webhooks=len(hook_urls))
    now = time.time()
    channel = Channel(
        id=CHANNEL_IDS.new(),
        owner=owner,
        label=body.label,
        created_at=now,
        expires_at=int(now) + ttl,
        retention_seconds=retention,
        options=msgspec.json.encode(options),
    )
    await state.store.create_channel(channel)
    added = await endpoints.add(state.store, owner, hook_urls, channel_id=channel.id)
    _, callback_url = await _new_callback_url(state, channel, channel.expires_at)
    made = NewChannel(
        **msgspec.structs.asdict(_describe(state, channel)),
        callback_url=callback_url,
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
    channel = await owned_channel(state, request)
    described = _describe(state, channel)
    described.subscribers = await state.presence.subscribers(channel.id)
    return json_response(described)


async def delete(request: Request) -> Response:
    """Erase the channel: its deliveries, events and URLs go, its streams end, and its
    URLs answer 410 from then on."""
    state = hub(request)
    channel = await owned_channel(state, request)
    await state.store.delete_channel(channel.id)
    return Response(status_code=204)


async def list_callback_urls(request: Request) -> Response:
    state = hub(request)
    channel = await owned_channel(state, request)
    records = await state.store.list_callback_urls(channel.id)
    return json_response(CallbackUrlList([_url_info(record) for record in records]))


async def revoke_callback_url(request: Request) -> Response:
    """From now on the URL answers 401 revoked, on every replica; the channel's other URLs
    keep working."""
    state = hub(request)
    owner = state.owner(request)
    url_id = request.path_params["url_id"]
    record = (
        await state.store.get_callback_url(url_id) if CALLBACK_URL_IDS.matches(url_id) else None
    )
    if record is not None:
        channel = await state.store.get_channel(record.channel_id)
        if channel is None or channel.owner != owner:
            record = None
    if record is None:
        raise not_found("callback URL")
    await state.store.revoke_callback_url(url_id, time.time())
    return Response(status_code=204)


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
    url_id, callback_url = await _new_callback_url(state, channel, expires_at)
    answer = CallbackUrl(
        id=url_id, channel_id=channel.id, callback_url=callback_url, expires_at=iso(expires_at)
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
        channel = await owned_channel(state, request)
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
    channel = await owned_channel(state, request)
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


async def owned_channel(state: HubState, request: Request) -> Channel:
    """The path's channel, if the request's key owns it (else 404)."""
    owner = state.owner(request)
    return await _channel_of(state, owner, request.path_params["channel_id"])


async def _channel_of(state: HubState, owner: str, channel_id: str) -> Channel:
    # Another key's channel is indistinguishable from one that does not exist.
    channel = await state.store.get_channel(channel_id) if CHANNEL_IDS.matches(channel_id) else None
    if channel is None or channel.owner != owner:
        raise not_found("channel")
    return channel


async def _new_callback_url(state: HubState, channel: Channel, expires_at: int) -> tuple[str, str]:
    """A callback URL with an id, kept so that it can be listed and revoked."""
    record = CallbackUrlRecord(CALLBACK_URL_IDS.new(), channel.id, time.time(), expires_at)
    await state.store.add_callback_url(record)
    token = state.signer.issue(CALLBACK, Claims(channel.id, expires_at, url_id=record.id))
    return record.id, f"{state.settings.public_url}/callbacks/{token}"


def _url_info(record: CallbackUrlRecord) -> CallbackUrlInfo:
    return CallbackUrlInfo(
        id=record.id,
        created_at=iso(record.created_at),
        expires_at=iso(record.expires_at),
        revoked_at=None if record.revoked_at is None else iso(record.revoked_at),
        last_used_at=None if record.last_used_at is None else iso(record.last_used_at),
        deliveries=record.deliveries,
    )


def _describe(state: HubState, channel: Channel) -> ChannelShape:
    stream_url = f"{state.settings.public_url}/v1/channels/{channel.id}/events"
    options = lookup.options(channel)
    return ChannelShape(
        id=channel.id,
        label=channel.label,
        stream_url=stream_url,
        watch_url=watch_url(
            state.signer, stream_url, state.settings.watch_ttl_seconds, channel_id=channel.id
        ),
        created_at=iso(channel.created_at),
        expires_at=iso(channel.expires_at),
        dedupe=options.dedupe,
        retention_seconds=channel.retention_seconds,
        verify=None if options.verify is None else verify.describe(options.verify),
        task_id_path=options.task_id_path,
    )
