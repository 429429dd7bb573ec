"""What the rest of the hub needs from a store, and the records it passes in and out."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from hub.enums import TERMINAL, TaskStatus
from hub.errors import PaymentRequired, Unavailable


class StoreUnavailable(Unavailable):
    """The store cannot take or answer this now; the caller should retry later (503)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retry_after=5.0)


class Event:
    """A stored event: its id (the order of commits), type and encoded JSON data, and what
    it belongs to. ``frame`` is its wire form, filled in by the streams once, when first
    sent, and shared by every subscriber."""

    __slots__ = ("channel_id", "created_at", "data", "frame", "id", "ref", "task_id", "type")

    def __init__(
        self,
        id: int,
        type: str,
        data: bytes,
        *,
        channel_id: str | None = None,
        task_id: str | None = None,
        ref: str | None = None,
        created_at: float | None = None,
    ) -> None:
        self.id = id
        self.type = type
        # The event's JSON payload, already encoded.
        self.data = data
        self.channel_id = channel_id
        # The hub task this event belongs to; only the task engine sets it.
        self.task_id = task_id
        # The correlation id a channel stream filters on with ``?task_id=``: a provider's
        # task id found in a callback, or the hub task id for task events.
        self.ref = ref
        self.created_at = time.time() if created_at is None else created_at
        self.frame: bytes | None = None

    def __repr__(self) -> str:
        return f"Event(id={self.id}, type={self.type!r}, channel_id={self.channel_id!r})"


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    owner: str
    label: str | None
    created_at: float
    expires_at: int
    # Its own retention, shorter than HUB_RETENTION; None keeps the hub's.
    retention_seconds: int | None = None
    # JSON: the inbox's options (dedupe, verify, task_id_path), read by hub.inbox.
    options: bytes = b"{}"

    def __post_init__(self) -> None:
        # SQLite hands a column default back as text.
        if not isinstance(self.options, bytes):
            value = self.options
            object.__setattr__(
                self, "options", value.encode() if isinstance(value, str) else bytes(value)
            )


# Events that tell every replica of a change to the inbox (no channel or task carries
# them, so no stream and no webhook is sent them): a channel erased, a URL revoked.
CHANNEL_DELETED = "channel.deleted"
CALLBACK_URL_REVOKED = "callback_url.revoked"


@dataclass(frozen=True, slots=True)
class CallbackUrlRecord:
    """A callback URL issued for a channel: kept so it can be listed and revoked (its
    token carries the id, never the other way round)."""

    id: str
    channel_id: str
    created_at: float
    expires_at: int
    revoked_at: float | None = None
    deliveries: int = 0  # stored deliveries that came to it
    last_used_at: float | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A callback exactly as it arrived, and the event it becomes once stored."""

    channel_id: str | None
    # Which URL it came to (Claims.digest of its verified token): the same URL, whatever
    # spelling of its token, without keeping the credential itself.
    token_hash: bytes
    body_sha256: bytes
    content_type: str
    headers: bytes  # JSON list of [name, value] pairs, as received
    body: bytes
    received_at: float
    task_id: str | None
    ref: str | None
    # The callback.received event's payload; None keeps the delivery without publishing
    # (a task's provider callback, which the task's own events report).
    event_data: bytes | None
    # A channel delivery's public id (``dlv_...``), which its history is read by; None for
    # a task's provider callback, which is in no channel's history.
    public_id: str | None = None
    query: str = ""  # the raw query string, as sent
    verified: bool = False  # the channel's verifier checked the sender's signature
    url_id: str | None = None  # the callback URL it came to, where the URL has an id
    # Windowed dedupe of a channel delivery: a key accepted on the channel before and
    # valid until after this one's arrival makes it a duplicate. None: always stored
    # (a channel with dedupe off; a task's callback, which is once per URL and bytes).
    dedupe_key: bytes | None = None
    dedupe_until: float = 0.0
    # The body kept once (hub.store.event_bodies): the event's row holds ``event_stub``,
    # event_data with ``null`` at ``event_body_at`` where the body goes, put back from the
    # delivery's bytes by ``event_body_form`` when read. None: event_data is kept whole.
    event_stub: bytes | None = None
    event_body_at: int | None = None
    event_body_form: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A stored channel delivery as its history shows it; the body is read apart."""

    id: str  # the public id
    seq: int  # the store's order: newest has the highest
    channel_id: str
    owner: str
    event_id: int | None
    received_at: float
    content_type: str
    size: int
    headers: bytes  # JSON list of [name, value] pairs, as received
    query: str
    ref: str | None
    verified: bool
    url_id: str | None

    def __post_init__(self) -> None:
        # SQLite hands the flag back as an integer.
        object.__setattr__(self, "verified", bool(self.verified))


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events a stream wants: one channel or one task, optionally narrowed."""

    channel_id: str | None = None
    task_id: str | None = None
    ref: str | None = None
    types: frozenset[str] | None = None

    def matches(self, event: Event) -> bool:
        if self.channel_id is not None and event.channel_id != self.channel_id:
            return False
        if self.task_id is not None and event.task_id != self.task_id:
            return False
        if self.ref is not None and event.ref != self.ref:
            return False
        return self.types is None or event.type in self.types


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    async def create_channel(self, channel: Channel) -> None: ...

    async def get_channel(self, channel_id: str) -> Channel | None: ...

    async def list_channels(self, owner: str, limit: int) -> list[Channel]:
        """The owner's newest ``limit`` channels, newest first."""

    async def list_tasks(self, owner: str, limit: int) -> list[TaskRecord]:
        """The owner's newest ``limit`` tasks, newest first."""

    async def task_counts(self) -> dict[tuple[str, str], int]:
        """How many tasks there are, by (provider, status)."""

    async def add_delivery(self, delivery: Delivery) -> Event | None:
        """Store the delivery and its event in one transaction; return the event once
        committed, or None if the same bytes were already accepted on the same URL."""

    async def list_deliveries(
        self, channel_id: str, limit: int, before: int | None = None, ref: str | None = None
    ) -> list[DeliveryRecord]:
        """The channel's deliveries, newest first: ``limit`` of them with ``seq`` below
        ``before``, about provider task ``ref`` if given."""

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        """A channel delivery by its public id (None if its channel is gone)."""

    async def delivery_body(self, delivery_id: str) -> bytes | None: ...

    async def delete_channel(self, channel_id: str) -> bool:
        """Erase the channel and everything it holds (deliveries, events, dedupe keys,
        callback URLs, webhooks); publish CHANNEL_DELETED. False if there was none."""

    async def add_callback_url(self, record: CallbackUrlRecord) -> None: ...

    async def get_callback_url(self, url_id: str) -> CallbackUrlRecord | None: ...

    async def list_callback_urls(self, channel_id: str) -> list[CallbackUrlRecord]:
        """Oldest first, each with its stored deliveries' count and newest time."""

    async def revoke_callback_url(self, url_id: str, at: float) -> bool:
        """Revoke it and publish CALLBACK_URL_REVOKED; False if it was not live."""

    async def prune_channels(self, now: float) -> int:
        """Apply channels' own retention; return how many events went."""

    async def set_presence(self, replica: str, counts: Mapping[str, int], now: float) -> None:
        """This replica's open streams per channel, as of ``now`` (others' rows stay)."""

    async def subscribers(self, channel_id: str, since: float, skip: str) -> int:
        """Open streams on the channel reported by replicas other than ``skip`` since."""

    async def events_after(self, query: EventQuery, after: int, limit: int) -> Sequence[Event]:
        """Events matching ``query`` with id > ``after``, in id order."""

    async def latest_event(self, query: EventQuery) -> Event | None: ...

    async def pruned_through(self, query: EventQuery) -> int:
        """The highest event id of this stream that retention has deleted (0 if none)."""

    async def prune(self, before: float) -> int:
        """Delete events, deliveries and blobs older than ``before``; return how many
        events went."""

    # -- tasks and blobs -------------------------------------------------------------------

    async def create_task(
        self,
        task: TaskRecord,
        event: NewEvent,
        claim: IdempotencyClaim | None = None,
        charge: Charge | None = None,
    ) -> Event:
        """Write the task and its event. With ``claim``, in the same transaction, bind the
        claimed idempotency key to the task, or raise ``Conflict`` and write nothing if the
        claim is no longer held (another request took the key over). With ``charge``, its
        estimate too, reserved against its key's month in the same transaction
        (BudgetExceeded if it does not fit: then nothing is written)."""

    # -- what tasks cost (hub.store.costs) -------------------------------------------------

    async def task_costs(self, task_ids: Sequence[str]) -> dict[str, TaskCost]: ...

    async def spend(self, owner: str, since: float, until: float) -> list[SpendRow]:
        """The key's tasks made in [since, until), by day and provider."""

    async def spent(self, owner: str, since: float) -> int:
        """Micro-dollars billed or reserved by the key's tasks made since ``since``."""

    async def budget(self, owner: str) -> int | None:
        """The key's own monthly budget in micro-dollars, if it has one."""

    async def set_budget(self, key_id: str, micros: int | None) -> bool:
        """Set (None: clear) a made key's monthly budget; False if there is no such key."""

    async def spend_totals(self) -> dict[str, int]:
        """Micro-dollars billed, by provider, over every task kept."""

    async def get_task(self, task_id: str) -> TaskRecord | None: ...

    async def update_task(
        self,
        task_id: str,
        expect: frozenset[str],
        changes: Mapping[str, object],
        events: Sequence[NewEvent] = (),
        blobs: Sequence[Blob] = (),
        delivery: Delivery | None = None,
    ) -> list[Event] | None:
        """Apply ``changes`` if the task's status is one of ``expect``; write ``events``
        and ``blobs`` (and the callback ``delivery`` that caused it) in the same transaction.
        None if the status did not match, or the delivery is a byte-identical retry: a
        transition happens once however many callers race for it."""

    async def claim_tasks(self, now: float, lease: float, limit: int) -> list[TaskRecord]:
        """Up to ``limit`` tasks due at ``now``, each leased for ``lease`` seconds so no
        other worker takes it meanwhile."""

    async def release_leases(self, task_ids: Collection[str] | None = None) -> None:
        """Forget the leases on ``task_ids`` (work this worker stopped), or with None every
        lease a restarted worker may have left (SQLite: one process owns the store)."""

    async def next_due(self) -> float | None: ...

    async def renew_leases(self, task_ids: Collection[str], now: float, until: float) -> int:
        """Extend to ``until`` the leases on ``task_ids`` that are still held at ``now``
        (a lease that ran out may be another worker's by now: never taken back)."""

    async def take_slot(
        self,
        task_id: str,
        limits: CallLimits,
        now: float | None,
        changes: Mapping[str, object],
    ) -> Slot:
        """Atomically, across every replica on this store: if the queued task is not being
        sent already, its provider has fewer than ``limits.concurrency`` jobs unfinished
        (tasks being sent or submitted without a result) and fewer than
        ``limits.per_window`` submits in the last ``limits.window`` seconds, count this one
        and apply ``changes`` (the sending marker) to the task. ``now`` None: the clock as
        read once the provider's count is this caller's (not before waiting for it), so the
        call is counted at the moment it leaves."""

    async def put_blob(self, blob: Blob) -> None: ...

    async def usage(self, owner: str, now: float) -> Usage:
        """What ``owner`` holds now, for its quotas."""

    async def get_blob(self, blob_id: str) -> Blob | None: ...

    # -- API keys made with `hub keys create` ----------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None: ...

    async def api_key_owner(self, key_hash: bytes) -> str | None:
        """The tenant of the unrevoked key with this hash, or None."""

    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """Revoke the key; False if there is no such unrevoked key."""

    # -- outbound webhooks -----------------------------------------------------------------

    async def add_events(self, events: Sequence[NewEvent]) -> list[Event]:
        """Write events that no other change carries (a webhook endpoint failing)."""

    async def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        """Keep the endpoint; it gets the events stored after this call (the returned
        record's ``after_event_id`` says from where)."""

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None: ...

    async def list_endpoints(self, owner: str) -> list[Endpoint]: ...

    async def delete_endpoint(self, endpoint_id: str) -> bool: ...

    async def enqueue_webhooks(self, now: float, limit: int) -> bool:
        """Put the next ``limit`` events past the outbox's cursor into the outbox, once for
        each endpoint that wants them, and move the cursor. True if more events wait."""

    async def claim_webhooks(self, now: float, lease: float, limit: int) -> list[WebhookJob]:
        """Up to ``limit`` outbox entries due at ``now``, each leased for ``lease`` s."""

    async def settle_webhook(
        self, job: WebhookJob, at: float, error: str | None, retry_at: float | None
    ) -> int:
        """Record an attempt: delivered if ``error`` is None, else failed and tried again
        at ``retry_at`` (None: given up). Returns the endpoint's failures in a row."""

    # -- idempotency keys ------------------------------------------------------------------

    async def reserve_idempotency(
        self, new: IdempotencyRecord, now: float, expired_before: float
    ) -> IdempotencyRecord:
        """Atomically, across replicas: keep ``new`` if its (owner, key) has no record, or
        only one created before ``expired_before``, or a reservation whose lease ran out
        with no task made; return the record that holds the key now (``new`` if taken)."""

    async def finish_idempotency(
        self, owner: str, key: str, task_id: str, status: int, body: bytes
    ) -> None:
        """Keep the answer given for the key's task (once: the first answer stays)."""

    async def release_idempotency(self, claim: IdempotencyClaim) -> None:
        """Forget a reservation that made no task (the request was refused)."""

    async def prune_idempotency(self, before: float) -> int:
        """Delete the records created before ``before``; return how many went."""

    async def renew_webhook_leases(self, leases: Mapping[int, float], until: float) -> set[int]:
        """Extend to ``until`` the lease of each outbox entry in ``leases`` (id: the lease
        this caller holds) that still holds exactly that lease: the ids renewed. An entry
        settled, or taken over after its lease ran out, is left alone."""


# Events about webhooks themselves (an endpoint failing) go to streams, never to webhooks:
# a failing endpoint would otherwise be sent news of its own failure. A LIKE pattern.
WEBHOOK_EVENTS = "webhook.%"


@dataclass(frozen=True, slots=True)
class Charge:
    """A new task's estimate, reserved against its key's month from ``month_start``.
    ``default_budget``: the budget when the key has none of its own (HUB_BUDGET_USD for
    the keys in HUB_API_KEYS); None for no budget."""

    estimated_micros: int
    month_start: float
    default_budget: int | None = None


@dataclass(frozen=True, slots=True)
class TaskCost:
    estimated_micros: int
    billed_micros: int | None  # None while the task runs (its estimate is reserved)


@dataclass(frozen=True, slots=True)
class SpendRow:
    day: int  # days since the epoch, UTC
    provider: str
    tasks: int
    billed_micros: int  # tasks ended
    reserved_micros: int  # tasks still running, at their estimate


class BudgetExceeded(PaymentRequired):
    """The task's estimate would take its key over this month's budget (402)."""

    def __init__(self, budget: int, spent: int, estimate: int) -> None:
        remaining = max(0, budget - spent)
        super().__init__(
            "budget_exceeded",
            f"this key's monthly budget is ${budget / 1e6:.2f}; ${remaining / 1e6:.4f}"
            f" remains this month and the task is estimated at ${estimate / 1e6:.4f}",
        )
        self.remaining = remaining


@dataclass(frozen=True, slots=True)
class Usage:
    """What one key holds now, as its quotas count it."""

    channels: int  # not expired
    live_tasks: int  # queued or submitted
    webhooks: int
    blob_bytes: int


@dataclass(frozen=True, slots=True)
class CallLimits:
    """One provider account's limits, counted in the store so every replica sees the same
    counts. 0 = no limit."""

    provider: str
    concurrency: int = 0  # jobs unfinished at the provider at once
    per_window: int = 0  # submits (calls that make a job) in any ``window`` seconds
    window: float = 60.0


@dataclass(frozen=True, slots=True)
class Slot:
    """What ``take_slot`` decided: taken, or not and when to look again, and why."""

    taken: bool
    retry_at: float | None = None
    # "concurrency" or "rate" (wait), "gone" (the task is no longer queued and unsent).
    reason: str | None = None
    count: int = 0  # the unfinished jobs or calls in the window that made it wait


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A request's hold on an idempotency key: its owner, the key, and the request's own
    token (a takeover replaces the token, so the old holder can no longer bind a task)."""

    owner: str
    key: str
    token: str


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What the store keeps for one (owner, key): the request's digest, who holds it
    until when, the task it made and, once given, the answer."""

    owner: str
    key: str
    fingerprint: bytes
    token: str
    lease_until: float | None
    created_at: float
    task_id: str | None = None
    status: int | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    owner: str
    provider: str
    status: TaskStatus
    input: bytes  # JSON: prompt, image blob ids, options
    channel_id: str | None
    provider_task_id: str | None
    callback_secret: str | None
    outputs: bytes  # JSON list of {"blob_id", "content_type"}
    result: bytes | None  # JSON outcome whose outputs still have to be fetched
    error: str | None
    attempts: int
    next_at: float | None  # when the worker looks at it next; None once terminal
    deadline: float
    created_at: float
    updated_at: float
    error_code: str | None = None  # the code of ``error``
    # The last attempt that failed (or the wait for a slot), and when the next one goes.
    last_error_code: str | None = None
    last_error: str | None = None
    retry_at: float | None = None
    # Set, and committed, before the provider is sent the job; cleared when its answer is
    # recorded. Found set with no answer (a crash, a stop, a lease taken over): the job
    # may have been accepted and billed, so it is never sent again.
    sending_at: float | None = None
    submitted_at: float | None = None  # when the provider accepted it
    # Fallback routing: the providers tried before this one, each as it ended (a JSON list
    # of {"provider", "outcome", "billed", "attempts", "reason"}), the ones still to try
    # if this one certainly cannot take the job (a JSON list of names), and when this one
    # was first tried (how long a rate limit has held it, against the task's patience).
    route: str | None = None
    fallbacks: str | None = None
    provider_since: float | None = None

    def __post_init__(self) -> None:
        # Rows come back with the status as text; the record always holds the enum.
        if type(self.status) is not TaskStatus:
            object.__setattr__(self, "status", TaskStatus(self.status))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class Blob:
    id: str
    owner: str
    content_type: str
    size: int
    sha256: bytes
    created_at: float
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to write with a change; the store gives it its id at commit."""

    type: str
    data: bytes
    channel_id: str | None = None
    task_id: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # shown in lists and used to revoke; never the key itself
    owner: str
    hash: bytes  # sha256 of the key: the key is shown once, when made, and never kept
    label: str | None
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL that gets a channel's or a task's events, signed per Standard Webhooks."""

    id: str
    owner: str
    url: str
    secret: str  # whsec_<base64>
    channel_id: str | None
    task_id: str | None
    created_at: float
    after_event_id: int = 0
    failures: int = 0  # attempts failed in a row
    last_error: str | None = None
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    pending: int = 0  # outbox entries not yet delivered nor given up
    # "standard": every event, Standard Webhooks; "acedata": the task's end only, in
    # AceData's callback shape (for POST /v1/images/edits with a callback_url).
    format: str = "standard"


@dataclass(frozen=True, slots=True)
class WebhookJob:
    id: int
    attempts: int  # before this one
    endpoint: Endpoint
    event: Event
