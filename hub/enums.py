"""The words the hub's parts share: task and webhook statuses, event types. One
definition each, used by the engine, both stores, the client and the OpenAPI schema."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """queued -> submitted -> succeeded | failed | timed_out | canceled."""

    QUEUED = "queued"
    # The provider accepted it and the hub holds its task id.
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def event(self) -> str:
        """The type of the event that reports this status."""
        return f"task.{self.value}"


ACTIVE = frozenset({TaskStatus.QUEUED, TaskStatus.SUBMITTED})
TERMINAL = frozenset(set(TaskStatus) - ACTIVE)


class EndpointStatus(StrEnum):
    """An outbound webhook endpoint's health, as its record reports it."""

    OK = "ok"
    FAILING = "failing"


class EventType(StrEnum):
    CALLBACK_RECEIVED = "callback.received"
    STREAM_GAP = "stream.gap"
    WEBHOOK_FAILING = "webhook.failing"
    TASK_QUEUED = "task.queued"
    TASK_SUBMITTED = "task.submitted"
    TASK_RETRYING = "task.retrying"
    TASK_REROUTED = "task.rerouted"
    TASK_SUCCEEDED = "task.succeeded"
    TASK_FAILED = "task.failed"
    TASK_TIMED_OUT = "task.timed_out"
    TASK_CANCELED = "task.canceled"


TERMINAL_EVENTS = frozenset(status.event for status in TERMINAL)
