"""Outbound webhook endpoints: the URLs a channel's or a task's events are POSTed to, how
they are checked when given, and how an endpoint is shown to its owner."""

from __future__ import annotations

import time

from hub.enums import EndpointStatus
from hub.errors import invalid
from hub.formats import iso
from hub.net.urls import UrlRefused, checked
from hub.shapes import WEBHOOK_IDS
from hub.store.base import Endpoint, Store
from hub.webhooks.shapes import Webhook
from hub.webhooks.signing import new_secret


def checked_url(value: str, field: str, *, allow_private: bool) -> str:
    """A URL the hub may POST to, checked in full now (``hub.net.urls.checked``, the check
    every send repeats): http(s), no credentials, a port from 1 to 65535, and no private
    or loopback address written as its host (loopback only where ``allow_private``). A
    host name is resolved and judged at each send, as it may point elsewhere by then."""
    try:
        checked(value, allow_private=allow_private)
    except UrlRefused as exc:
        raise invalid(field, str(exc)) from None
    return value


def urls(value: list[str] | None, field: str, *, allow_private: bool) -> list[str]:
    """The ``webhook_urls`` of a channel or task being made."""
    return [
        checked_url(item, f"{field}[{i}]", allow_private=allow_private)
        for i, item in enumerate(value or ())
    ]


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
