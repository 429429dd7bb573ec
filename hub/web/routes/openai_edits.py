"""``POST /v1/images/edits``, as OpenAI's image edit API: the same multipart fields, the same
response and error shapes, so an OpenAI client pointed at the hub works unchanged.

The edit runs as a hub task on a provider (``provider`` field, else
``HUB_DEFAULT_PROVIDER``). Without ``callback_url`` the request waits for the task and
answers with the images as base64; with one (AceData's extension) it answers
``{"task_id"}`` at once and the hub later POSTs AceData's callback body there, through
the webhook outbox (so with retries, and signed as well).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from hub.blobs import records
from hub.blobs.images import image_type
from hub.bodies.multipart import MalformedForm, bounded_form
from hub.bodies.read import read_body
from hub.enums import TaskStatus
from hub.errors import HubError, Invalid, Malformed, PaymentRequired, Unavailable, invalid
from hub.providers import PROVIDERS
from hub.shapes import given
from hub.store.base import EventQuery, TaskRecord
from hub.streams.broker import SubscriptionClosed
from hub.tasks import inputs
from hub.tasks.engine import new_id
from hub.tasks.shapes import TaskRequest
from hub.web import errors
from hub.web.decode import convert
from hub.web.routes.common import hub, json_response
from hub.web.routes.tasks import image_sources
from hub.web.shapes import B64Image, EditAccepted, ImagesResponse, OpenAIError, OpenAIErrorDetail
from hub.web.state import HubState
from hub.webhooks import endpoints
from hub.webhooks.shapes import WebhookUrl

MAX_PARTS = 40
# Answered or ignored as OpenAI's own fields: accepted so that clients work unchanged.
IGNORED = {"model", "user", "moderation", "input_fidelity", "response_format", "partial_images"}
OPTIONS = ("size", "quality", "background", "output_format", "n")
_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}


async def edit(request: Request) -> Response:
    try:
        return await _edit(request)
    except HubError as exc:
        return _openai_error(exc)


async def _edit(request: Request) -> Response:
    state = hub(request)
    owner = state.owner(request)
    fields, files = await _form(request, state)
    provider = fields.pop("provider", None) or _default_provider(state)
    for name in IGNORED:
        fields.pop(name, None)
    if fields.pop("stream", "false").lower() not in ("false", "0"):
        raise _bad("stream", "streaming is not supported here; leave stream unset")
    compression = fields.pop("output_compression", None)
    if compression is not None and not (_digits(compression) and int(compression) <= 100):
        raise _bad("output_compression", "must be an integer from 0 to 100")
    callback_url = fields.pop("callback_url", None)
    images = files.pop("image", []) + files.pop("image[]", [])
    if not images:
        raise _bad("image", "is required: 1 to 16 image files")
    unknown = sorted(set(fields) - {"prompt", *OPTIONS}) + sorted(set(files) - {"mask"})
    if unknown:
        raise _bad(unknown[0], "unknown field")
    size = sum(len(data) for data in images) + sum(len(data) for data in files.get("mask", []))
    await state.quotas.check(owner, live_tasks=1, blob_bytes=size)
    # The images become blobs first; the task's own shape and checks (prompt, options,
    # counts) then run exactly as for POST /v1/tasks, with the field names OpenAI uses.
    blob_ids = [await _blob(state, owner, data, "image") for data in images]
    task_input: dict[str, Any] = {
        name: fields[name] for name in ("prompt", *OPTIONS) if name in fields
    }
    task_input["images"] = blob_ids
    if files.get("mask"):
        task_input["mask"] = await _blob(state, owner, files["mask"][0], "mask")
    if _digits(task_input.get("n")):
        task_input["n"] = int(task_input["n"])  # a form holds text: "two" stays so, refused
    asked = convert({"provider": provider, "input": task_input}, TaskRequest)
    spec = await inputs.parse(asked, state.engine.providers, image_sources(state, owner))
    task_id = new_id()
    if callback_url is not None:
        # The endpoint exists before the task does, so its end cannot be missed.
        url = endpoints.checked_url(convert(callback_url, WebhookUrl, root="callback_url"),
                                    "callback_url")  # fmt: skip
        added = await endpoints.add(state.store, owner, [url], task_id=task_id, format="acedata")
        try:
            await state.engine.create(owner, spec.provider, None, spec.to_json(), task_id)
        except PaymentRequired:
            for endpoint in added:  # over budget: no task, so no callback either
                await state.store.delete_endpoint(endpoint.id)
            raise
        return json_response(EditAccepted(task_id))
    async with state.broker.subscribe(EventQuery(task_id=task_id)) as subscription:
        task = await state.engine.create(owner, spec.provider, None, spec.to_json(), task_id)
        ended = await _ended(state, task, subscription)
    return await _answer(state, ended, spec)


async def _form(request: Request, state: HubState) -> tuple[dict[str, str], dict[str, list[bytes]]]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise Malformed("invalid_request_error", "send multipart/form-data, as OpenAI's API takes")
    body = await read_body(
        request, state.settings.max_upload_bytes, state.settings.body_timeout_seconds
    )
    fields: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    try:
        async with bounded_form(request.scope, body, max_parts=MAX_PARTS) as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.setdefault(name, []).append(await value.read())
                elif name in fields:
                    raise _bad(name, "given twice")
                else:
                    fields[name] = value
    except MalformedForm as error:
        raise Malformed(
            "invalid_request_error", f"the multipart body cannot be read: {error.reason}"
        ) from None
    return fields, files


async def _blob(state: HubState, owner: str, data: bytes, field: str) -> str:
    if len(data) > state.settings.max_image_bytes:
        raise _bad(field, f"larger than {state.settings.max_image_bytes} bytes")
    blob = records.make(owner, data, await image_type(data, field))
    await state.store.put_blob(blob)
    return blob.id


def _default_provider(state: HubState) -> str:
    configured = state.engine.providers
    if state.settings.default_provider:
        return state.settings.default_provider
    for name in PROVIDERS:
        if name in configured:
            return name
    raise invalid("provider", "no provider is configured on this hub", "invalid_request_error")


async def _ended(state: HubState, task: TaskRecord, subscription: Any) -> TaskRecord:
    """The task once it has ended: its terminal event, or the store if it ended before
    anything was awaited here. The task itself is durable: a client that gives up waiting
    leaves it running."""
    deadline = task.deadline - task.created_at + 5.0
    async with asyncio.timeout(deadline):
        while True:
            current = await state.store.get_task(task.id)
            if current is not None and current.terminal:
                return current
            try:
                await subscription.wait(None)
            except SubscriptionClosed:
                raise Unavailable("server_error", "the hub is shutting down") from None
            subscription.drain()


async def _answer(state: HubState, task: TaskRecord, spec: inputs.TaskInput) -> Response:
    if task.status != TaskStatus.SUCCEEDED:
        status = 504 if task.status == TaskStatus.TIMED_OUT else 502
        return _error(status, task.error or task.status, "server_error", None, "provider_failed")
    data = []
    for output in orjson.loads(task.outputs):
        blob = await state.store.get_blob(output["blob_id"])
        if blob is not None:
            data.append(B64Image(base64.b64encode(blob.data).decode()))
    # The options asked for, echoed as OpenAI does.
    options = spec.options
    answer = ImagesResponse(
        created=int(task.created_at),
        data=data,
        background=given(options.get("background")),
        output_format=given(options.get("output_format")),
        quality=given(options.get("quality")),
        size=given(options.get("size")),
    )
    return json_response(answer)


def _digits(value: str | None) -> bool:
    # ASCII only: str.isdigit() also takes "³", which int() then refuses.
    return value is not None and value.isascii() and value.isdigit()


def _bad(field: str, message: str) -> Invalid:
    return invalid(field, message, "invalid_request_error")


def _openai_error(exc: HubError) -> Response:
    param = exc.field.removeprefix("input.") if exc.field is not None else None
    status = errors.status_of(exc)
    status = 400 if status == 422 else status
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = _CODES.get(status) or (exc.code if exc.code != kind else None)
    response = _error(status, exc.message, kind, param, code)
    response.headers.update(errors.headers_of(exc))
    return response


def _error(status: int, message: str, kind: str, param: str | None, code: str | None) -> Response:
    return json_response(OpenAIError(OpenAIErrorDetail(message, kind, param, code)), status)
