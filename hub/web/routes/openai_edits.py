"""``POST /v1/images/edits``, as OpenAI's image edit API: the same multipart fields, the same
response and error shapes, so an OpenAI client pointed at the hub works unchanged.

The edit runs as a hub task on a provider (``provider`` field, else
``HUB_DEFAULT_PROVIDER``). Without ``callback_url`` the request waits for the task and
answers with the images as base64; with one (AceData's extension) it answers
``{"task_id"}`` at once and the hub later POSTs AceData's callback body there, through
the webhook outbox (so with retries, and signed as well).

``Idempotency-Key`` works as on ``POST /v1/tasks`` (``hub.tasks.idempotency``), the request
told by its fields and file bytes. A repeat while the first request still waits for its
task waits for the same task, and gets the same answer. The wait is bounded by
``HUB_OPENAI_WAIT_SECONDS`` (540 s, below the SDK's 600 s timeout) and by the client's own
``x-stainless-read-timeout``; past it, a 504 that is not kept, so a repeat with the key
waits again. What is answered once the task exists is in ``openai_answer``. ``usage`` is
all zeros: the providers report no tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from hub.blobs import records
from hub.blobs.images import image_type
from hub.bodies.multipart import MalformedForm, bounded_form
from hub.bodies.read import read_body
from hub.errors import HubError, Invalid, Malformed, NotFound, PaymentRequired, Unavailable, invalid
from hub.providers import PROVIDERS
from hub.providers.config import names
from hub.store.base import EventQuery, IdempotencyClaim, TaskRecord
from hub.streams.broker import SubscriptionClosed
from hub.tasks import idempotency, inputs
from hub.tasks.engine import new_id
from hub.tasks.idempotency import Replay
from hub.tasks.shapes import TaskRequest
from hub.web import errors
from hub.web.decode import convert
from hub.web.routes import openai_answer
from hub.web.routes.common import hub, json_response
from hub.web.routes.tasks import REPLAYED, idempotency_keys, image_sources
from hub.web.shapes import EditAccepted
from hub.web.state import HubState
from hub.webhooks import endpoints
from hub.webhooks.shapes import WebhookUrl

ROUTE = "POST /v1/images/edits"
MAX_KEPT_ANSWER = 64 * 1024
MAX_PARTS = 40
# Answered or ignored as OpenAI's own fields: accepted so that clients work unchanged.
IGNORED = {"model", "user", "moderation", "input_fidelity", "response_format", "partial_images"}
OPTIONS = ("size", "quality", "background", "output_format", "n")
_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}


async def edit(request: Request) -> Response:
    call = _Call()
    try:
        return await _edit(request, call)
    except HubError as exc:
        return _openai_error(exc, call)


class _Call:
    """What one request has done so far: once its task exists (made by it, or by an
    earlier request with its Idempotency-Key), no answer may invite a retry."""

    def __init__(self) -> None:
        self.task_made = False
        self.replayed = False

    def respond(self, answer: openai_answer.Answer) -> Response:
        headers = dict(openai_answer.NO_RETRY) if self.task_made else {}
        if self.replayed:
            headers[REPLAYED] = "true"
        return Response(answer.body, answer.status, headers, media_type="application/json")


async def _edit(request: Request, call: _Call) -> Response:
    state = hub(request)
    owner = state.owner(request)
    key = idempotency.checked_key(request.headers.get("idempotency-key"))
    fields, files = await _form(request, state)
    claim = None
    if key is not None:
        fingerprint = idempotency.form_fingerprint(ROUTE, fields, files)
        begun = await idempotency_keys(state).begin(owner, key, fingerprint)
        if not isinstance(begun, IdempotencyClaim):
            call.task_made = call.replayed = True
            if isinstance(begun, Replay):
                return call.respond(openai_answer.Answer(begun.status, begun.body))
            return await _again(request, state, call, key, begun.task_id, fields)
        claim = begun
    try:
        return await _new_edit(request, state, call, owner, key, claim, fields, files)
    except Exception:
        if claim is not None and not call.task_made:
            await idempotency_keys(state).release(claim)  # refused: the key is free again
        raise


async def _new_edit(
    request: Request,
    state: HubState,
    call: _Call,
    owner: str,
    key: str | None,
    claim: IdempotencyClaim | None,
    fields: dict[str, str],
    files: dict[str, list[bytes]],
) -> Response:
    fields, files = dict(fields), dict(files)
    route = names(fields.pop("provider", "") or _default_provider(state))
    provider: str | list[str] = route[0] if len(route) == 1 else route
    for name in IGNORED:
        fields.pop(name, None)
    if fields.pop("stream", "false").lower() not in ("false", "0"):
        raise _bad("stream", "streaming is not supported here; leave stream unset")
    compression = fields.pop("output_compression", None)
    if compression is not None and not (_digits(compression) and int(compression) <= 100):
        raise _bad("output_compression", "must be an integer from 0 to 100")
    callback_url = fields.pop("callback_url", None)
    if callback_url is not None:
        # Checked in full before anything is stored for the request.
        callback_url = endpoints.checked_url(
            convert(callback_url, WebhookUrl, root="callback_url"),
            "callback_url",
            allow_private=state.settings.loopback_allowed,
        )
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
    if compression is not None:
        task_input["output_compression"] = int(compression)
    asked = convert({"provider": provider, "input": task_input}, TaskRequest)
    spec = await inputs.parse(asked, state.engine.providers, image_sources(state, owner))
    task_id = new_id()
    engine = state.engine
    if callback_url is not None:
        # The endpoint exists before the task does, so its end cannot be missed.
        added = await endpoints.add(
            state.store, owner, [callback_url], task_id=task_id, format="acedata"
        )
        try:
            await engine.create(
                owner, spec.provider, None, spec.to_json(), task_id, claim, spec.fallbacks
            )
        except PaymentRequired:
            for endpoint in added:  # over budget: no task, so no callback either
                await state.store.delete_endpoint(endpoint.id)
            raise
        call.task_made = True
        return await _keep(state, call, owner, key, task_id, _accepted(task_id))
    async with state.broker.subscribe(EventQuery(task_id=task_id)) as subscription:
        task = await engine.create(
            owner, spec.provider, None, spec.to_json(), task_id, claim, spec.fallbacks
        )
        call.task_made = True
        return await _wait(request, state, call, owner, key, task, subscription)


async def _again(
    request: Request,
    state: HubState,
    call: _Call,
    key: str,
    task_id: str,
    fields: dict[str, str],
) -> Response:
    """An earlier request with this key made the task and kept no answer (it is still
    waiting, or ended before answering): the same answer, from the same task."""
    task = await state.store.get_task(task_id)
    if task is None:  # gone with retention: the key outlived it
        raise NotFound("not_found", "the task made for this Idempotency-Key is no longer kept")
    if "callback_url" in fields:
        return await _keep(state, call, task.owner, key, task.id, _accepted(task.id))
    async with state.broker.subscribe(EventQuery(task_id=task.id)) as subscription:
        return await _wait(request, state, call, task.owner, key, task, subscription)


async def _wait(
    request: Request,
    state: HubState,
    call: _Call,
    owner: str,
    key: str | None,
    task: TaskRecord,
    subscription: Any,
) -> Response:
    budget = _wait_budget(request, state, task)
    ended = await _ended(state, task, subscription, budget)
    if ended is None:
        # Not kept: a repeat with the key waits for the same task again.
        return call.respond(openai_answer.wait_ran_out(task, budget))
    return await _keep(state, call, owner, key, task.id, await openai_answer.ended(state, ended))


async def _keep(
    state: HubState,
    call: _Call,
    owner: str,
    key: str | None,
    task_id: str,
    answer: openai_answer.Answer,
) -> Response:
    # A large answer (images as base64) is not copied into the key's record: a repeat
    # finds the key bound to the ended task and answers from it, the same bytes.
    if key is not None and len(answer.body) <= MAX_KEPT_ANSWER:
        await idempotency_keys(state).finish(owner, key, task_id, answer.status, answer.body)
    return call.respond(answer)


def _accepted(task_id: str) -> openai_answer.Answer:
    return openai_answer.Answer(200, bytes(json_response(EditAccepted(task_id)).body))


def _wait_budget(request: Request, state: HubState, task: TaskRecord) -> float:
    """How long this request waits for its task: HUB_OPENAI_WAIT_SECONDS (below the SDK's
    600 s), less if the client says its read timeout is shorter (the openai SDK sends
    ``x-stainless-read-timeout``): answering before it gives up is what keeps it from
    retrying into a second paid job. Never past the task's own deadline (and a margin)."""
    budget = state.settings.openai_wait_seconds
    read = _seconds(request.headers.get("x-stainless-read-timeout"))
    if read is not None:
        budget = min(budget, read - min(5.0, read / 10))
    return max(0.0, min(budget, task.deadline - time.time() + 5.0))


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds > 0 else None


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
                elif name == "provider" and name in fields:
                    fields[name] += f",{value}"  # repeated: providers to try, in order
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


async def _ended(
    state: HubState, task: TaskRecord, subscription: Any, budget: float
) -> TaskRecord | None:
    """The task once it has ended (its terminal event, or the store if it ended before
    anything was awaited here), or None if ``budget`` seconds went by first. The task
    itself is durable: a client that gives up waiting leaves it running."""
    current = await state.store.get_task(task.id)
    if current is not None and current.terminal:
        return current  # however little time is left: an ended task is answered
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(budget):
            while True:
                try:
                    await subscription.wait(None)
                except SubscriptionClosed:
                    raise Unavailable("server_error", "the hub is shutting down") from None
                subscription.drain()
                current = await state.store.get_task(task.id)
                if current is not None and current.terminal:
                    return current
    return None


def _digits(value: str | None) -> bool:
    # ASCII only: str.isdigit() also takes "³", which int() then refuses.
    return value is not None and value.isascii() and value.isdigit()


def _bad(field: str, message: str) -> Invalid:
    return invalid(field, message, "invalid_request_error")


def _openai_error(exc: HubError, call: _Call) -> Response:
    param = exc.field.removeprefix("input.") if exc.field is not None else None
    status = errors.status_of(exc)
    # OpenAI answers bad input with a 400; a reused Idempotency-Key stays the 422 it is.
    status = 400 if status == 422 and exc.code != "idempotency_key_reused" else status
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = _CODES.get(status) or (exc.code if exc.code != kind else None)
    response = call.respond(openai_answer.error(status, exc.message, kind, param, code))
    response.headers.update(errors.headers_of(exc))
    return response
