"""How a task looks from outside: its body in the API, and the data of its events."""

from __future__ import annotations

import time

import msgspec
import orjson

from hub.blobs import records
from hub.enums import EventType, TaskStatus
from hub.formats import iso
from hub.providers.base import ErrorCode
from hub.shapes import given
from hub.store.base import NewEvent, TaskCost, TaskRecord
from hub.tasks import routing
from hub.tasks.pricing import usd
from hub.tasks.shapes import (
    Cost,
    Output,
    RouteStep,
    Task,
    TaskAccepted,
    TaskError,
    TaskEvent,
    TaskInputView,
    TaskRerouted,
    TaskRetrying,
)
from hub.webhooks.shapes import Webhook

INPUT_OPTIONS = ("size", "quality", "background", "output_format", "n", "output_compression")


class TaskView:
    def __init__(self, public_url: str) -> None:
        self._base = public_url

    def stream_url(self, task_id: str) -> str:
        return f"{self._base}/v1/tasks/{task_id}/events"

    def describe(self, task: TaskRecord, watch_url: str, cost: TaskCost | None = None) -> Task:
        """``GET /v1/tasks/{id}``'s body."""
        return Task(
            id=task.id,
            provider=task.provider,
            provider_task_id=task.provider_task_id,
            status=TaskStatus(task.status),
            outputs=self._outputs(task),
            error=error_of(task),
            channel_id=task.channel_id,
            attempts=task.attempts,
            created_at=iso(task.created_at),
            updated_at=iso(task.updated_at),
            stream_url=self.stream_url(task.id),
            watch_url=watch_url,
            cost=cost_of(task, cost),
            input=self._input(task),
            route=route_of(task, cost),
            last_error=last_error_of(task),
            next_attempt_at=iso(task.retry_at) if task.retry_at is not None else None,
        )

    def accepted(self, task: TaskRecord, webhooks: list[Webhook]) -> TaskAccepted:
        """``POST /v1/tasks``' answer, for a task just made."""
        return TaskAccepted(
            id=task.id,
            status="queued",
            provider=task.provider,
            stream_url=self.stream_url(task.id),
            channel_id=task.channel_id,
            webhooks=given(webhooks or None),
        )

    def event(self, task: TaskRecord) -> NewEvent:
        """The event saying the task is now as ``task`` shows it (``task.<status>``): on the
        task's own stream and, when it has one, its channel's."""
        data = TaskEvent(
            task_id=task.id,
            provider=task.provider,
            provider_task_id=task.provider_task_id,
            status=task.status,
            outputs=self._outputs(task),
            error=error_of(task),
            at=iso(time.time()),
            channel_id=given(task.channel_id),
        )
        return NewEvent(
            task.status.event, msgspec.json.encode(data),
            channel_id=task.channel_id, task_id=task.id, ref=task.id,
        )  # fmt: skip

    def retrying(
        self, task: TaskRecord, attempt: int, error: TaskError, retry_at: float
    ) -> NewEvent:
        """``task.retrying``: an attempt failed, or waits for the provider's slot."""
        data = TaskRetrying(
            task_id=task.id,
            provider=task.provider,
            status=task.status,
            attempt=attempt,
            error=error,
            retry_at=iso(retry_at),
            at=iso(time.time()),
            channel_id=given(task.channel_id),
        )
        return NewEvent(
            EventType.TASK_RETRYING, msgspec.json.encode(data),
            channel_id=task.channel_id, task_id=task.id, ref=task.id,
        )  # fmt: skip

    def rerouted(self, task: TaskRecord, to: str, reason: str, error: TaskError) -> NewEvent:
        """``task.rerouted``: the task left its provider for ``to``, nothing billed."""
        data = TaskRerouted(
            task_id=task.id,
            from_=task.provider,
            to=to,
            reason=reason,
            error=error,
            at=iso(time.time()),
            channel_id=given(task.channel_id),
        )
        return NewEvent(
            EventType.TASK_REROUTED, msgspec.json.encode(data),
            channel_id=task.channel_id, task_id=task.id, ref=task.id,
        )  # fmt: skip

    def _input(self, task: TaskRecord) -> TaskInputView:
        data = orjson.loads(task.input)
        mask = data.get("mask")
        options = {name: data[name] for name in INPUT_OPTIONS if data.get(name) is not None}
        return TaskInputView(
            prompt=data.get("prompt", ""),
            images=[records.url(self._base, blob_id) for blob_id in data.get("images", ())],
            mask=None if mask is None else records.url(self._base, mask),
            **options,
        )

    def _outputs(self, task: TaskRecord) -> list[Output]:
        return [
            Output(url=records.url(self._base, o["blob_id"]), content_type=o["content_type"])
            for o in orjson.loads(task.outputs)
        ]


def cost_of(task: TaskRecord, cost: TaskCost | None) -> Cost:
    """A task's cost as shown: settled, or while it runs 0 until the provider accepted it
    (then the estimate, which is what accepting bills)."""
    if cost is None:
        return Cost(estimated_usd=0.0, billed_usd=0.0)
    billed = cost.billed_micros
    if billed is None:
        billed = cost.estimated_micros if task.status == TaskStatus.SUBMITTED else 0
    return Cost(estimated_usd=usd(cost.estimated_micros), billed_usd=usd(billed))


def route_of(task: TaskRecord, cost: TaskCost | None) -> list[RouteStep]:
    """Each provider the task was on: those it left (none billed it: that is why it could
    leave), then the one it is on, as it is now."""
    left = [RouteStep(**step) for step in routing.steps(task)]
    billed = cost_of(task, cost).billed_usd > 0
    now = RouteStep(task.provider, str(task.status), billed, task.attempts)
    return [*left, now]


def error_of(task: TaskRecord) -> TaskError | None:
    if task.error is None:
        return None
    # Tasks that ended before error codes were kept: a code from how they ended.
    fallback = ErrorCode.TIMED_OUT if task.status == TaskStatus.TIMED_OUT else "provider_failed"
    return TaskError(task.error_code or fallback, task.error)


def last_error_of(task: TaskRecord) -> TaskError | None:
    if task.last_error is None:
        return None
    return TaskError(task.last_error_code or ErrorCode.PROVIDER_FAILED, task.last_error)
