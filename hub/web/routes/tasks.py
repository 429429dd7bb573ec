"""Tasks: submit an edit to a provider, read its state, watch its events."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hub.bodies.read import read_body
from hub.enums import TERMINAL_EVENTS
from hub.errors import PaymentRequired, Unauthorized, not_found
from hub.shapes import TASK_IDS
from hub.store.base import Endpoint, EventQuery, TaskCost, TaskRecord
from hub.streams.sse import EventStream
from hub.streams.watch import check_watch, watch_url
from hub.tasks import idempotency, inputs
from hub.tasks.engine import new_id
from hub.tasks.idempotency import Existing, Replay
from hub.tasks.shapes import Task, TaskList, TaskRequest
from hub.web.decode import decode
from hub.web.routes import webhooks
from hub.web.routes.channels import last_event_id
from hub.web.routes.common import hub, json_response
from hub.web.state import HubState
from hub.webhooks import endpoints

LIST_LIMIT = 100
ROUTE = "POST /v1/tasks"
REPLAYED = "idempotent-replayed"
# A task request names images by URL; data: URLs can be large, so the body may be too.
MAX_TASK_BODY = 80 * 1024 * 1024


async def create(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    key = idempotency.checked_key(request.headers.get("idempotency-key"))
    raw = await read_body(request, MAX_TASK_BODY, state.settings.body_timeout_seconds)
    body = decode(raw, TaskRequest)
    hook_urls = endpoints.urls(
        body.webhook_urls, "webhook_urls", allow_private=state.settings.loopback_allowed
    )
    claim = None
    if key is not None:
        keys = idempotency_keys(state)
        begun = await keys.begin(owner, key, idempotency.body_fingerprint(ROUTE, raw))
        if isinstance(begun, Replay):
            return replayed(begun.status, begun.body)
        if isinstance(begun, Existing):
            return await _accepted_again(state, owner, key, begun.task_id)
        claim = begun
    engine = state.engine
    added: list[Endpoint] = []
    try:
        await state.quotas.check(owner, live_tasks=1, webhooks=len(hook_urls), blob_bytes=1)
        spec = await inputs.parse(body, engine.providers, image_sources(state, owner))
        task_id = new_id()
        # The endpoints exist before the task does, so none of its events can be missed.
        added = await endpoints.add(state.store, owner, hook_urls, task_id=task_id)
        task = await engine.create(
            owner, spec.provider, spec.channel_id, spec.to_json(), task_id, claim, spec.fallbacks
        )
    except Exception as exc:
        if claim is not None:
            await idempotency_keys(state).release(claim)  # frees it only if no task was made
        if isinstance(exc, PaymentRequired):
            # Over budget: no task, so its webhooks go too.
            for endpoint in added:
                await state.store.delete_endpoint(endpoint.id)
        raise
    hooks = [webhooks.describe(state, endpoint) for endpoint in added]
    response = json_response(engine.view.accepted(task, hooks), 202)
    if key is not None:
        await idempotency_keys(state).finish(owner, key, task.id, 202, bytes(response.body))
    return response


def idempotency_keys(state: HubState) -> idempotency.IdempotencyKeys:
    return idempotency.IdempotencyKeys(state.store, state.settings)


def replayed(status: int, body: bytes) -> Response:
    """The answer an earlier request with the same Idempotency-Key was given."""
    headers = {REPLAYED: "true"}
    return Response(body, status, headers=headers, media_type="application/json")


async def _accepted_again(state: HubState, owner: str, key: str, task_id: str) -> Response:
    """The answer to a key whose task exists with no answer kept (its request ended between
    making the task and answering): the same answer, made again from the task."""
    task = await state.store.get_task(task_id)
    if task is None:  # gone with retention: the key outlived it
        raise not_found("task")
    hooks = [
        webhooks.describe(state, endpoint)
        for endpoint in await state.store.list_endpoints(owner)
        if endpoint.task_id == task.id
    ]
    response = json_response(state.engine.view.accepted(task, hooks), 202)
    body = bytes(response.body)
    await idempotency_keys(state).finish(owner, key, task.id, 202, body)
    return replayed(202, body)


def image_sources(state: HubState, owner: str) -> inputs.Sources:
    """Where a task's input images may come from, for this key, within the limits."""
    return inputs.Sources(
        owner=owner,
        store=state.store,
        client=state.client,
        max_image_bytes=state.settings.max_image_bytes,
        allow_private=state.settings.loopback_allowed,
    )


async def index(request: Request) -> Response:
    """The key's newest tasks, newest first (for the dashboard)."""
    state = hub(request)
    owner = state.owner(request)
    tasks = await state.store.list_tasks(owner, LIST_LIMIT)
    costs = await state.store.task_costs([task.id for task in tasks])
    return json_response(TaskList([_describe(state, task, costs.get(task.id)) for task in tasks]))


async def show(request: Request) -> Response:
    state = hub(request)
    task = await _owned_task(state, request)
    costs = await state.store.task_costs([task.id])
    return json_response(_describe(state, task, costs.get(task.id)))


async def stream(request: Request) -> Response:
    state = hub(request)
    token = request.query_params.get("token")
    if token is not None:
        task_id = request.path_params["task_id"]
        check_watch(state.signer, token, task_id=task_id)
        found = await state.store.get_task(task_id)
        if found is None:
            raise not_found("task")
        if found.owner in state.keys.revoked:
            raise Unauthorized("revoked", "the key this watch URL was issued to is revoked")
        task = found
    else:
        task = await _owned_task(state, request)
    # A task's stream starts at its beginning: queued, submitted, then how it ended.
    last = last_event_id(request)
    state.quotas.check_streams(task.owner)
    return EventStream(
        state.store,
        state.broker,
        state.streams,
        EventQuery(task_id=task.id),
        0 if last is None else last,
        is_last=lambda event: event.type in TERMINAL_EVENTS,
        owner=task.owner,
    )


def _describe(state: HubState, task: TaskRecord, cost: TaskCost | None = None) -> Task:
    view = state.engine.view
    watch = watch_url(
        state.signer, view.stream_url(task.id), state.settings.watch_ttl_seconds, task_id=task.id
    )
    return view.describe(task, watch, cost)


async def _owned_task(state: HubState, request: Request) -> TaskRecord:
    owner = state.owner(request)
    task_id = request.path_params["task_id"]
    task = await state.store.get_task(task_id) if TASK_IDS.matches(task_id) else None
    if task is None or task.owner != owner:
        raise not_found("task")
    return task
