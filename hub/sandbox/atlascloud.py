"""AtlasCloud emulator: async predictions with warm-up 404s, sync mode, uploads, and
Ed25519-signed webhooks with a JWKS.

Real base URL https://api.atlascloud.ai. ``POST /api/v1/model/generateImage`` takes flat
fields (or the same fields wrapped in ``"input"``) and answers ``{"code": 200, "data":
{"id", "status": "starting"}}``; ``GET /api/v1/model/prediction/{id}`` answers 404 for
``warmup`` seconds after the submit, then starting -> processing -> completed | failed.
A ``webhook_url`` must be https on a public host and at most 1024 characters, else 400
and no task (``allow_insecure_webhooks`` relaxes this for loopback tests). Errors are
``{"code": <http status>, "message"}``; 429 carries no Retry-After.
"""

from __future__ import annotations

import base64
import ipaddress
import mimetypes
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.sandbox import validation as v
from hub.sandbox.delivery import Delivery
from hub.sandbox.faults import SUBMIT_FAULTS, FaultKind, FaultQueue, fault_routes, job_faults
from hub.sandbox.images import MAX_IMAGE_BYTES, EditSpec, ImageError
from hub.sandbox.inputs import InputError
from hub.sandbox.ledger import Ledger, ledger_routes
from hub.sandbox.runtime import CutResponse, Runtime
from hub.sandbox.signing import Ed25519Signer, signed_message
from hub.sandbox.state import BoundedMap
from hub.sandbox.validation import ApiError
from hub.sandbox.wire import (
    bearer_token,
    files_route,
    iso,
    json_bytes,
    key_owner,
    media_type,
    mount_url,
    multipart_form,
    new_id,
    read_json_object,
    unix_now,
)

MODEL = "openai/gpt-image-1/edit"
SIZES = ("1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("low", "medium", "high")
MAX_WEBHOOK_URL = 1024
EVENT = "image.task.terminal"
REJECTED = "Your request was rejected by the safety system (sandbox fault)"
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


@dataclass
class AtlasPrediction:
    id: str
    image_url: str
    mask_url: str | None
    spec: EditSpec
    base64_output: bool
    webhook_url: str | None
    mount: str
    owner: str = ""
    status: str = "starting"
    outputs: list[str] = field(default_factory=list)
    error: str = ""
    submitted: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=unix_now)
    completed_at: float | None = None
    predict_time: float | None = None


def public_host(host: str) -> bool:
    """Whether a webhook host counts as publicly routable, judged without a DNS lookup."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        return "." in name and name != "localhost" and not name.endswith(_PRIVATE_SUFFIXES)
    return address.is_global and not address.is_multicast


class AtlasCloudEmulator:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.faults = FaultQueue()
        self.signer = Ed25519Signer()
        self.ledger = Ledger()
        self._predictions: BoundedMap[str, AtlasPrediction] = BoundedMap()
        self.app = Starlette(
            routes=[
                Route("/api/v1/model/generateImage", self._submit, methods=["POST"]),
                Route("/api/v1/model/prediction/{id}", self._get, methods=["GET"]),
                Route("/api/v1/model/uploadMedia", self._upload, methods=["POST"]),
                Route("/api/v1/webhooks/jwks.json", self._jwks, methods=["GET"]),
                files_route(runtime.files),
                *fault_routes(self.faults),
                *ledger_routes(self.ledger),
            ],
            exception_handlers={ApiError: self._api_error, HTTPException: self._http_error},
        )

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        message = f"{exc.message}: {exc.detail}" if exc.detail else exc.message
        return JSONResponse(
            {"code": exc.status, "message": message}, exc.status, headers=exc.headers
        )

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"code": exc.status_code, "message": exc.detail}, exc.status_code)

    def _authorize(self, request: Request) -> str:
        owner = key_owner(self._rt.settings, bearer_token(request))
        if owner is None:
            raise ApiError(401, "Unauthorized: invalid or missing API key")
        return owner

    @staticmethod
    def _ok(data: object) -> Response:
        return JSONResponse({"code": 200, "message": "success", "data": data})

    # -- submit ----------------------------------------------------------------------

    async def _submit(self, request: Request) -> Response:
        owner = self._authorize(request)
        fault = self.faults.take(SUBMIT_FAULTS)
        if fault is FaultKind.TOO_MANY_REQUESTS:
            raise ApiError(429, "Too many requests, please try again later")
        if fault is FaultKind.SERVER_ERROR:
            raise ApiError(500, "Internal server error")
        body = await read_json_object(request)
        wrapped = body.get("input")
        fields = {k: val for k, val in body.items() if k != "input"}
        if isinstance(wrapped, dict):
            fields.update(wrapped)
        sync = v.boolean(fields.get("enable_sync_mode"), "enable_sync_mode", False)
        prediction = self._validate(fields, mount_url(request))
        prediction.owner = owner
        self._predictions.put(prediction.id, prediction)
        # Accepted: a task Atlas bills ("they may create billable tasks").
        self.ledger.record(prediction.id, billed=True)
        fault = self.faults.take(job_faults(has_callback=prediction.webhook_url is not None))
        if sync:
            if fault is FaultKind.STALL:
                await self._rt.hang(request)
                raise ApiError(504, "Prediction timed out")
            await self._rt.finish(self._work(prediction, fault), name=f"atlas:{prediction.id}")
            if fault is FaultKind.CALLBACK_BEFORE_RESPONSE:
                await self._notify(prediction, fault)
            elif prediction.webhook_url is not None:
                self._rt.jobs.spawn(self._notify(prediction, fault), name=f"atlas:{prediction.id}")
            answer: Response = self._ok(self._view(prediction, prediction.mount))
        else:
            if fault is FaultKind.STALL:
                prediction.status = "processing"
            elif fault is FaultKind.CALLBACK_BEFORE_RESPONSE:
                await self._job(prediction, fault)
            else:
                self._rt.jobs.spawn(self._job(prediction, fault), name=f"atlas:{prediction.id}")
            answer = self._ok({"id": prediction.id, "status": "starting"})
        if fault is FaultKind.HANG:
            await self._rt.hold(request)
        elif fault is FaultKind.RESET_AFTER_ACCEPT:
            return CutResponse()
        return answer

    def _validate(self, fields: dict[str, Any], mount: str) -> AtlasPrediction:
        model = fields.get("model")
        if not model:
            raise v.invalid("model is required")
        if model != MODEL:
            raise v.invalid(f"model {model!r} is not supported")
        v.text(fields.get("prompt"), "prompt")
        image = fields.get("image")
        if isinstance(image, list):
            raise v.invalid("image must be a single URL string, not a list")
        mask = fields.get("mask_image")
        v.choice(fields.get("quality"), "quality", QUALITIES, "medium")
        # Absent size: the upstream default, which keeps the input's size.
        spec = EditSpec(size=v.choice(fields.get("size"), "size", SIZES, "auto"))
        return AtlasPrediction(
            id=new_id().replace("-", ""),
            image_url=v.http_url(image, "image"),
            mask_url=v.http_url(mask, "mask_image") if mask not in (None, "") else None,
            spec=spec,
            base64_output=v.boolean(
                fields.get("enable_base64_output"), "enable_base64_output", False
            ),
            webhook_url=self._webhook_url(fields.get("webhook_url")),
            mount=mount,
        )

    def _webhook_url(self, value: object) -> str | None:
        if value in (None, ""):
            return None
        url = v.text(value, "webhook_url", max_length=MAX_WEBHOOK_URL)
        insecure = self._rt.settings.allow_insecure_webhooks
        parts = urlsplit(url)
        if parts.scheme != "https" and not (insecure and parts.scheme == "http"):
            raise v.invalid("webhook_url must be an https URL")
        if not parts.hostname or not (insecure or public_host(parts.hostname)):
            raise v.invalid("webhook_url must point to a public host")
        return url

    # -- the job ---------------------------------------------------------------------

    async def _job(self, prediction: AtlasPrediction, fault: FaultKind | None) -> None:
        await self._work(prediction, fault)
        await self._notify(prediction, fault)

    async def _work(self, prediction: AtlasPrediction, fault: FaultKind | None) -> None:
        prediction.status = "processing"
        started = time.monotonic()
        try:
            sources = await self._rt.fetch_all([prediction.image_url])
            mask_url = prediction.mask_url
            mask = (await self._rt.fetch_all([mask_url]))[0] if mask_url else None
            await self._rt.wait_latency()
            failed = fault is FaultKind.FAIL
            images = [] if failed else await self._rt.render(sources, prediction.spec, mask)
        except (InputError, ImageError) as error:
            prediction.status = "failed"
            prediction.error = error.message if isinstance(error, InputError) else str(error)
        else:
            if failed:
                prediction.status, prediction.error = "failed", REJECTED
            else:
                prediction.outputs = [
                    base64.b64encode(image.data).decode("ascii")
                    if prediction.base64_output
                    else self._rt.publish(image, prediction.mount)
                    for image in images
                ]
                prediction.status = "completed"
        prediction.completed_at = unix_now()
        prediction.predict_time = round(time.monotonic() - started, 3)

    async def _notify(self, prediction: AtlasPrediction, fault: FaultKind | None) -> None:
        if prediction.webhook_url is None or fault is FaultKind.LOST_CALLBACK:
            return
        ok = prediction.status == "completed"
        body = json_bytes(
            {
                "session_id": prediction.id,
                "event_type": EVENT,
                "status": "OK" if ok else "ERROR",
                "created_at": int(unix_now() * 1000),
                "payload": self._view(prediction, prediction.mount),
                "error": None if ok else prediction.error,
            }
        )
        timestamp = str(int(unix_now()))
        headers = {
            "X-AtlasCloud-Webhook-Id": prediction.id,
            "X-AtlasCloud-Webhook-Event": EVENT,
            "X-AtlasCloud-Webhook-Timestamp": timestamp,
            "X-AtlasCloud-Webhook-Key-Id": self.signer.key_id,
            "X-AtlasCloud-Webhook-Signature-Ed25519": self.signer.sign(
                signed_message(timestamp, body)
            ),
        }
        delivery = Delivery(prediction.webhook_url, body, headers)
        for _ in range(2 if fault is FaultKind.DUPLICATE_CALLBACK else 1):
            await self._rt.deliver(delivery)

    # -- reads and uploads -----------------------------------------------------------

    def _view(self, prediction: AtlasPrediction, mount: str) -> dict[str, Any]:
        predict_time = prediction.predict_time
        return {
            "id": prediction.id,
            "model": MODEL,
            "status": prediction.status,
            "outputs": prediction.outputs,
            "urls": {"get": f"{mount}/api/v1/model/prediction/{prediction.id}"},
            "has_nsfw_contents": [False] * len(prediction.outputs),
            "error": prediction.error,
            "metrics": {} if predict_time is None else {"predict_time": predict_time},
            "created_at": iso(prediction.created_at),
            "completed_at": iso(prediction.completed_at),
        }

    async def _get(self, request: Request) -> Response:
        owner = self._authorize(request)
        prediction = self._predictions.get(request.path_params["id"])
        if prediction is not None and prediction.owner != owner:
            prediction = None  # another key's task does not exist for this one
        warming = (
            prediction is not None
            and time.monotonic() - prediction.submitted < self._rt.settings.warmup
        )
        if prediction is None or warming:
            # During warm-up the real API cannot find a task it has just accepted.
            raise ApiError(404, "Prediction not found")
        return self._ok(self._view(prediction, mount_url(request)))

    async def _upload(self, request: Request) -> Response:
        self._authorize(request)
        if media_type(request) != "multipart/form-data":
            raise v.invalid("expected multipart/form-data with a file field")
        async with multipart_form(request, MAX_IMAGE_BYTES + 64 * 1024) as form:
            upload = next(
                (
                    f
                    for name, f in form.multi_items()
                    if name == "file" and isinstance(f, UploadFile)
                ),
                None,
            )
            data = await upload.read() if upload is not None else b""
        if upload is None or not data:
            raise v.invalid("file is required")
        filename = (upload.filename or "upload").rsplit("/", 1)[-1]
        guessed = mimetypes.guess_type(filename)[0]
        media = upload.content_type or guessed or "application/octet-stream"
        extension = filename.rsplit(".", 1)[-1] if "." in filename else ""
        url = f"{mount_url(request)}/files/{self._rt.files.put(data, media, extension)}"
        size = len(data)
        if self._rt.settings.atlas_upload_shape == "seed":
            return JSONResponse(
                {
                    "data": {
                        "download_url": url,
                        "file_name": filename,
                        "content_type": media,
                        "size": size,
                    }
                }
            )
        return self._ok({"download_url": url, "filename": filename, "size": size})

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.signer.jwks(), headers={"Cache-Control": "public, max-age=300"})
