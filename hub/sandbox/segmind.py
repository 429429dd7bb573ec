"""Segmind emulator: v1 answers with raw image bytes; v2 is queued and polled.

Real base URL https://api.segmind.com. The key goes in ``x-api-key`` only; the same key
as a Bearer token is refused with 401. ``POST /v1/gpt-image-1-edit`` holds the request
for the latency and answers with the image itself (Content-Type from ``output_format``)
and the accounting headers. ``POST /v2/gpt-image-1-edit`` answers at once with a
request id and poll URLs; a failed v2 request answers 422 ``{"status": "FAILED"}`` on
its result URL. What a job cost is ``x-cost`` (v1) or ``metrics.cost`` (v2), the figure
the ledger records for it. Segmind has no inference webhooks, so the callback faults do not apply.
Errors are ``{"error": "..."}``, except 405, which Segmind's gateway answers in HTML.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from hub.sandbox import validation as v
from hub.sandbox.faults import SUBMIT_FAULTS, FaultKind, FaultQueue, fault_routes, job_faults
from hub.sandbox.images import EditedImage, EditSpec, ImageError
from hub.sandbox.inputs import InputError
from hub.sandbox.ledger import Ledger, ledger_routes
from hub.sandbox.runtime import CutResponse, Runtime
from hub.sandbox.state import BoundedMap, SlidingWindow
from hub.sandbox.validation import ApiError
from hub.sandbox.wire import (
    bearer_token,
    files_route,
    iso,
    key_owner,
    media_type,
    mount_url,
    new_id,
    read_json_object,
    unix_now,
)

SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("png", "jpeg", "webp")
MAX_IMAGES = 16
REQUEST_TTL = 3600.0
START_CREDITS = 1000.0
# USD per call; the model page quotes about $0.14 for a typical (auto) edit.
COST: Mapping[str, float] = MappingProxyType(
    {"low": 0.03, "medium": 0.07, "high": 0.25, "auto": 0.14}
)
SUPPORTED_FAULTS = frozenset(
    {
        FaultKind.TOO_MANY_REQUESTS,
        FaultKind.SERVER_ERROR,
        FaultKind.HANG,
        FaultKind.STALL,
        FaultKind.RESET_AFTER_ACCEPT,
        FaultKind.FAIL,
    }
)
HTML_405 = (
    "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body>\r\n"
    "<center><h1>405 Not Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
INVALID_KEY = "Unauthorized. API key is invalid or may have expired. Please check your API key."


@dataclass(frozen=True)
class SegmindEdit:
    urls: list[str]
    mask_url: str | None
    spec: EditSpec
    quality: str
    prompt: str


@dataclass
class SegmindRequest:
    id: str
    edit: SegmindEdit
    mount: str
    owner: str = ""
    status: str = "QUEUED"
    output: str | None = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    queue_time: float | None = None
    inference_time: float | None = None
    cost: float = 0.0


class SegmindEmulator:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.faults = FaultQueue(SUPPORTED_FAULTS)
        self.ledger = Ledger()
        self._requests: BoundedMap[str, SegmindRequest] = BoundedMap()
        self._window = SlidingWindow(runtime.settings.segmind_rate_limit)
        self._credits = START_CREDITS
        self.app = Starlette(
            routes=[
                Route("/v1/gpt-image-1-edit", self._sync, methods=["POST"]),
                Route("/v2/gpt-image-1-edit", self._submit, methods=["POST"]),
                Route("/v2/requests/{id}/status", self._status, methods=["GET"]),
                Route("/v2/requests/{id}", self._result, methods=["GET"]),
                Route("/v1/requests/{id}", self._result, methods=["GET"]),
                files_route(runtime.files),
                *fault_routes(self.faults),
                *ledger_routes(self.ledger),
            ],
            exception_handlers={ApiError: self._api_error, HTTPException: self._http_error},
        )

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        message = f"{exc.message}: {exc.detail}" if exc.detail else exc.message
        return JSONResponse({"error": message}, exc.status, headers=exc.headers)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return HTMLResponse(HTML_405, 405)
        return JSONResponse({"error": exc.detail}, exc.status_code)

    def _authorize(self, request: Request) -> str:
        key = request.headers.get("x-api-key")
        if not key and bearer_token(request) is None:
            raise ApiError(401, "Missing Authorization or x-api-key in header")
        # A Bearer token alone is refused like a bad key: the gateway reads x-api-key only.
        owner = key_owner(self._rt.settings, key)
        if owner is None:
            raise ApiError(401, INVALID_KEY)
        return owner

    async def _admit(self, request: Request) -> SegmindEdit:
        """Everything a POST goes through before any work: key, limits, faults, input."""
        request.state.owner = self._authorize(request)
        if self._window.acquire() is not None:
            raise ApiError(429, "Rate limit exceeded. Please try again later.")
        fault = self.faults.take(SUBMIT_FAULTS)
        if fault is FaultKind.TOO_MANY_REQUESTS:
            raise ApiError(429, "Rate limit exceeded. Please try again later.")
        if fault is FaultKind.SERVER_ERROR:
            raise ApiError(500, "Internal Server Error")
        if media_type(request) != "application/json":
            raise ApiError(406, "Invalid content type")
        return self._validate(await read_json_object(request))

    def _validate(self, body: dict[str, Any]) -> SegmindEdit:
        urls = body.get("image_urls")
        if not isinstance(urls, list) or not urls:
            raise v.invalid("image_urls is required and must be a non-empty list")
        if len(urls) > MAX_IMAGES:
            raise v.invalid(f"image_urls takes at most {MAX_IMAGES} images")
        prompt = v.text(body.get("prompt"), "prompt", max_length=32000)
        mask = body.get("mask")
        output_format = v.choice(body.get("output_format"), "output_format", FORMATS, "png")
        background = v.choice(
            body.get("background"), "background", ("transparent", "opaque"), "opaque"
        )
        if background == "transparent" and output_format == "jpeg":
            raise v.invalid("transparent background requires output_format png or webp")
        v.choice(body.get("moderation"), "moderation", ("low", "auto"), "auto")
        return SegmindEdit(
            urls=[v.http_url(url, "image_urls") for url in urls],
            mask_url=v.http_url(mask, "mask") if mask not in (None, "") else None,
            spec=EditSpec(
                size=v.choice(body.get("size"), "size", SIZES, "auto"),
                output_format=output_format,
                background=background,
                compression=v.integer(
                    body.get("output_compression"), "output_compression", 1, 100, 100
                ),
            ),
            quality=v.choice(body.get("quality"), "quality", QUALITIES, "auto"),
            prompt=prompt,
        )

    async def _edit(self, edit: SegmindEdit) -> EditedImage:
        """Fetch, wait and render; input problems raise ApiError(400)."""
        try:
            sources = await self._rt.fetch_all(edit.urls)
            mask = (await self._rt.fetch_all([edit.mask_url]))[0] if edit.mask_url else None
            await self._rt.wait_latency()
            return (await self._rt.render(sources, edit.spec, mask))[0]
        except InputError as error:
            raise v.invalid(f"Unable to read image_urls: {error.message}") from None
        except ImageError as error:
            raise v.invalid(str(error)) from None

    def _charge(self, edit: SegmindEdit) -> float:
        """The job's cost (USD): what ``x-cost``, ``metrics.cost`` and the ledger say."""
        cost = COST[edit.quality]
        self._credits = max(0.0, self._credits - cost)
        return cost

    # -- v1: the image is the response -----------------------------------------------

    async def _sync(self, request: Request) -> Response:
        edit = await self._admit(request)
        fault = self.faults.take(job_faults(has_callback=False))
        job_id = new_id()
        # Accepted; billed only if it completes with a 200 ("only 200s are billed").
        self.ledger.record(job_id, billed=False)
        if fault is FaultKind.STALL:
            await self._rt.hang(request)
            raise ApiError(504, "Gateway Timeout")
        started = time.monotonic()

        async def complete() -> tuple[EditedImage, float]:
            image = await self._edit(edit)
            if fault is FaultKind.FAIL:
                raise ApiError(406, "Insufficient credits")
            # The 200 is decided here: billed, whether or not the caller is still there.
            cost = self._charge(edit)
            self.ledger.record(job_id, billed=True, cost_usd=cost)
            return image, cost

        image, cost = await self._rt.finish(complete(), name=f"segmind:{job_id}")
        if fault is FaultKind.HANG:
            await self._rt.hold(request)
        elif fault is FaultKind.RESET_AFTER_ACCEPT:
            return CutResponse()
        headers = {
            "x-cost": f"{cost:.4f}",
            "x-remaining-credits": f"{self._credits:.4f}",
            "x-generation-time": f"{time.monotonic() - started:.3f}",
            "x-seed-value": str(int(hashlib.sha256(edit.prompt.encode()).hexdigest()[:8], 16)),
            "x-request-id": job_id,
            "x-rate-limit-reset-at-utc": str(iso(unix_now() + 60)),
        }
        remaining = self._window.remaining()
        if remaining is not None:
            headers["x-rate-limit-remaining"] = str(remaining)
        return Response(image.data, media_type=image.content_type, headers=headers)

    # -- v2: queued, polled ----------------------------------------------------------

    async def _submit(self, request: Request) -> Response:
        edit = await self._admit(request)
        mount = mount_url(request)
        job = SegmindRequest(new_id(), edit, mount, owner=request.state.owner)
        self._requests.put(job.id, job)
        self.ledger.record(job.id, billed=False)
        fault = self.faults.take(job_faults(has_callback=False))
        if fault is FaultKind.STALL:
            job.status = "PROCESSING"
        else:
            self._rt.jobs.spawn(self._run(job, fault), name=f"segmind:{job.id}")
        if fault is FaultKind.HANG:
            await self._rt.hold(request)
        elif fault is FaultKind.RESET_AFTER_ACCEPT:
            return CutResponse()
        return JSONResponse(
            {
                "request_id": job.id,
                "status": "QUEUED",
                "poll_url": f"{mount}/v1/requests/{job.id}",
                "status_url": f"{mount}/v2/requests/{job.id}/status",
                "response_url": f"{mount}/v2/requests/{job.id}",
            }
        )

    async def _run(self, job: SegmindRequest, fault: FaultKind | None) -> None:
        job.status = "PROCESSING"
        job.queue_time = round(time.monotonic() - job.created, 3)
        started = time.monotonic()
        try:
            image = await self._edit(job.edit)
        except ApiError as error:
            job.status, job.error = "FAILED", error.message
        else:
            if fault is FaultKind.FAIL:
                job.status, job.error = "FAILED", "The model failed to process the request"
            else:
                job.output = self._rt.publish(image, job.mount)
                job.cost = self._charge(job.edit)
                job.status = "COMPLETED"
                self.ledger.record(job.id, billed=True, cost_usd=job.cost)
        job.inference_time = round(time.monotonic() - started, 3)

    def _find(self, request: Request) -> SegmindRequest:
        owner = self._authorize(request)
        job = self._requests.get(request.path_params["id"])
        # Request records expire after an hour; another key's do not exist for this one.
        if job is None or job.owner != owner or time.monotonic() - job.created > REQUEST_TTL:
            raise ApiError(404, "Request not found")
        return job

    async def _status(self, request: Request) -> Response:
        job = self._find(request)
        metrics = {} if job.inference_time is None else {"inference_time": job.inference_time}
        return JSONResponse({"status": job.status, "request_id": job.id, "metrics": metrics})

    async def _result(self, request: Request) -> Response:
        job = self._find(request)
        if job.status not in ("COMPLETED", "FAILED"):
            return JSONResponse({"status": job.status, "request_id": job.id, "metrics": {}})
        timing = {
            "inference_time": job.inference_time,
            "queue_time": job.queue_time,
            "total_time": round((job.queue_time or 0) + (job.inference_time or 0), 3),
        }
        if job.status == "FAILED":
            # Failures are not billed, so the billing fields are absent.
            return JSONResponse(
                {"status": "FAILED", "request_id": job.id, "error": job.error, "metrics": timing},
                status_code=422,
            )
        return JSONResponse(
            {
                "status": "COMPLETED",
                "request_id": job.id,
                "output": job.output,
                "metrics": {**timing, "cost": job.cost, "remaining_credits": self._credits},
            }
        )
