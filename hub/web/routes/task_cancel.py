"""``POST /v1/tasks/{id}/cancel``: 200 with the task, canceled; 409 ``task_ended`` if it
had already ended (``hub.tasks.cancel`` says what canceling does)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hub.tasks.cancel import cancel
from hub.web.routes.common import hub, json_response
from hub.web.routes.tasks import _describe, _owned_task


async def create(request: Request) -> Response:
    state = hub(request)
    task = await _owned_task(state, request)
    engine = state.engine
    await cancel(state.store, engine.view, engine.providers, task)
    current = await state.store.get_task(task.id) or task
    costs = await state.store.task_costs([task.id])
    return json_response(_describe(state, current, costs.get(task.id)))
