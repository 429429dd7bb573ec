"""How a task looks from outside: its JSON in the API, and the data of its events."""

from __future__ import annotations

import time
from typing import Any

import orjson

from hub.blobs import records
from hub.formats import iso
from hub.store.base import NewEvent, TaskRecord


class TaskView:
    def __init__(self, public_url: str) -> None:
        self._base = public_url

    def describe(self, task: TaskRecord, *, event: bool = False) -> dict[str, Any]:
        """``GET /v1/tasks/{id}``'s body, or (``event=True``) an event's data."""
        outputs = [
            {"url": records.url(self._base, o["blob_id"]), "content_type": o["content_type"]}
            for o in orjson.loads(task.outputs)
        ]
        data: dict[str, Any] = {"task_id": task.id} if event else {"id": task.id}
        data.update(
            provider=task.provider,
            provider_task_id=task.provider_task_id,
            status=task.status,
            outputs=outputs,
            error=task.error,
        )
        if event:
            data["at"] = iso(time.time())
            if task.channel_id is not None:
                data["channel_id"] = task.channel_id
        else:
            data.update(
                channel_id=task.channel_id,
                attempts=task.attempts,
                created_at=iso(task.created_at),
                updated_at=iso(task.updated_at),
                stream_url=f"{self._base}/v1/tasks/{task.id}/events",
            )
        return data

    def event(self, task: TaskRecord) -> NewEvent:
        """The event saying the task is now as ``task`` shows it (``task.<status>``): on the
        task's own stream and, when it has one, its channel's."""
        return NewEvent(
            task.status.event, orjson.dumps(self.describe(task, event=True)),
            channel_id=task.channel_id, task_id=task.id, ref=task.id,
        )  # fmt: skip
