"""Outbound webhook endpoints: a URL that gets a channel's or a task's events, signed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hub.errors import invalid, not_found
from hub.shapes import WEBHOOK_IDS
from hub.store.base import Endpoint
from hub.web.routes.common import hub, json_body, json_response
from hub.web.state import HubState
from hub.webhooks import endpoints
from hub.webhooks.shapes import Webhook, WebhookList, WebhookRequest


async def create(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    body = await json_body(request, WebhookRequest)
    url = endpoints.checked_url(body.url, "url", allow_private=state.settings.loopback_allowed)
    if (body.channel_id is None) == (body.task_id is None):
        raise invalid("channel_id", "give exactly one of channel_id and task_id")
    if body.channel_id is not None:
        channel = await state.store.get_channel(body.channel_id)
        if channel is None or channel.owner != owner:
            raise not_found("channel")
    elif body.task_id is not None:
        task = await state.store.get_task(body.task_id)
        if task is None or task.owner != owner:
            raise not_found("task")
    await state.quotas.check(owner, webhooks=1)
    (endpoint,) = await endpoints.add(
        state.store, owner, [url], channel_id=body.channel_id, task_id=body.task_id
    )
    return json_response(describe(state, endpoint), 201)


async def index(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    found = await state.store.list_endpoints(owner)
    return json_response(WebhookList([describe(state, e) for e in found]))


async def show(request: Request) -> Response:
    state = hub(request)
    return json_response(describe(state, await _owned(state, request)))


async def delete(request: Request) -> Response:
    state = hub(request)
    endpoint = await _owned(state, request)
    await state.store.delete_endpoint(endpoint.id)
    return Response(status_code=204)


def describe(state: HubState, endpoint: Endpoint) -> Webhook:
    return endpoints.describe(endpoint, state.settings.webhook_failing_after)


async def _owned(state: HubState, request: Request) -> Endpoint:
    owner = state.owner(request)
    endpoint_id = request.path_params["webhook_id"]
    endpoint = None
    if WEBHOOK_IDS.matches(endpoint_id):
        endpoint = await state.store.get_endpoint(endpoint_id)
    if endpoint is None or endpoint.owner != owner:
        raise not_found("webhook")
    return endpoint
