"""Sending a stored delivery again: its request as it came (body bytes, content type and
headers, less those that belong to one hop) to a URL of the caller's choosing, or its event
to the channel's outbound webhooks, under the hub's outbound URL rules (``hub.net``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import httpx

from hub.errors import invalid
from hub.formats import loads
from hub.inbox.shapes import RedeliveryAttempt
from hub.net.fetch import FetchError, check_url, post
from hub.store.base import Endpoint, Event, WebhookJob
from hub.webhooks.dispatcher import payload
from hub.webhooks.signing import sign

# Meaningful for one connection only (RFC 9110 7.6.1), or set by the client for this one:
# never replayed.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
     "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
     "content-length"}
)  # fmt: skip


def replay_headers(stored: bytes) -> dict[str, str]:
    """The stored ``[name, value]`` pairs fit to send again: hop-by-hop ones left out,
    repeated ones joined with ", " (as HTTP allows)."""
    headers: dict[str, str] = {}
    for name, value in loads(stored):
        key = name.lower()
        if key in HOP_BY_HOP:
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def checked_target(url: str, *, allow_private: bool) -> str:
    """The caller's URL, refused (422 naming ``url``) unless the hub may send to it."""
    try:
        await check_url(url, allow_private=allow_private)
    except FetchError as exc:
        raise invalid("url", str(exc)) from None
    return url


async def send_request(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    within: float,
    allow_private: bool,
) -> RedeliveryAttempt:
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        status = await post(client, url, body, headers, within=within, allow_private=allow_private)
    except FetchError as exc:
        error = str(exc)
    return RedeliveryAttempt(
        url=url,
        status=status,
        error=error,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


async def to_webhooks(
    client: httpx.AsyncClient,
    endpoints: Iterable[Endpoint],
    event: Event,
    *,
    within: float,
    allow_private: bool,
) -> Sequence[RedeliveryAttempt]:
    """The delivery's event to each endpoint, signed as the outbox signs it, with the same
    ``webhook-id`` (a receiver that keeps ids sees the same message again)."""
    attempts = []
    for endpoint in endpoints:
        body = payload(WebhookJob(0, 0, endpoint, event))
        message_id = f"evt_{event.id}"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "hub-webhooks",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(endpoint.secret, message_id, timestamp, body),
        }
        attempts.append(
            await send_request(
                client, endpoint.url, body, headers, within=within, allow_private=allow_private
            )
        )
    return attempts
