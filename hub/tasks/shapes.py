"""The bodies of ``/v1/tasks``: the request and its input, the task as shown, its events.

What a shape cannot say stays with the code that knows it (``hub.tasks.inputs``): whether
the provider is configured here, how many images it takes, and whether each image can be
fetched, decoded or found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from hub.enums import TaskStatus
from hub.providers import PROVIDERS
from hub.providers.base import BACKGROUNDS, OUTPUT_FORMATS, QUALITIES, SIZES
from hub.shapes import NOT_BLANK, Count, Reference, TaskId, Timestamp, Url
from hub.webhooks.shapes import Webhook, WebhookUrls

MAX_PROMPT = 32_000
MAX_IMAGES = 16
MAX_N = 10

if TYPE_CHECKING:
    Provider: TypeAlias = str
    Size: TypeAlias = str
    Quality: TypeAlias = str
    Background: TypeAlias = str
    OutputFormat: TypeAlias = str
else:
    # The choices are the providers' own tables: a Literal of them, so that validation and
    # the schema's enums are the same list.
    Provider = Literal[tuple(sorted(PROVIDERS))]
    Size = Literal[SIZES]
    Quality = Literal[QUALITIES]
    Background = Literal[BACKGROUNDS]
    OutputFormat = Literal[OUTPUT_FORMATS]

Prompt = Annotated[str, Meta(max_length=MAX_PROMPT, pattern=NOT_BLANK)]
ImageSource = Annotated[
    str,
    Meta(min_length=1, description="An http(s) URL, a base64 data: URL, or the id of an upload."),
]


class EditInput(Struct, forbid_unknown_fields=True):
    """The edit: a prompt, the images (1 to 16; AtlasCloud takes 1) and its options."""

    prompt: Prompt
    images: Annotated[list[ImageSource], Meta(min_length=1, max_length=MAX_IMAGES)]
    mask: ImageSource | None = None
    size: Size | None = None
    quality: Quality | None = None
    background: Background | None = None
    output_format: OutputFormat | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_N)] | None = None
    # 0-100, for jpeg and webp output; kept in the task's input for the providers that take it.
    output_compression: Annotated[int, Meta(ge=0, le=100)] | None = None


# A provider, or several in the order to try them (``hub.tasks.routing``).
Route = Annotated[
    list[Provider],
    Meta(min_length=1, max_length=len(PROVIDERS), description="Providers to try, in order."),
]


class TaskRequest(Struct, forbid_unknown_fields=True):
    provider: Provider | Route
    input: EditInput
    channel_id: Reference | None = None
    webhook_urls: WebhookUrls | None = None


class Output(Struct, forbid_unknown_fields=True):
    url: Url
    content_type: str


class Cost(Struct, forbid_unknown_fields=True):
    """What the task is expected to cost (made before anything was sent) and what it
    was billed: the provider's own figure where it reports one, else the estimate once
    the provider accepted the job, 0 while nothing has been or when nothing was billed."""

    estimated_usd: float
    billed_usd: float
    currency: Literal["USD"] = "USD"


class TaskError(Struct, forbid_unknown_fields=True):
    """Why a task failed, or why its last attempt did. ``code``: rate_limited,
    provider_unavailable, provider_refused, outcome_unknown (the provider may have charged
    for it: not sent again), provider_failed, moderation_blocked, invalid_input, timed_out."""

    code: str
    message: str


class TaskInputView(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The edit a task was asked for, its images as the hub holds them (blob URLs)."""

    prompt: str
    images: list[Url]
    mask: Url | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    n: int | None = None
    output_compression: int | None = None


class RouteStep(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One provider a task was on. ``outcome``: for the one it left, why (not_configured,
    refused, rate_limited, unavailable); for the current one, the task's status.
    ``billed``: whether that provider billed (or, while it runs, will bill) for it."""

    provider: str
    outcome: str
    billed: bool
    attempts: Count = 0
    reason: str | None = None


class Task(Struct, forbid_unknown_fields=True):
    """A task as it is now. ``last_error``: the last attempt that failed (or the wait for
    the provider's slot), ``next_attempt_at``: when the next one goes, while it waits."""

    id: TaskId
    provider: str
    provider_task_id: str | None
    status: TaskStatus
    outputs: list[Output]
    error: TaskError | None
    channel_id: str | None
    attempts: Count
    created_at: Timestamp
    updated_at: Timestamp
    stream_url: Url
    watch_url: Url
    cost: Cost
    input: TaskInputView | None = None
    route: list[RouteStep] = msgspec.field(default_factory=list)
    last_error: TaskError | None = None
    next_attempt_at: Timestamp | None = None


class TaskAccepted(Struct, forbid_unknown_fields=True):
    """A task just made: queued, and watched at its stream_url."""

    id: TaskId
    status: Literal["queued"]
    provider: str
    stream_url: Url
    channel_id: str | None
    webhooks: list[Webhook] | UnsetType = UNSET


class TaskList(Struct, forbid_unknown_fields=True):
    tasks: list[Task]


class TaskEvent(Struct, forbid_unknown_fields=True):
    """The data of a task.* event: the task as it now is."""

    task_id: TaskId
    provider: str
    provider_task_id: str | None
    status: TaskStatus
    outputs: list[Output]
    error: TaskError | None
    at: Timestamp
    channel_id: str | UnsetType = UNSET


class TaskRetrying(Struct, forbid_unknown_fields=True):
    """The data of a task.retrying event: an attempt failed, or waits for the provider's
    slot, and the next goes at ``retry_at``. ``attempt``: the attempt that failed or waits."""

    task_id: TaskId
    provider: str
    status: TaskStatus
    attempt: int
    error: TaskError
    retry_at: Timestamp
    at: Timestamp
    channel_id: str | UnsetType = UNSET


class TaskRerouted(Struct, forbid_unknown_fields=True, kw_only=True):
    """The data of a task.rerouted event: the task left ``from`` for ``to``, certain
    ``from`` had not billed it; ``reason``: not_configured, refused, rate_limited or
    unavailable, and ``error`` what ``from`` answered."""

    task_id: TaskId
    from_: str = msgspec.field(name="from")
    to: str
    reason: str
    error: TaskError
    at: Timestamp
    channel_id: str | UnsetType = UNSET
