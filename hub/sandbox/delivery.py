"""Sending callbacks and webhooks: the exact bytes, a bounded number of attempts.

A delivery is built once (body bytes and headers, signature included) and every attempt
sends it unchanged, as the providers do: a receiver that deduplicates byte-identical
deliveries must be able to. Only the host of the target is ever logged, because callback
URLs commonly carry a signed token.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from hub.net import fetch
from hub.sandbox.wire import unix_now

logger = logging.getLogger(__name__)

_MAX_RESPONSE_EXCERPT = 1024
DELIVERY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Attempt:
    at: float
    status_code: int | None = None
    response: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class DeliveryLog:
    """What happened to one delivery; Eachlabs exposes this through its webhooks API."""

    delivery: Delivery
    created_at: float = field(default_factory=unix_now)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return any(attempt.ok for attempt in self.attempts)


def host_of(url: str) -> str:
    return urlsplit(url).hostname or "?"


async def _attempt(
    client: httpx.AsyncClient, delivery: Delivery, guarded: bool, allow_loopback: bool
) -> Attempt:
    attempt = Attempt(at=unix_now())
    headers = {"Content-Type": "application/json", **delivery.headers}
    if guarded:
        # By the hub's outbound rules: every address public (loopback only if allowed),
        # the connection made to the address checked, no redirect followed.
        try:
            attempt.status_code = await fetch.post(
                client,
                delivery.url,
                delivery.body,
                headers,
                within=DELIVERY_TIMEOUT,
                allow_private=allow_loopback,
            )
        except fetch.FetchError as error:
            attempt.error = f"refused or failed: {error}"
        return attempt
    try:
        # Streamed so a receiver's large answer is never read beyond a short excerpt.
        request = client.build_request("POST", delivery.url, content=delivery.body, headers=headers)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            attempt.status_code = response.status_code
            excerpt = b""
            async for chunk in response.aiter_bytes():
                excerpt += chunk
                if len(excerpt) >= _MAX_RESPONSE_EXCERPT:
                    break
            attempt.response = excerpt[:_MAX_RESPONSE_EXCERPT].decode("utf-8", "replace")
        finally:
            await response.aclose()
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        attempt.error = type(error).__name__
    return attempt


async def deliver(
    client: httpx.AsyncClient,
    delivery: Delivery,
    *,
    attempts: int = 1,
    retry_delay: float = 0.0,
    log: DeliveryLog | None = None,
    guarded: bool = False,
    allow_loopback: bool = False,
) -> bool:
    """POST until a 2xx answer or ``attempts`` are spent; True if acknowledged.
    ``guarded``: by the hub's outbound rules (``hub.net.fetch.post``); off only for an
    in-memory test transport, which reaches nothing."""
    record = log if log is not None else DeliveryLog(delivery)
    host = host_of(delivery.url)
    for number in range(1, attempts + 1):
        attempt = await _attempt(client, delivery, guarded, allow_loopback)
        record.attempts.append(attempt)
        if attempt.ok:
            logger.info("callback to %s acknowledged (attempt %d)", host, number)
            return True
        logger.warning(
            "callback to %s not acknowledged (attempt %d/%d): %s",
            host,
            number,
            attempts,
            attempt.status_code if attempt.status_code is not None else attempt.error,
        )
        if number < attempts:
            await asyncio.sleep(retry_delay)
    return False
