"""AceData Cloud emulator: OpenAI-compatible image edits, callback mode, task lookup.

Real base URL https://api.acedata.cloud. ``POST /v1/images/edits`` (also under
``/openai``) answers ``{"created", "data": [{"b64_json"}]}`` after the latency, or, when
``callback_url`` is given, ``{"task_id"}`` at once and one unsigned POST to the callback
later. ``POST /openai/tasks`` looks up callback-mode tasks; a task is finished when it
has ``response`` (there is no status field). Every answer carries ``x-request-id``, which
equals the body's ``trace_id``. Error codes follow AceData's SDK: bad_request,
api_not_implemented, invalid_token, too_many_requests, api_error.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.sandbox import validation as v
from hub.sandbox.delivery import Delivery
from hub.sandbox.faults import SUBMIT_FAULTS, FaultKind, FaultQueue, fault_routes, job_faults
from hub.sandbox.images import EditSpec, ImageError, inspect
from hub.sandbox.inputs import InputError
from hub.sandbox.ledger import Ledger, ledger_routes
from hub.sandbox.runtime import CutResponse, Runtime
from hub.sandbox.state import BoundedMap
from hub.sandbox.validation import ApiError
from hub.sandbox.wire import (
    MAX_JSON_BODY,
    MAX_MULTIPART_BODY,
    bearer_token,
    files_route,
    json_bytes,
    key_owner,
    media_type,
    mount_url,
    multipart_form,
    new_id,
    read_body,
    read_json_object,
    unix_now,
)

MODELS = ("gpt-image-1", "gpt-image-1.5", "gpt-image-2", "dall-e-2")
SIZES = ("1024x1024", "1536x1024", "1024x1536", "256x256", "512x512", "auto")
QUALITIES = ("auto", "high", "medium", "low", "standard")
BACKGROUNDS = ("transparent", "opaque", "auto")
FORMATS = ("png", "jpeg", "webp")
MAX_IMAGES = 16
MASK_LIMIT = 4 * 1024 * 1024
CODES: Mapping[int, str] = MappingProxyType(
    {
        400: "bad_request",
        401: "invalid_token",
        403: "used_up",
        404: "not_found",
        405: "method_not_allowed",
        413: "bad_request",
        429: "too_many_requests",
        504: "timeout",
    }
)


@dataclass
class EditRequest:
    model: str
    spec: EditSpec
    images: list[bytes]
    urls: list[str]
    mask: bytes | None
    callback_url: str | None
    as_url: bool
    echo: dict[str, Any]


@dataclass
class AceTask:
    id: str
    trace_id: str
    request: dict[str, Any]
    callback_url: str
    owner: str = ""
    created_at: float = field(default_factory=unix_now)
    object_id: str = field(default_factory=lambda: secrets.token_hex(12))
    finished_at: float | None = None
    response: dict[str, Any] | None = None


def _trace_id(request: Request) -> str:
    trace: str | None = getattr(request.state, "trace_id", None)
    if trace is None:
        trace = new_id()
        request.state.trace_id = trace
    return trace


class AceDataEmulator:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.faults = FaultQueue()
        self.ledger = Ledger()
        self._tasks: BoundedMap[str, AceTask] = BoundedMap()
        # Stable per sandbox, like the account a real token belongs to.
        self._identity = {
            "application_id": new_id(),
            "user_id": new_id(),
            "credential_id": new_id(),
        }
        self.app = Starlette(
            routes=[
                Route("/v1/images/edits", self._edits, methods=["POST"]),
                Route("/openai/images/edits", self._edits, methods=["POST"]),
                Route("/openai/tasks", self._task_query, methods=["POST"]),
                files_route(runtime.files),
                *fault_routes(self.faults),
                *ledger_routes(self.ledger),
            ],
            exception_handlers={ApiError: self._api_error, HTTPException: self._http_error},
        )

    # -- responses -------------------------------------------------------------------

    def _json(self, request: Request, body: object, status: int = 200) -> Response:
        return JSONResponse(body, status, headers={"x-request-id": _trace_id(request)})

    def _error(self, request: Request, error: ApiError) -> Response:
        body = {
            "success": False,
            "error": {"code": _code(error), "message": error.message},
            "trace_id": _trace_id(request),
        }
        return JSONResponse(
            body, error.status, headers={"x-request-id": _trace_id(request), **error.headers}
        )

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return self._error(request, exc)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self._error(request, ApiError(exc.status_code, exc.detail))

    def _authorize(self, request: Request) -> str:
        owner = key_owner(self._rt.settings, bearer_token(request))
        if owner is None:
            raise ApiError(401, "Invalid or missing token in Authorization header")
        return owner

    # -- edits -----------------------------------------------------------------------

    async def _edits(self, request: Request) -> Response:
        trace = _trace_id(request)
        owner = self._authorize(request)
        fault = self.faults.take(SUBMIT_FAULTS)
        if fault is FaultKind.TOO_MANY_REQUESTS:
            raise ApiError(429, "Too many requests, please slow down")
        if fault is FaultKind.SERVER_ERROR:
            raise ApiError(500, "Internal server error (sandbox fault)")
        edit = self._validate(*await self._parse(request))
        mount = mount_url(request)
        fault = self.faults.take(job_faults(has_callback=edit.callback_url is not None))
        if edit.callback_url is None:
            return await self._sync(request, edit, fault, mount, trace)
        task = AceTask(new_id(), trace, edit.echo, edit.callback_url, owner)
        self._tasks.put(task.id, task)
        # Accepted: AceData bills the task whatever its client sees next.
        self.ledger.record(task.id, billed=True)
        if fault is FaultKind.CALLBACK_BEFORE_RESPONSE:
            await self._complete(task, edit, fault, mount)
        elif fault is not FaultKind.STALL:
            self._rt.jobs.spawn(self._complete(task, edit, fault, mount), name=f"acedata:{task.id}")
        if fault is FaultKind.HANG:
            await self._rt.hold(request)
        elif fault is FaultKind.RESET_AFTER_ACCEPT:
            return CutResponse()
        return self._json(request, {"task_id": task.id})

    async def _sync(
        self, request: Request, edit: EditRequest, fault: FaultKind | None, mount: str, trace: str
    ) -> Response:
        """No callback: the request is held for the edit and answered with the images."""
        if fault is FaultKind.STALL:
            await self._rt.hang(request)
            raise ApiError(504, "The request timed out; use callback_url for long edits")

        async def produce() -> dict[str, Any]:
            body = await self._produce(edit, fault, mount)
            self.ledger.record(trace, billed=True)  # it ran: billed, seen or not
            return body

        body = await self._rt.finish(produce(), name=f"acedata:sync:{trace}")
        if fault is FaultKind.HANG:
            await self._rt.hold(request)
        elif fault is FaultKind.RESET_AFTER_ACCEPT:
            return CutResponse()
        return self._json(request, body)

    async def _parse(
        self, request: Request
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]], list[str], bytes | None]:
        """(text fields, uploaded images, image URLs, mask) from a multipart or JSON body."""
        if media_type(request) == "multipart/form-data":
            async with multipart_form(request, MAX_MULTIPART_BODY) as form:
                return await _form_edit(form)
        if media_type(request) == "application/x-www-form-urlencoded":
            # A form without files: valid fields, but it can carry no image.
            body = await read_body(request, MAX_JSON_BODY)
            return dict(parse_qsl(body.decode("utf-8", "replace"))), [], [], None
        if media_type(request) == "application/json":
            fields = await read_json_object(request)
            image = fields.pop("image", None)
            if fields.get("mask") is not None:
                raise v.invalid("mask is only supported with multipart file uploads")
            urls = [image] if isinstance(image, str) else image if image is not None else []
            if not isinstance(urls, list):
                raise v.invalid("image must be a URL or a list of URLs")
            return fields, [], [v.http_url(url, "image") for url in urls], None
        raise v.invalid("Content-Type must be multipart/form-data or application/json")

    def _validate(
        self,
        fields: dict[str, Any],
        images: list[tuple[str, bytes]],
        urls: list[str],
        mask: bytes | None,
    ) -> EditRequest:
        model = fields.get("model") or "gpt-image-1"
        if model not in MODELS:
            raise ApiError(
                400, f"model {model!r} is not supported by images/edits", code="api_not_implemented"
            )
        dalle = model == "dall-e-2"
        v.text(fields.get("prompt"), "prompt", max_length=1000 if dalle else 32000)
        count = len(images) + len(urls)
        if count == 0:
            raise v.invalid("image is required")
        if count > (1 if dalle else MAX_IMAGES):
            raise v.invalid(f"at most {1 if dalle else MAX_IMAGES} images are allowed for {model}")
        _check_uploads(model, [data for _, data in images], mask)
        output_format = v.choice(fields.get("output_format"), "output_format", FORMATS, "png")
        background = v.choice(fields.get("background"), "background", BACKGROUNDS, "auto")
        if background == "transparent" and output_format == "jpeg":
            raise v.invalid("transparent background requires output_format png or webp")
        v.choice(fields.get("quality"), "quality", QUALITIES, "auto")
        v.choice(fields.get("input_fidelity"), "input_fidelity", ("high", "low"), "low")
        v.integer(fields.get("partial_images"), "partial_images", 0, 3, 0)
        response_format = v.choice(
            fields.get("response_format"), "response_format", ("url", "b64_json"), "url"
        )
        n = v.integer(fields.get("n"), "n", 1, 10, 1)
        spec = EditSpec(
            size=v.choice(fields.get("size"), "size", SIZES, "1024x1024"),
            output_format=output_format,
            background=background,
            compression=v.integer(
                fields.get("output_compression"), "output_compression", 0, 100, 100
            ),
            # AceData's platform doc: n only takes effect for dall-e-2; GPT models return one.
            count=n if dalle else 1,
        )
        as_url = response_format == "url" if dalle else self._rt.settings.acedata_output == "url"
        echo = {**fields, "image": [name for name, _ in images] or urls}
        callback = v.callback_url(fields.get("callback_url"), "callback_url")
        return EditRequest(
            str(model), spec, [data for _, data in images], urls, mask, callback, as_url, echo
        )

    async def _produce(
        self, edit: EditRequest, fault: FaultKind | None, mount: str
    ) -> dict[str, Any]:
        """The images response body, or ApiError as the sync call would answer it."""
        sources = edit.images
        if edit.urls:
            try:
                sources = await self._rt.fetch_all(edit.urls)
            except InputError as error:
                if error.download:
                    raise ApiError(500, "fetch failed") from None
                raise v.invalid(error.message) from None
        await self._rt.wait_latency()
        if fault is FaultKind.FAIL:
            raise ApiError(500, "The image edit failed upstream (sandbox fault)")
        try:
            outputs = await self._rt.render(sources, edit.spec, edit.mask)
        except ImageError as error:
            raise v.invalid(str(error)) from None
        data = [
            {"url": self._rt.publish(image, mount)}
            if edit.as_url
            else {"b64_json": base64.b64encode(image.data).decode("ascii")}
            for image in outputs
        ]
        return {"created": int(unix_now()), "data": data}

    async def _complete(
        self, task: AceTask, edit: EditRequest, fault: FaultKind | None, mount: str
    ) -> None:
        head = {"task_id": task.id, "trace_id": task.trace_id}
        try:
            result = await self._produce(edit, fault, mount)
            task.response = {**result, "success": True}
            payload: dict[str, Any] = {"success": True, **head, "data": result}
        except ApiError as error:
            problem = {"code": _code(error), "message": error.message}
            task.response = {"success": False, "error": problem, "trace_id": task.trace_id}
            payload = {"success": False, **head, "error": problem}
        task.finished_at = unix_now()
        if fault is FaultKind.LOST_CALLBACK:
            return
        delivery = Delivery(task.callback_url, json_bytes(payload), {})
        for _ in range(2 if fault is FaultKind.DUPLICATE_CALLBACK else 1):
            await self._rt.deliver(delivery)

    # -- task lookup -----------------------------------------------------------------

    async def _task_query(self, request: Request) -> Response:
        owner = self._authorize(request)
        body = await read_json_object(request)
        action = body.get("action")
        # Only the key's own tasks exist for it: another's are "not found" ({}).
        own = [t for t in self._tasks.values() if t.owner == owner]
        if action == "retrieve":
            trace, task_id = body.get("trace_id"), body.get("id")
            found = [t for t in own if (t.trace_id == trace if trace else t.id == task_id)]
            return self._json(request, self._task_json(found[0]) if found else {})
        if action == "retrieve_batch":
            return self._json(request, self._batch(body, own))
        raise v.invalid("action must be retrieve or retrieve_batch")

    def _batch(self, body: dict[str, Any], tasks: list[AceTask]) -> dict[str, Any]:
        for key, attribute in (("ids", "id"), ("trace_ids", "trace_id")):
            if isinstance(body.get(key), list):
                tasks = [t for t in tasks if getattr(t, attribute) in body[key]]
        for key in ("application_id", "user_id"):
            if body.get(key) and body[key] != self._identity[key]:
                tasks = []
        if body.get("type") not in (None, "", "images_edits"):
            tasks = []
        low, high = body.get("created_at_min"), body.get("created_at_max")
        if isinstance(low, int | float):
            tasks = [t for t in tasks if t.created_at >= low]
        if isinstance(high, int | float):
            tasks = [t for t in tasks if t.created_at <= high]
        tasks.sort(key=lambda t: t.created_at, reverse=True)
        offset = v.integer(body.get("offset"), "offset", 0, 1_000_000, 0)
        limit = v.integer(body.get("limit"), "limit", 1, 100, 12)
        page = tasks[offset : offset + limit]
        return {"items": [self._task_json(t) for t in page], "count": len(tasks)}

    def _task_json(self, task: AceTask) -> dict[str, Any]:
        data: dict[str, Any] = {
            "_id": task.object_id,
            "id": task.id,
            "trace_id": task.trace_id,
            "type": "images_edits",
            **self._identity,
            "created_at": task.created_at,
            "request": task.request,
        }
        if task.response is not None and task.finished_at is not None:
            data["finished_at"] = task.finished_at
            data["duration"] = round(task.finished_at - task.created_at, 3)
            data["response"] = task.response
        return data


async def _form_edit(
    form: FormData,
) -> tuple[dict[str, Any], list[tuple[str, bytes]], list[str], bytes | None]:
    items = form.multi_items()
    if any(isinstance(value, str) for name, value in items if name in ("image", "image[]", "mask")):
        raise v.invalid("image and mask must be uploaded as files")
    fields: dict[str, Any] = {name: value for name, value in items if isinstance(value, str)}
    files = [(name, value) for name, value in items if isinstance(value, UploadFile)]
    images = [
        (upload.filename or "image", await upload.read())
        for name, upload in files
        if name in ("image", "image[]")
    ]
    mask = next((upload for name, upload in files if name == "mask"), None)
    return fields, images, [], await mask.read() if mask is not None else None


def _check_uploads(model: str, images: list[bytes], mask: bytes | None) -> None:
    """Uploaded files must be real images, and a mask must fit the first image."""
    try:
        infos = [inspect(data, f"image {i}") for i, data in enumerate(images, start=1)]
        mask_info = inspect(mask, "mask") if mask is not None else None
    except ImageError as error:
        raise v.invalid(str(error)) from None
    first = infos[0] if infos else None
    if model == "dall-e-2" and first is not None:
        square_png = first.format == "PNG" and first.width == first.height
        if not square_png or len(images[0]) >= MASK_LIMIT:
            raise v.invalid("dall-e-2 takes one square PNG image under 4 MB")
    if mask is None or mask_info is None:
        return
    if mask_info.format != "PNG" or not mask_info.has_alpha or len(mask) >= MASK_LIMIT:
        raise v.invalid("mask must be a PNG under 4 MB with an alpha channel")
    if first is not None and (mask_info.width, mask_info.height) != (first.width, first.height):
        raise v.invalid("mask must have the same dimensions as the first image")


def _code(error: ApiError) -> str:
    return error.code or CODES.get(error.status, "api_error")
