"""Canceling a task: ``POST /v1/tasks/{id}/cancel``.

The decision is one conditional update of the task's status (queued or submitted ->
canceled), so it races safely with the worker and with callbacks: whichever commits first
wins, and every later transition (a submit's answer, a poll, a callback) finds the task
ended and changes nothing. A callback that comes after is still kept as a delivery, as
for any ended task; it is never applied.

- Queued (or waiting to retry): nothing more is sent; the worker's next send finds the
  task gone. Its estimate is released, unless a send was under way when it was canceled
  (the job may have been accepted, so it may have been billed).
- Submitted: the provider's own cancel is asked for where it has one (best effort, after
  the task is canceled here), and the hub stops waiting. The job was accepted, so its
  estimate counts as billed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

from hub.enums import ACTIVE, TaskStatus
from hub.errors import Conflict
from hub.providers.base import Provider, ProviderError
from hub.store.base import Store, TaskRecord
from hub.store.costs import BILLED
from hub.tasks.view import TaskView

log = logging.getLogger("hub.tasks")

CANCELED = "canceled"  # the task's error.code once canceled
PROVIDER_CANCEL_TIMEOUT = 10.0


def ended(task: TaskRecord) -> Conflict:
    return Conflict("task_ended", f"task {task.id} has already ended ({task.status})")


async def cancel(
    store: Store, view: TaskView, providers: Mapping[str, Provider], task: TaskRecord
) -> TaskRecord:
    """Cancel ``task`` (as just read); the task as it now is. Conflict if it has ended."""
    for _ in range(3):
        if task.terminal:
            raise ended(task)
        canceled = await _mark(store, view, task)
        if canceled is not None:
            if task.status == TaskStatus.SUBMITTED and task.provider_task_id is not None:
                provider = providers.get(task.provider)
                if provider is not None:
                    await _ask_provider(provider, task)
            return canceled
        # Its status moved under us (submitted, or ended): look again.
        again = await store.get_task(task.id)
        if again is None:
            break
        task = again
    raise ended(task)


async def _mark(store: Store, view: TaskView, task: TaskRecord) -> TaskRecord | None:
    message = "canceled at the API key's request"
    if task.status == TaskStatus.SUBMITTED:
        message += f"; {task.provider} was asked to stop the job"
    now_canceled = dataclasses.replace(
        task, status=TaskStatus.CANCELED, error=message, error_code=CANCELED
    )
    changes: dict[str, object] = {
        "status": TaskStatus.CANCELED,
        "error": message,
        "error_code": CANCELED,
        "result": None,
        "next_at": None,
        "retry_at": None,
    }
    if task.sending_at is not None:
        # A send under way: the job may have been accepted, and billed.
        changes[BILLED] = True
    expect = frozenset({task.status}) & ACTIVE
    if not expect:
        return None
    applied = await store.update_task(task.id, expect, changes, [view.event(now_canceled)])
    return None if applied is None else now_canceled


async def _ask_provider(provider: Provider, task: TaskRecord) -> None:
    """The provider's own cancel, where it has one. Best effort: the task is canceled here
    whatever it answers, and a result that still comes is kept, never applied."""
    assert task.provider_task_id is not None
    try:
        async with asyncio.timeout(PROVIDER_CANCEL_TIMEOUT):
            stopped = await provider.cancel(task.provider_task_id)
    except (ProviderError, TimeoutError) as exc:
        log.info("task %s: %s's cancel failed: %s", task.id, task.provider, exc)
        return
    except Exception:
        log.exception("task %s: %s's cancel failed", task.id, task.provider)
        return
    log.info("task %s: %s %s", task.id, task.provider, "stopped it" if stopped else "has no cancel")
