"""The bodies of the inbox: channels, their callback URLs, what a callback URL answers and
the ``callback.received`` event it publishes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from hub.shapes import NO_NUL, ChannelId, Count, Ident, Reference, Timestamp, Url, bounded
from hub.webhooks.shapes import Webhook, WebhookUrls

MAX_LABEL = 200
# A channel delivery's public id, which its history, body and redelivery are reached by.
DELIVERY_IDS = Ident("dlv")
DeliveryId = Annotated[str, Meta(pattern=DELIVERY_IDS.pattern)]
# A callback URL's id, which lists it and revokes it.
CALLBACK_URL_IDS = Ident("cbu")
CallbackUrlId = Annotated[str, Meta(pattern=CALLBACK_URL_IDS.pattern)]
# Its range, 1 to the serving hub's HUB_MAX_TTL_SECONDS, is checked with that setting at
# hand (and after the channel a callback URL names is found: an unknown one is a 404
# whatever the ttl), and written into the schema that hub serves.
Ttl = Annotated[int, Meta(description="Seconds to live, at most HUB_MAX_TTL_SECONDS.")]
EventId = Annotated[int, Meta(ge=1)]
ProviderTaskId = Annotated[str, Meta(description="The provider's task id, if the body names one.")]
Headers = Annotated[
    dict[str, str], Meta(description="As received; repeated headers joined with ', '.")
]


# A dotted path into a JSON body ("data.id"): where a channel reads its task id.
TaskIdPath = Annotated[
    str,
    Meta(
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,7}$",
        description="Dotted keys into the JSON body, e.g. data.id.",
    ),
]
Secret = Annotated[str, Meta(min_length=1, max_length=512, pattern=NO_NUL)]
HeaderName = Annotated[
    str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
]


class Verifier(Struct, forbid_unknown_fields=True):
    """Who may post to a channel: deliveries whose signature does not check are refused
    (401 invalid_signature) and stored nowhere."""

    scheme: Literal["standard-webhooks", "github", "stripe", "hmac-sha256"]
    secret: Secret
    # hmac-sha256 only: the header that carries it, how it is written, what precedes it.
    header: HeaderName | None = None
    encoding: Literal["hex", "base64"] | None = None
    prefix: Annotated[str, Meta(max_length=64, pattern=NO_NUL)] | None = None


class VerifierInfo(Struct, forbid_unknown_fields=True):
    """A channel's verifier as it is shown: never its secret, only the last characters."""

    scheme: str
    secret_hint: Annotated[str, Meta(description="The secret's last 4 characters.")]
    header: str | None = None
    encoding: str | None = None
    prefix: str | None = None


class ChannelOptions(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What a channel keeps of its request, as the store holds it (JSON)."""

    dedupe: bool = True
    verify: Verifier | None = None
    task_id_path: str | None = None


class ChannelRequest(Struct, forbid_unknown_fields=True):
    label: Annotated[str, bounded(MAX_LABEL)] | None = None
    ttl_seconds: Ttl | None = None
    webhook_urls: WebhookUrls | None = None
    # False: every delivery is stored, however often the same arrives.
    dedupe: bool = True
    retention_seconds: (
        Annotated[int, Meta(description="Keep deliveries this long, at most HUB_RETENTION.")] | None
    ) = None
    verify: Verifier | None = None
    task_id_path: TaskIdPath | None = None


class Channel(Struct, forbid_unknown_fields=True, kw_only=True):
    """An inbox: a stream for you, and (when made) a callback URL for senders."""

    id: ChannelId
    label: str | None
    stream_url: Url
    # The same stream with a signed, expiring read-only token, for EventSource.
    watch_url: Url
    created_at: Timestamp
    expires_at: Timestamp
    dedupe: bool = True
    retention_seconds: int | None = None
    verify: VerifierInfo | None = None
    task_id_path: str | None = None
    # Open streams on it across every replica (GET /v1/channels/{id} only).
    subscribers: Count | UnsetType = UNSET


class NewChannel(Channel, forbid_unknown_fields=True, kw_only=True):
    callback_url: Url
    webhooks: list[Webhook] | UnsetType = UNSET


class ChannelList(Struct, forbid_unknown_fields=True):
    channels: list[Channel]


class CallbackUrlRequest(Struct, forbid_unknown_fields=True):
    channel_id: Reference
    # As for a channel: a misspelt "ttl" is refused, or the URL would live as its channel.
    ttl_seconds: Ttl | None = None


class CallbackUrl(Struct, forbid_unknown_fields=True, kw_only=True):
    # Absent for URLs issued before they had ids.
    id: CallbackUrlId | UnsetType = UNSET
    channel_id: ChannelId
    callback_url: Url
    expires_at: Timestamp


class CallbackUrlInfo(Struct, forbid_unknown_fields=True):
    """A callback URL issued for a channel, as its list shows it (never the URL itself:
    that is a credential, shown once when made)."""

    id: CallbackUrlId
    created_at: Timestamp
    expires_at: Timestamp
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None
    deliveries: Annotated[int, Meta(ge=0, description="Stored deliveries it received.")]


class CallbackUrlList(Struct, forbid_unknown_fields=True):
    callback_urls: list[CallbackUrlInfo]


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
