"""The one interface every provider adapter implements, and the records it trades in.

An adapter turns the hub's edit request into its provider's HTTP call, reads the answer,
polls, and parses a callback. It never touches the store: the task engine (``hub.tasks``)
owns state, retries, deadlines and outputs. Everything that differs between providers
lives in the adapter modules and nowhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

import httpx

SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
QUALITIES = ("auto", "low", "medium", "high")
BACKGROUNDS = ("auto", "transparent", "opaque")
OUTPUT_FORMATS = ("png", "jpeg", "webp")


class Resend(StrEnum):
    """What a failed call says about sending the same job to the provider again. Money is
    at stake: every accepted edit is billed, so only a failure that proves nothing was
    accepted may be followed by another submit."""

    # Nothing was accepted (a 429, a refusal before acceptance, a connection that never
    # opened, a 5xx the provider documents as unbilled): trying again later is safe.
    SAFE = "safe"
    # Nothing was accepted, and trying again would fail the same way (bad input, bad key).
    NEVER = "never"
    # The provider may have accepted, and billed, the job: a read timeout after the body
    # went out, a connection cut mid-answer, an ambiguous 5xx, an unreadable 2xx. Never
    # sent again; recovered through the job's own callback where there is one.
    UNKNOWN = "unknown"


class ErrorCode(StrEnum):
    """Why a task failed or is retrying, as ``error.code`` reports it."""

    RATE_LIMITED = "rate_limited"  # the provider's 429, or the hub keeping its limits
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # 5xx or no connection, nothing billed
    PROVIDER_REFUSED = "provider_refused"  # refused before acceptance (input, key, balance)
    OUTCOME_UNKNOWN = "outcome_unknown"  # may have been billed; not sent again
    PROVIDER_FAILED = "provider_failed"  # the provider ran the job and it failed
    MODERATION_BLOCKED = "moderation_blocked"  # the provider refused the content
    INVALID_INPUT = "invalid_input"  # the hub cannot build the request (an input gone)
    TIMED_OUT = "timed_out"  # no result by the task's deadline


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    base_url: str  # no trailing slash, e.g. "https://api.eachlabs.ai" or ".../sandbox/eachlabs"
    api_key: str = field(repr=False)
    # Enforced by the engine, not discovered by failing. 0 = no limit.
    requests_per_minute: int = 0
    concurrency: int = 0
    # Seconds to wait after submitting before the first status check, then between checks.
    first_poll_after: float = 3.0
    poll_interval: float = 3.0
    request_timeout: float = 120.0
    # Sent as the User-Agent where set (AtlasCloud's edge is said to want a browser-like one).
    user_agent: str = ""
    # Seconds after acceptance during which "no such job" on a poll means "not visible yet"
    # (AtlasCloud's own client allows about 30 s); after it, the job is lost.
    not_found_grace: float = 30.0


@dataclass(frozen=True, slots=True)
class InputImage:
    """An input image the hub holds as a blob."""

    blob_id: str
    content_type: str  # image/png, image/jpeg or image/webp
    filename: str  # e.g. "image-1.png"
    # A signed, expiring URL where the provider can GET the bytes from the hub.
    url: str
    # The bytes, loaded on demand (multipart uploads need them; URL-based calls don't).
    load: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class EditRequest:
    task_id: str  # the hub's own id
    prompt: str
    images: tuple[InputImage, ...]  # 1 to 16
    mask: InputImage | None = None
    size: str | None = None  # one of SIZES, None = provider default
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    n: int | None = None
    # 0-100, for jpeg/webp output, passed to the providers that take it (AceData, Segmind).
    output_compression: int | None = None
    # A signed hub URL for this task's callback, or None when the provider must be polled
    # (no callback support, or a rule it has, like AtlasCloud's https-only webhooks).
    callback_url: str | None = None
    # A per-task secret the provider signs its callback with, where it supports one.
    callback_secret: str | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """One result image: bytes the provider returned, or a URL to download them from."""

    data: bytes | None = None
    url: str | None = None
    content_type: str | None = None


State = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the provider said about a task."""

    state: State
    provider_task_id: str | None = None
    outputs: tuple[Output, ...] = ()
    # For "failed": what happened, in words a user can act on (with the provider's code),
    # and its ErrorCode (PROVIDER_FAILED, or MODERATION_BLOCKED for a content refusal).
    error: str | None = None
    error_code: ErrorCode = ErrorCode.PROVIDER_FAILED
    # Provider details worth keeping (status string, timings), small.
    detail: Mapping[str, object] = field(default_factory=dict)


class ProviderError(Exception):
    """A call to the provider did not work, and what that means for sending it again.

    ``resend`` says whether the job may be sent again (see ``Resend``); ``code`` is the
    task's ``error.code``; ``retry_after`` (seconds) is the provider's own ``Retry-After``.
    ``slot_full``: the provider refused because too many of this account's jobs are
    unfinished (Eachlabs' in-flight cap): wait for one to end rather than spend attempts.
    ``provider_task_id``: see below.
    """

    def __init__(
        self,
        message: str,
        *,
        resend: Resend,
        code: ErrorCode,
        status: int | None = None,
        retry_after: float | None = None,
        slot_full: bool = False,
        provider_task_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.resend = resend
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.slot_full = slot_full
        # With UNKNOWN: a handle under which ``poll`` may still find the job (AceData's
        # trace id on a 500), so the outcome can be recovered without sending it again.
        self.provider_task_id = provider_task_id

    @property
    def retryable(self) -> bool:
        return self.resend is Resend.SAFE


RejectReason = Literal["signature", "unreadable", "unavailable"]


class CallbackRejected(Exception):
    """A callback the adapter will not take: its signature fails (``signature``), it cannot
    be read (``unreadable``), or it cannot be checked now (``unavailable``: the sender
    should retry)."""

    def __init__(self, message: str, *, reason: RejectReason = "signature") -> None:
        super().__init__(message)
        self.message = message
        self.reason: RejectReason = reason


class Provider(Protocol):
    name: str
    # True if the provider POSTs results to a URL the hub gives it.
    supports_callback: bool
    # The most images one call makes (``n``); a task asking for more is refused, 422.
    max_n: int

    def wants_callback(self, public_url: str) -> bool:
        """Whether to hand this provider a callback URL built on ``public_url``."""

    async def submit(self, request: EditRequest) -> Outcome:
        """Send the job. ``pending`` with the provider's task id, or already terminal for
        providers that answer synchronously. Raises ProviderError."""

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        """Ask the provider once how the task is doing. ``age``: seconds since the job was
        accepted, for providers whose new jobs are briefly unknown to their status route (a
        404 within the grace is pending, after it a failure). Raises ProviderError."""

    async def cancel(self, provider_task_id: str) -> bool:
        """Ask the provider to stop the job, where it has a cancel route. False where it
        has none (the hub then only stops waiting). Raises ProviderError."""

    async def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str | None
    ) -> Outcome:
        """Verify (over the raw bytes, before parsing) and read a callback.
        Raises CallbackRejected."""


ProviderFactory = Callable[[ProviderConfig, httpx.AsyncClient], Provider]
