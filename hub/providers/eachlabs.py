"""Eachlabs (model ``openai-image-edit``): always async, a webhook plus polling.

``POST /v1/prediction`` answers ``{"status": "success", "predictionID"}``; the result
arrives as one POST to ``webhook_url`` when the prediction ends, and
``GET /v1/prediction/{id}`` is the fallback when it does not.

Quirks handled here:
- Inputs are 16 numbered fields (``image_url_1`` .. ``image_url_16``), not an array,
  given by URL; the model has no ``output_format`` field, so that option is not sent.
- The key goes in ``X-API-Key``, as the seed and the API overview show (newer pages show
  ``Authorization: Bearer``; the API takes both).
- Polling says created|starting|processing, then success|error|cancelled (an older
  page says ``failed``); the webhook says succeeded|failed instead.
- A successful ``output`` is a URL string, a list, or an object with ``url``.
- Two webhook shapes are documented: the current one (``exec_id``, ``succeeded`` |
  ``failed``, ``output: {"url"}`` or a list of step results with ``error``) and the older
  one (``id``, ``success`` | ``failed``, ``output`` a string, ``logs``). Both are read.
- With a ``webhook_secret`` the webhook is signed: ``X-Webhook-Signature: sha256=<hex
  HMAC-SHA256(secret, "<X-Webhook-Timestamp>.<raw body>")>``. Retries reuse the same
  timestamp, so the 5-minute window covers the documented 3 attempts 10 s apart.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from hub.providers.base import CallbackRejected, EditRequest, Outcome, Output, ProviderConfig
from hub.providers.http import (
    ProviderHTTP,
    header,
    is_http_url,
    load_json_object,
    url_output,
)

MODEL = "openai-image-edit"
VERSION = "0.0.1"
MAX_IMAGES = 16
SIGNATURE_TOLERANCE = 300.0
PENDING = frozenset({"created", "starting", "processing", "queued"})
SUCCEEDED = frozenset({"success", "succeeded"})
FAILED = frozenset({"error", "failed", "cancelled", "canceled"})


class Eachlabs:
    name = "eachlabs"
    supports_callback = True
    max_n = 1

    def __init__(
        self,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = ProviderHTTP(config, client, {"X-API-Key": config.api_key})
        self._clock = clock

    def wants_callback(self, public_url: str) -> bool:
        return True

    async def submit(self, request: EditRequest) -> Outcome:
        if len(request.images) > MAX_IMAGES:
            raise self._http.error(f"takes at most {MAX_IMAGES} input images")
        inputs: dict[str, object] = {"prompt": request.prompt}
        for number, image in enumerate(request.images, start=1):
            inputs[f"image_url_{number}"] = image.url
        options = {
            "mask_url": request.mask.url if request.mask is not None else None,
            "image_size": request.size,
            "quality": request.quality,
            "background": request.background,
            "number_of_images": request.n,
        }
        inputs.update({key: value for key, value in options.items() if value is not None})
        payload: dict[str, object] = {"model": MODEL, "version": VERSION, "input": inputs}
        if request.callback_url is not None:
            payload["webhook_url"] = request.callback_url
            if request.callback_secret:
                payload["webhook_secret"] = request.callback_secret
        body = await self._http.json("POST", "/v1/prediction", json=payload)
        prediction_id = body.get("predictionID")
        if not isinstance(prediction_id, str) or not prediction_id:
            message = body.get("message") or body.get("error") or "no predictionID"
            raise self._http.error(f"did not create the prediction: {message}")
        return Outcome("pending", provider_task_id=prediction_id, detail={"status": "created"})

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        body = await self._http.json("GET", f"/v1/prediction/{quote(provider_task_id, safe='')}")
        status = str(body.get("status", "")).lower()
        detail: dict[str, object] = {"status": status}
        metrics = body.get("metrics")
        if isinstance(metrics, dict) and isinstance(metrics.get("predict_time"), int | float):
            detail["predict_time"] = metrics["predict_time"]
        if status in SUCCEEDED:
            return _succeeded(provider_task_id, body.get("output"), detail)
        if status in FAILED:
            error = _poll_error(status, body.get("output"), body.get("logs"))
            return Outcome("failed", provider_task_id, error=error, detail=detail)
        if status in PENDING:
            return Outcome("pending", provider_task_id, detail=detail)
        raise self._http.error(f"answered with an unknown prediction status {status!r}")

    async def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str | None
    ) -> Outcome:
        if secret:
            self._verify(headers, body, secret)
        value = load_json_object(body)
        if value is None:
            raise CallbackRejected(
                "not an Eachlabs webhook: expected a JSON object", reason="unreadable"
            )
        task_id = value.get("exec_id") or value.get("id")
        task = task_id if isinstance(task_id, str) and task_id else None
        status = str(value.get("status", "")).lower()
        detail: dict[str, object] = {"status": status}
        if status in SUCCEEDED:
            return _succeeded(task, value.get("output"), detail)
        if status in FAILED:
            return Outcome("failed", task, error=_webhook_error(value), detail=detail)
        raise CallbackRejected(
            f"Eachlabs webhook with unknown status {status!r}", reason="unreadable"
        )

    def _verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """The HMAC over the raw bytes, compared in constant time, then the timestamp."""
        signature = header(headers, "X-Webhook-Signature")
        timestamp = header(headers, "X-Webhook-Timestamp")
        if not signature or not timestamp:
            raise CallbackRejected("the Eachlabs webhook is not signed")
        scheme, _, digest = signature.strip().partition("=")
        try:
            sent_at = int(timestamp.strip())
        except ValueError:
            raise CallbackRejected("the Eachlabs webhook timestamp is not a number") from None
        message = timestamp.strip().encode() + b"." + body
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().encode()
        given = digest.strip().lower().encode()
        if scheme.strip().lower() != "sha256" or not hmac.compare_digest(expected, given):
            raise CallbackRejected("the Eachlabs webhook signature does not match")
        if abs(self._clock() - sent_at) > SIGNATURE_TOLERANCE:
            raise CallbackRejected("the Eachlabs webhook timestamp is too old (or in the future)")

    async def cancel(self, provider_task_id: str) -> bool:
        return False


def _succeeded(task: str | None, output: object, detail: Mapping[str, object]) -> Outcome:
    outputs = tuple(_outputs(output))
    if not outputs:
        return Outcome("failed", task, error="Eachlabs returned no image", detail=detail)
    return Outcome("succeeded", task, outputs=outputs, detail=detail)


def _outputs(value: object) -> list[Output]:
    """Images from an ``output`` that is a URL, a list of them, or objects with ``url``."""
    if isinstance(value, str):
        return [url_output(value)] if is_http_url(value) else []
    if isinstance(value, list):
        return [output for item in value for output in _outputs(item)]
    if isinstance(value, dict):
        return _outputs(value.get("url"))
    return []


def _error_text(error: object) -> str | None:
    """``CODE: message`` from ``{"error_code", "error_message"}``, or a plain string."""
    if isinstance(error, dict):
        code, message = error.get("error_code"), error.get("error_message")
        words = [str(part) for part in (code, message) if part]
        return ": ".join(words) if words else None
    if isinstance(error, str) and error.strip():
        return error.strip()
    return None


def _poll_error(status: str, output: object, logs: object) -> str:
    if status in ("cancelled", "canceled"):
        return "the prediction was cancelled at Eachlabs"
    return _error_text(output) or _error_text(logs) or "Eachlabs reported an error (no reason)"


def _webhook_error(value: Mapping[str, Any]) -> str:
    output = value.get("output")
    steps = output if isinstance(output, list) else [output]
    for step in steps:
        if isinstance(step, dict):
            text = _error_text(step.get("error")) or _error_text(step)
            if text:
                return text
    return (
        _error_text(value.get("error"))
        or _error_text(value.get("logs"))
        or "Eachlabs reported the prediction failed (no reason)"
    )
