"""Outbound webhook endpoints: the URLs a channel's or a task's events are POSTed to, how
they are checked when given, and how an endpoint is shown to its owner."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from hub.enums import EndpointStatus
from hub.errors import invalid
from hub.formats import iso
from hub.store.base import Endpoint, Store
from hub.webhooks.signing import new_secret

MAX_URL = 2048
MAX_ENDPOINTS = 10  # per channel or task, as named at creation


def checked_url(value: Any, field: str) -> str:
    """An http(s) URL without credentials. Where it points is checked at each send (a
    name may resolve elsewhere later), so a private address is refused then, not here."""
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > MAX_URL or "\0" in value:
        raise invalid(field, f"must be at most {MAX_URL} characters, without NUL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
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


def urls(value: Any, field: str) -> list[str]:
    """The ``webhook_urls`` field of a channel or task being made."""
    if not isinstance(value, list):
        raise invalid(field, "must be a list of URLs")
    if len(value) > MAX_ENDPOINTS:
        raise invalid(field, f"at most {MAX_ENDPOINTS} URLs")
    return [checked_url(item, f"{field}[{i}]") for i, item in enumerate(value)]


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
            id="wh_" + secrets.token_hex(12),
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


def describe(endpoint: Endpoint, failing_after: int) -> dict[str, Any]:
    def at(value: float | None) -> str | None:
        return iso(value) if value is not None else None

    return {
        "id": endpoint.id,
        "url": endpoint.url,
        # Shown to the owner whenever asked, as receivers need it to verify signatures.
        "secret": endpoint.secret,
        "channel_id": endpoint.channel_id,
        "task_id": endpoint.task_id,
        "status": status(endpoint, failing_after),
        "failures": endpoint.failures,
        "last_error": endpoint.last_error,
        "last_attempt_at": at(endpoint.last_attempt_at),
        "last_success_at": at(endpoint.last_success_at),
        "pending": endpoint.pending,
        "created_at": iso(endpoint.created_at),
    }
