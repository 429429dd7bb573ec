"""Eachlabs emulator: always-async predictions, polling, webhooks with a secret.

Real base URL https://api.eachlabs.ai. ``POST /v1/prediction`` (and with a trailing
slash) takes ``{"model": "openai-image-edit", "input": {...}, "webhook_url",
"webhook_secret"}`` and answers ``{"status": "success", "message", "predictionID"}``;
``GET /v1/prediction/{id}`` moves through created -> starting -> processing -> success |
error, with ``output`` the URL of an image this emulator serves under ``/files/``. The
webhook is sent once per terminal state, up to 3 attempts ``callback_retry_delay`` apart,
each byte-identical. Its secret goes in plain text in ``X-Webhook-Secret`` (their main
branch's docs; ``eachlabs_webhook_signing="hmac"`` adds the HMAC signature and timestamp
of the unmerged page). 60 predictions a minute are enforced with 429 and
``Retry-After``; 10 unfinished predictions per key with a 429 that has none, as their
``errors.mdx`` says. Every accepted prediction is billed (the ledger); ``POST
/v1/prediction/{id}/cancel`` stops one. ``metrics.cost`` (USD, get-prediction.mdx) is
what a prediction that succeeded cost, in the prediction and the legacy webhook body (the
current body has no metrics), and is the ``cost_usd`` the ledger records for it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.sandbox import validation as v
from hub.sandbox.delivery import Delivery, DeliveryLog
from hub.sandbox.faults import SUBMIT_FAULTS, FaultKind, FaultQueue, fault_routes, job_faults
from hub.sandbox.images import EditSpec, ImageError
from hub.sandbox.inputs import InputError
from hub.sandbox.ledger import Ledger, ledger_routes
from hub.sandbox.runtime import CutResponse, Runtime
from hub.sandbox.signing import eachlabs_headers
from hub.sandbox.state import BoundedMap, SlidingWindow
from hub.sandbox.validation import ApiError
from hub.sandbox.wire import (
    bearer_token,
    files_route,
    iso,
    json_bytes,
    key_owner,
    mount_url,
    new_id,
    read_json_object,
    unix_now,
)

MODEL = "openai-image-edit"
SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
QUALITIES = ("auto", "low", "medium", "high")
BACKGROUNDS = ("auto", "transparent", "opaque")
MAX_IMAGES = 16
RATE_LIMIT_MESSAGE = "Rate limit exceeded. Please retry after 60 seconds."
IN_FLIGHT_MESSAGE = (
    "Too many predictions in progress: at most {limit} unfinished at once. Wait for one to finish."
)
WEBHOOK_ATTEMPTS = 3
ACTIVE = frozenset({"created", "starting", "processing"})
# USD per image at 1024x1024, as OpenAI prices gpt-image-1 (auto billed as medium).
COST: Mapping[str, float] = MappingProxyType(
    {"low": 0.011, "medium": 0.042, "high": 0.167, "auto": 0.042}
)
_IMAGE_KEY = re.compile(r"image_url_(\d+)")


class _Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Prediction:
    id: str
    input: dict[str, Any]
    urls: list[str]
    mask_url: str | None
    spec: EditSpec
    quality: str
    webhook_url: str | None
    webhook_secret: str | None
    mount: str
    owner: str = ""
    status: str = "created"
    output: Any = None
    logs: str | None = None
    started: float = field(default_factory=time.monotonic)
    predict_time: float | None = None
    webhook: DeliveryLog | None = None


class EachlabsEmulator:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.faults = FaultQueue()
        self.ledger = Ledger()
        self._predictions: BoundedMap[str, Prediction] = BoundedMap()
        self._active: set[str] = set()
        self._window = SlidingWindow(runtime.settings.eachlabs_rate_limit)
        self.app = Starlette(
            routes=[
                Route("/v1/prediction", self._create, methods=["POST"]),
                Route("/v1/prediction/", self._create, methods=["POST"]),
                Route("/v1/prediction/{id}", self._get, methods=["GET"]),
                Route("/v1/prediction/{id}/cancel", self._cancel, methods=["POST"]),
                Route("/v1/webhooks/{id}", self._webhook_history, methods=["GET"]),
                files_route(runtime.files),
                *fault_routes(self.faults),
                *ledger_routes(self.ledger),
            ],
            exception_handlers={ApiError: self._api_error, HTTPException: self._http_error},
        )

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        body = {"error": exc.message}
        if exc.detail:
            body["details"] = exc.detail
        return JSONResponse(body, exc.status, headers=exc.headers)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, exc.status_code)

    def _authorize(self, request: Request) -> str:
        style = self._rt.settings.eachlabs_auth
        key = request.headers.get("x-api-key") if style in ("both", "x-api-key") else None
        if not key and style in ("both", "bearer"):
            key = bearer_token(request)
        owner = key_owner(self._rt.settings, key)
        if owner is None:
            raise ApiError(401, "Invalid or missing API key")
        return owner

    def _rate_limited(self, retry_after: int) -> ApiError:
        return ApiError(429, RATE_LIMIT_MESSAGE, headers={"Retry-After": str(retry_after)})

    # -- create ----------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        owner = self._authorize(request)
        wait = self._window.acquire()
        if wait is not None:
            raise self._rate_limited(wait)
        limit = self._rt.settings.eachlabs_max_concurrent
        # A record evicted from the bounded map can no longer finish or be cancelled.
        self._active = {key for key in self._active if self._predictions.get(key) is not None}
        if limit and self._in_flight(owner) >= limit:
            # Predictions in flight, not calls; and no Retry-After (errors.mdx).
            raise ApiError(429, IN_FLIGHT_MESSAGE.format(limit=limit))
        fault = self.faults.take(SUBMIT_FAULTS)
        if fault is FaultKind.TOO_MANY_REQUESTS:
            raise self._rate_limited(60)
        if fault is FaultKind.SERVER_ERROR:
            raise ApiError(500, "Failed to create prediction")
        prediction = self._validate(await read_json_object(request), mount_url(request))
        prediction.owner = owner
        self._predictions.put(prediction.id, prediction)
        self._active.add(prediction.id)
        self.ledger.record(prediction.id, billed=True)
        fault = self.faults.take(job_faults(has_callback=prediction.webhook_url is not None))
        if fault is FaultKind.STALL:
            prediction.status = "processing"
        elif fault is FaultKind.CALLBACK_BEFORE_RESPONSE:
            await self._run(prediction, fault)
        else:
            self._rt.jobs.spawn(self._run(prediction, fault), name=f"eachlabs:{prediction.id}")
        if fault is FaultKind.HANG:
            await self._rt.hold(request)
        elif fault is FaultKind.RESET_AFTER_ACCEPT:
            return CutResponse()
        return JSONResponse(
            {
                "status": "success",
                "message": "Prediction created successfully",
                "predictionID": prediction.id,
            }
        )

    def _in_flight(self, owner: str) -> int:
        return sum(
            1
            for key in self._active
            if (found := self._predictions.get(key)) is not None and found.owner == owner
        )

    def _validate(self, body: dict[str, Any], mount: str) -> Prediction:
        model = body.get("model")
        if not model:
            raise ApiError(400, "model field is required")
        if model != MODEL:
            raise ApiError(404, "Model not found")
        raw = body.get("input")
        try:
            if not isinstance(raw, dict):
                raise v.invalid("input must be an object")
            return self._prediction(body, raw, mount)
        except ApiError as error:
            raise ApiError(400, "Invalid input for model", detail=error.message) from None

    def _prediction(self, body: dict[str, Any], raw: dict[str, Any], mount: str) -> Prediction:
        v.text(raw.get("prompt"), "prompt", max_length=32000)
        numbered: list[tuple[int, str]] = []
        for key, value in raw.items():
            match = _IMAGE_KEY.fullmatch(key)
            if match is None or value in (None, ""):
                continue
            index = int(match.group(1))
            if not 1 <= index <= MAX_IMAGES:
                raise v.invalid(f"{key} is not an input of {MODEL} (image_url_1..16)")
            numbered.append((index, v.http_url(value, key)))
        if not numbered:
            raise v.invalid("image_url_1 is required")
        mask = raw.get("mask_url")
        quality = v.choice(raw.get("quality"), "quality", QUALITIES, "auto")
        spec = EditSpec(
            size=v.choice(raw.get("image_size"), "image_size", SIZES, "auto"),
            background=v.choice(raw.get("background"), "background", BACKGROUNDS, "auto"),
            count=v.integer(raw.get("number_of_images"), "number_of_images", 1, 10, 1),
        )
        return Prediction(
            id=new_id(),
            input=raw,
            urls=[url for _, url in sorted(numbered)],
            mask_url=v.http_url(mask, "mask_url") if mask not in (None, "") else None,
            spec=spec,
            quality=quality,
            webhook_url=v.callback_url(body.get("webhook_url"), "webhook_url"),
            webhook_secret=v.optional_text(body.get("webhook_secret"), "webhook_secret"),
            mount=mount,
        )

    # -- the job ---------------------------------------------------------------------

    async def _run(self, prediction: Prediction, fault: FaultKind | None) -> None:
        try:
            prediction.status = "starting"
            sources = await self._rt.fetch_all(prediction.urls)
            mask_url = prediction.mask_url
            mask = (await self._rt.fetch_all([mask_url]))[0] if mask_url else None
            prediction.status = "processing"
            await self._rt.wait_latency()
            if fault is FaultKind.FAIL:
                raise _Failure(
                    "PROVIDER_REJECTED",
                    "The provider rejected this request (content safety; sandbox fault).",
                )
            images = await self._rt.render(sources, prediction.spec, mask)
        except InputError as error:
            code = "INPUT_DOWNLOAD_ERROR" if error.download else "INPUT_VALIDATION_ERROR"
            self._finish(prediction, "error", {"error_code": code, "error_message": error.message})
        except ImageError as error:
            output = {"error_code": "INPUT_VALIDATION_ERROR", "error_message": str(error)}
            self._finish(prediction, "error", output)
        except _Failure as failure:
            output = {"error_code": failure.code, "error_message": failure.message}
            self._finish(prediction, "error", output)
        else:
            urls = [self._rt.publish(image, prediction.mount) for image in images]
            self._finish(prediction, "success", urls[0] if len(urls) == 1 else urls)
        if prediction.status == "cancelled" or prediction.webhook_url is None:
            return
        if fault is not FaultKind.LOST_CALLBACK:
            await self._send_webhook(prediction, prediction.webhook_url, fault)

    def _finish(self, prediction: Prediction, status: str, output: Any) -> None:
        self._active.discard(prediction.id)
        if prediction.status == "cancelled":
            return
        prediction.status = status
        prediction.output = output
        prediction.predict_time = round(time.monotonic() - prediction.started, 3)
        if status == "success":
            self.ledger.record(prediction.id, billed=True, cost_usd=self._cost(prediction))
        if status == "error":
            prediction.logs = f"Error: {output['error_message']}"

    async def _send_webhook(
        self, prediction: Prediction, url: str, fault: FaultKind | None
    ) -> None:
        body = json_bytes(self._webhook_body(prediction))
        headers: dict[str, str] = {}
        if prediction.webhook_secret and self._rt.settings.eachlabs_webhook_signing == "hmac":
            timestamp = str(int(unix_now()))
            headers = eachlabs_headers(prediction.webhook_secret, body, timestamp)
        elif prediction.webhook_secret:
            # Their docs' main branch: the secret itself, and no body signature.
            headers = {"X-Webhook-Secret": prediction.webhook_secret}
        delivery = Delivery(url, body, headers)
        prediction.webhook = DeliveryLog(delivery)
        for _ in range(2 if fault is FaultKind.DUPLICATE_CALLBACK else 1):
            await self._rt.deliver(
                delivery,
                attempts=WEBHOOK_ATTEMPTS,
                retry_delay=self._rt.settings.callback_retry_delay,
                log=prediction.webhook,
            )

    def _webhook_body(self, prediction: Prediction) -> dict[str, Any]:
        ok = prediction.status == "success"
        if self._rt.settings.eachlabs_webhook_shape == "legacy":
            if ok:
                return {
                    "id": prediction.id,
                    "status": "success",
                    "output": prediction.output,
                    "input": prediction.input,
                    "metrics": self._metrics(prediction),
                }
            return {
                "id": prediction.id,
                "status": "failed",
                "output": None,
                "input": prediction.input,
                "logs": prediction.logs,
            }
        if ok:
            first = (
                prediction.output if isinstance(prediction.output, str) else prediction.output[0]
            )
            output: Any = {"url": first}
        else:
            output = [{"id": "", "status": "", "output": "", "error": prediction.output}]
        return {
            "exec_id": prediction.id,
            "flow_id": None,
            "status": "succeeded" if ok else "failed",
            "output": output,
            "error": "",
        }

    # -- reads -----------------------------------------------------------------------

    def _find(self, request: Request, owner: str) -> Prediction:
        prediction = self._predictions.get(request.path_params["id"])
        # Another key's prediction does not exist for this one.
        if prediction is None or prediction.owner != owner:
            raise ApiError(404, "Prediction not found")
        return prediction

    def _cost(self, prediction: Prediction) -> float:
        """What a prediction that succeeded cost (USD), as ``metrics.cost`` and the ledger
        say; one that did not reports 0."""
        if prediction.status != "success":
            return 0
        return round(COST[prediction.quality] * prediction.spec.count, 4)

    def _metrics(self, prediction: Prediction) -> dict[str, Any]:
        return {"predict_time": prediction.predict_time, "cost": self._cost(prediction)}

    async def _get(self, request: Request) -> Response:
        prediction = self._find(request, self._authorize(request))
        base = f"{mount_url(request)}/v1/prediction/{prediction.id}"
        return JSONResponse(
            {
                "id": prediction.id,
                "input": prediction.input,
                "status": prediction.status,
                "output": prediction.output,
                "logs": prediction.logs,
                "metrics": self._metrics(prediction),
                "urls": {"cancel": f"{base}/cancel", "get": base},
            }
        )

    async def _cancel(self, request: Request) -> Response:
        prediction = self._find(request, self._authorize(request))
        if prediction.status not in ACTIVE:
            raise ApiError(400, f"Prediction is already {prediction.status}")
        prediction.status = "cancelled"
        self._active.discard(prediction.id)
        return JSONResponse({"status": "success", "message": "Prediction cancelled"})

    async def _webhook_history(self, request: Request) -> Response:
        owner = self._authorize(request)
        prediction = self._predictions.get(request.path_params["id"])
        if prediction is None or prediction.owner != owner or prediction.webhook is None:
            raise ApiError(404, "Webhook not found")
        log = prediction.webhook
        # The plaintext secret header is a credential: the history never shows it.
        headers = {k: val for k, val in log.delivery.headers.items() if k != "X-Webhook-Secret"}
        return JSONResponse(
            {
                "execution_id": prediction.id,
                "url": log.delivery.url,
                "request": json.loads(log.delivery.body),
                "headers": headers,
                "source": "prediction",
                "created_at": iso(log.created_at),
                "attempts": [
                    {
                        "status": "SUCCESS" if attempt.ok else "FAILED",
                        "status_code": attempt.status_code,
                        "response": attempt.response,
                        "error_message": attempt.error,
                        "created_at": iso(attempt.at),
                    }
                    for attempt in log.attempts
                ],
            }
        )
