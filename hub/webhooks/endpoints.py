"""Outbound webhook endpoints: the URLs a channel's or a task's events are POSTed to, how
they are checked when given, and how an endpoint is shown to its owner."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from hub.enums import EndpointStatus
from hub.errors import invalid
from hub.formats import iso
from hub.shapes import WEBHOOK_IDS
from hub.store.base import Endpoint, Store
from hub.webhooks.shapes import Webhook
from hub.webhooks.signing import new_secret


def checked_url(value: str, field: str) -> str:
    """An http(s) URL without credentials (its length and characters are the shape's,
    ``WebhookUrl``). Where it points is checked at each send (a name may resolve
    elsewhere later), so a private address is refused then, not here."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # a broken [IPv6] host: urlsplit refuses it outright
        raise invalid(field, "must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise invalid(field, "must be an http(s) URL")
    if parts.username or parts.password:
        raise invalid(field, "must not carry credentials")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError:
        raise invalid(field, "has an invalid port (1 to 65535)") from None
    if any(ch.isspace() for ch in value):
        raise invalid(field, "must not contain spaces")
    return value


def urls(value: list[str] | None, field: str) -> list[str]:
    """The ``webhook_urls`` of a channel or task being made."""
    return [checked_url(item, f"{field}[{i}]") for i, item in enumerate(value or ())]


async def add(
    store: Store,
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
            id=WEBHOOK_IDS.new(),
            owner=owner,
            url=url,
            secret=new_secret(),
            channel_id=channel_id,
            task_id=task_id,
            created_at=time.time(),
            format=format,
        )
        added.append(await store.add_endpoint(endpoint))
    return added


def status(endpoint: Endpoint, failing_after: int) -> EndpointStatus:
    return EndpointStatus.FAILING if endpoint.failures >= failing_after else EndpointStatus.OK


def describe(endpoint: Endpoint, failing_after: int) -> Webhook:
    def at(value: float | None) -> str | None:
        return iso(value) if value is not None else None

    return Webhook(
        id=endpoint.id,
        url=endpoint.url,
        secret=endpoint.secret,
        channel_id=endpoint.channel_id,
        task_id=endpoint.task_id,
        status=status(endpoint, failing_after),
        failures=endpoint.failures,
        last_error=endpoint.last_error,
        last_attempt_at=at(endpoint.last_attempt_at),
        last_success_at=at(endpoint.last_success_at),
        pending=endpoint.pending,
        created_at=iso(endpoint.created_at),
    )
