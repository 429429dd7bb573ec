"""Eachlabs (model ``openai-image-edit``): always async, a webhook plus polling.

``POST /v1/prediction`` answers ``{"status": "success", "predictionID"}``; the result
arrives as one POST to ``webhook_url`` when the prediction ends, and
``GET /v1/prediction/{id}`` is the fallback when it does not.

Quirks handled here:
- Inputs are 16 numbered fields (``image_url_1`` .. ``image_url_16``), not an array,
  given by URL; the model has no ``output_format`` or ``output_compression`` field, so
  those options are not sent. ``number_of_images`` (1-10) makes n images in one call.
- The key goes in ``Authorization: Bearer``, the only form the current docs show
  (Corrections: ``X-API-Key`` "stays functional but undocumented").
- Polling says created|starting|processing, then success|error|cancelled (an older
  page says ``failed``); the webhook says succeeded|failed instead.
- A successful ``output`` is a URL string, a list, or an object with ``url``; every image
  is kept, in order.
- Two webhook shapes are documented: the current one (``exec_id``, ``succeeded`` |
  ``failed``, ``output: {"url"}`` or a list of step results with ``error``) and the older
  one (``id``, ``success`` | ``failed``, ``output`` a string, ``logs``). Both are read.
- The webhook secret: their docs' main branch sends it in plain text in
  ``X-Webhook-Secret`` and signs nothing (Corrections); an unmerged page adds
  ``X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Webhook-Timestamp>.<raw
  body>")>``. The plain secret is compared in constant time; the HMAC, where present, is
  checked too (retries reuse the timestamp: the 5-minute window covers 3 attempts).
- ``POST /v1/prediction/{id}/cancel`` (``urls.cancel`` in the prediction) stops a job.
- What a job cost: ``metrics.cost``, "Cost in USD" (get-prediction.mdx, Response Fields,
  eachlabs/mintlify-docs @3a07a17), in the prediction and in the older webhook body; the
  current webhook body carries no metrics. It becomes ``detail["cost_usd"]`` for a job
  that succeeded (``hub.providers.costs``: a figure that is not a sane number is dropped).

Failure classification of the submit (``POST /v1/prediction``), sent on a fresh
connection; see ``hub.providers.base.Resend``:

=========================================  =======  ==================================
failure                                    resend   why
=========================================  =======  ==================================
connection refused, DNS, connect timeout   SAFE     nothing left the hub
429 without ``Retry-After``                SAFE,    10 predictions in flight, "no
                                           slot     Retry-After" (Corrections,
                                           full     errors.mdx): wait for one to end
429 with ``Retry-After``                   SAFE     the 60/min limit [EL1][EL5]
400, 401, 402, 403                         NEVER    bad input, bad key, balance
                                                    (errors.mdx: 402 exhausted)
500 "Failed to create prediction"          SAFE     the documented 500 says the
                                                    prediction was not created [EL1]
any other 5xx                              UNKNOWN  undocumented: may have been created
read timeout, cut mid-answer, a 2xx        UNKNOWN  the body was sent; the webhook and
without ``predictionID``                            the job may exist
=========================================  =======  ==================================

Polls and cancels create nothing billed: transient failures are SAFE to repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from hub.providers.base import CallbackRejected, EditRequest, Outcome, Output, ProviderConfig
from hub.providers.costs import with_cost
from hub.providers.http import (
    ProviderHTTP,
    any_output,
    describe_error,
    header,
    is_http_url,
    load_json_object,
    parse_retry_after,
)

MODEL = "openai-image-edit"
VERSION = "0.0.1"
MAX_IMAGES = 16
SIGNATURE_TOLERANCE = 300.0
PENDING = frozenset({"created", "starting", "processing", "queued"})
SUCCEEDED = frozenset({"success", "succeeded"})
FAILED = frozenset({"error", "failed", "cancelled", "canceled"})
MAX_N = 10
# The one 5xx their docs describe: nothing was created [EL1].
NOT_CREATED = "failed to create prediction"
_RETRY_AFTER_WORDS = re.compile(r"retry after (\d{1,4}) seconds", re.IGNORECASE)


def _unbilled(status: int, body: bytes) -> bool:
    return status == 500 and NOT_CREATED in describe_error(body).lower()


class Eachlabs:
    name = "eachlabs"
    supports_callback = True
    max_n = MAX_N

    def __init__(
        self,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = ProviderHTTP(
            config,
            client,
            {"Authorization": f"Bearer {config.api_key}"},
            unbilled=_unbilled,
        )
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
        reply = await self._http.request(
            "POST", "/v1/prediction", json=payload, accept=(429,), submit=True
        )
        if reply.status == 429:
            raise self._too_many(reply.headers, reply.content)
        body = self._http.json_body(reply, submit=True)
        prediction_id = body.get("predictionID")
        if not isinstance(prediction_id, str) or not prediction_id:
            message = body.get("message") or body.get("error") or "no predictionID"
            raise self._http.unknown(f"answered 2xx without a prediction id: {message}")
        return Outcome("pending", provider_task_id=prediction_id, detail={"status": "created"})

    def _too_many(self, headers: httpx.Headers, body: bytes) -> Exception:
        """A 429: the per-minute limit says when to come back; the in-flight cap does not
        (no Retry-After), and means "wait until one of your predictions ends"."""
        detail = describe_error(body, headers.get("content-type", ""))
        retry_after = parse_retry_after(headers.get("retry-after"))
        if retry_after is None:
            words = _RETRY_AFTER_WORDS.search(detail)
            retry_after = float(words.group(1)) if words else None
        return self._http.error(
            f"HTTP 429: {detail or 'too many requests'}",
            retryable=True,
            status=429,
            retry_after=retry_after,
            slot_full=retry_after is None,
        )

    async def cancel(self, provider_task_id: str) -> bool:
        path = f"/v1/prediction/{quote(provider_task_id, safe='')}/cancel"
        reply = await self._http.request("POST", path, accept=(400, 404, 409))
        # 404: no such prediction; 400 or 409: it already ended. Nothing to stop.
        return 200 <= reply.status < 300

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        body = await self._http.json("GET", f"/v1/prediction/{quote(provider_task_id, safe='')}")
        status = str(body.get("status", "")).lower()
        detail: dict[str, object] = {"status": status}
        metrics = body.get("metrics")
        if isinstance(metrics, dict) and isinstance(metrics.get("predict_time"), int | float):
            detail["predict_time"] = metrics["predict_time"]
        if status in SUCCEEDED:
            try:
                return _succeeded(provider_task_id, body.get("output"), _costed(detail, metrics))
            except ValueError as exc:
                raise self._http.error(str(exc)) from None
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
            try:
                return _succeeded(task, value.get("output"), _costed(detail, value.get("metrics")))
            except ValueError as exc:
                raise CallbackRejected(
                    f"unreadable Eachlabs webhook: {exc}", reason="unreadable"
                ) from None
        if status in FAILED:
            return Outcome("failed", task, error=_webhook_error(value), detail=detail)
        raise CallbackRejected(
            f"Eachlabs webhook with unknown status {status!r}", reason="unreadable"
        )

    def _verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """The plain secret in constant time, where sent; the HMAC over the raw bytes and
        its timestamp, where sent. At least one must be there, and all that are must hold."""
        plain = header(headers, "X-Webhook-Secret")
        signature = header(headers, "X-Webhook-Signature")
        if plain is None and signature is None:
            raise CallbackRejected("the Eachlabs webhook carries no secret or signature")
        if plain is not None and not hmac.compare_digest(plain.strip().encode(), secret.encode()):
            raise CallbackRejected("the Eachlabs webhook secret does not match")
        if signature is not None:
            self._verify_hmac(headers, body, secret, signature)

    def _verify_hmac(
        self, headers: Mapping[str, str], body: bytes, secret: str, signature: str
    ) -> None:
        timestamp = header(headers, "X-Webhook-Timestamp")
        if not timestamp:
            raise CallbackRejected("the Eachlabs webhook signature has no timestamp")
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


def _costed(detail: dict[str, object], metrics: object) -> dict[str, object]:
    """``detail`` with the job's ``metrics.cost`` (USD), where it carries a sane one."""
    return with_cost(detail, metrics.get("cost")) if isinstance(metrics, dict) else detail


def _succeeded(task: str | None, output: object, detail: Mapping[str, object]) -> Outcome:
    outputs = tuple(_outputs(output))
    if not outputs:
        return Outcome("failed", task, error="Eachlabs returned no image", detail=detail)
    return Outcome("succeeded", task, outputs=outputs, detail=detail)


def _outputs(value: object) -> list[Output]:
    """Images from an ``output`` that is a URL (or a ``data:`` URL), a list of them, or
    objects with ``url``, in order; ValueError for a ``data:`` URL that is no image."""
    if isinstance(value, str):
        if is_http_url(value) or value.startswith("data:"):
            return [any_output(value)]
        return []
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
