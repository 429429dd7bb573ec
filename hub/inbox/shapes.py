"""The bodies of the inbox: channels, their callback URLs, what a callback URL answers and
the ``callback.received`` event it publishes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from hub.shapes import ChannelId, Count, Ident, Reference, Timestamp, Url, bounded
from hub.webhooks.shapes import Webhook, WebhookUrls

MAX_LABEL = 200
# A channel delivery's public id, which its history, body and redelivery are reached by.
DELIVERY_IDS = Ident("dlv")
DeliveryId = Annotated[str, Meta(pattern=DELIVERY_IDS.pattern)]
# Its range, 1 to the serving hub's HUB_MAX_TTL_SECONDS, is checked with that setting at
# hand (and after the channel a callback URL names is found: an unknown one is a 404
# whatever the ttl), and written into the schema that hub serves.
Ttl = Annotated[int, Meta(description="Seconds to live, at most HUB_MAX_TTL_SECONDS.")]
EventId = Annotated[int, Meta(ge=1)]
ProviderTaskId = Annotated[str, Meta(description="The provider's task id, if the body names one.")]
Headers = Annotated[
    dict[str, str], Meta(description="As received; repeated headers joined with ', '.")
]


class ChannelRequest(Struct, forbid_unknown_fields=True):
    label: Annotated[str, bounded(MAX_LABEL)] | None = None
    ttl_seconds: Ttl | None = None
    webhook_urls: WebhookUrls | None = None


class Channel(Struct, forbid_unknown_fields=True):
    """An inbox: a stream for you, and (when made) a callback URL for senders."""

    id: ChannelId
    label: str | None
    stream_url: Url
    # The same stream with a signed, expiring read-only token, for EventSource.
    watch_url: Url
    created_at: Timestamp
    expires_at: Timestamp


class NewChannel(Channel, forbid_unknown_fields=True):
    callback_url: Url
    webhooks: list[Webhook] | UnsetType = UNSET


class ChannelList(Struct, forbid_unknown_fields=True):
    channels: list[Channel]


class CallbackUrlRequest(Struct, forbid_unknown_fields=True):
    channel_id: Reference
    # As for a channel: a misspelt "ttl" is refused, or the URL would live as its channel.
    ttl_seconds: Ttl | None = None


class CallbackUrl(Struct, forbid_unknown_fields=True):
    channel_id: ChannelId
    callback_url: Url
    expires_at: Timestamp


class ChannelAck(Struct, forbid_unknown_fields=True):
    """A delivery to a channel, committed; a byte-identical retry is a ``duplicate``."""

    ok: Literal[True]
    duplicate: bool
    event_id: EventId | UnsetType = UNSET


class TaskAck(Struct, forbid_unknown_fields=True):
    """A provider's report on one of the hub's tasks, committed; ``applied`` once."""

    ok: Literal[True]
    applied: bool


class CallbackEvent(Struct, forbid_unknown_fields=True, kw_only=True):
    """What a channel's callback URL received: the data of a callback.received event."""

    channel_id: ChannelId
    # Absent from callbacks stored by hubs before deliveries had public ids.
    delivery_id: DeliveryId | UnsetType = UNSET
    task_id: ProviderTaskId | UnsetType = UNSET
    # Set when the channel's verifier checked the sender's signature.
    verified: Literal[True] | UnsetType = UNSET
    content_type: str
    body: Annotated[Any, Meta(description="Parsed JSON, a form as an object, else text or base64.")]
    body_encoding: Literal["base64"] | UnsetType = UNSET
    # Set when the body was too large to push to subscribers (the store keeps all of it).
    body_truncated: Literal[True] | UnsetType = UNSET
    size: Count
    at: Timestamp
    # Absent from callbacks stored by hubs before they were added.
    headers: Headers | UnsetType = UNSET
    query: dict[str, str | list[str]] | UnsetType = UNSET


class CallbackRecord(CallbackEvent, forbid_unknown_fields=True, kw_only=True):
    """The same, as GET /v1/channels/{id}/tasks/{task_id} answers it: with its event id."""

    event_id: EventId


class DeliverySummary(Struct, forbid_unknown_fields=True, kw_only=True):
    """One stored delivery to a channel's callback URLs, as its history lists it."""

    id: DeliveryId
    channel_id: ChannelId
    # The callback.received event it became (None: it published none).
    event_id: EventId | None
    received_at: Timestamp
    content_type: str
    size: Count
    headers: Annotated[
        list[tuple[str, str]], Meta(description="[name, value] pairs, in the order received.")
    ]
    query: Annotated[str, Meta(description="The raw query string, as sent.")]
    task_id: ProviderTaskId | None
    verified: bool


class DeliveryPage(Struct, forbid_unknown_fields=True):
    """Newest first; pass ``next_before`` as ``before`` for the next page (null: no more)."""

    deliveries: list[DeliverySummary]
    next_before: DeliveryId | None


class RedeliverRequest(Struct, forbid_unknown_fields=True):
    # Left out: the delivery's event goes to the channel's outbound webhooks.
    url: Annotated[str, bounded(2048)] | None = None


class RedeliveryAttempt(Struct, forbid_unknown_fields=True):
    """One POST of a stored delivery: the receiver's status (null if it could not be
    reached, ``error`` says why) and how long it took."""

    url: Url
    status: int | None
    error: str | None
    duration_ms: Annotated[float, Meta(ge=0)]


class Redelivery(Struct, forbid_unknown_fields=True):
    delivery_id: DeliveryId
    attempts: list[RedeliveryAttempt]
