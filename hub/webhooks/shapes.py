"""The bodies of ``/v1/webhooks``, and the ``webhook_urls`` a channel or task is made with."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from hub.enums import EndpointStatus
from hub.shapes import NO_NUL, Count, Reference, Timestamp, WebhookId

MAX_URL = 2048
MAX_ENDPOINTS = 10  # per channel or task, as named at creation

# Where it points, the scheme and credentials are checked by ``endpoints.checked_url``:
# a name may resolve elsewhere by the time of a send.
WebhookUrl = Annotated[
    str, Meta(max_length=MAX_URL, pattern=NO_NUL, extra_json_schema={"format": "uri"})
]
# Named when a channel or task is made: each becomes a webhook (shown with its secret).
WebhookUrls = Annotated[list[WebhookUrl], Meta(max_length=MAX_ENDPOINTS)]


class WebhookRequest(Struct, forbid_unknown_fields=True):
    """An http(s) URL without credentials, and one of channel_id, task_id."""

    url: WebhookUrl
    channel_id: Reference | None = None
    task_id: Reference | None = None


class Webhook(Struct, forbid_unknown_fields=True):
    """A URL that gets a channel's or a task's events, signed, and how sending goes."""

    id: WebhookId
    url: str
    # Shown to the owner whenever asked, as receivers need it to verify signatures.
    secret: Annotated[str, Meta(description="To verify the signatures.")]
    channel_id: str | None
    task_id: str | None
    status: EndpointStatus
    failures: Count
    last_error: str | None
    last_attempt_at: Timestamp | None
    last_success_at: Timestamp | None
    pending: Count
    created_at: Timestamp


class WebhookList(Struct, forbid_unknown_fields=True):
    webhooks: list[Webhook]
