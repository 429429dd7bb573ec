"""AceData Cloud: OpenAI-compatible image edits, callback first, task lookup as fallback.

``POST /v1/images/edits`` takes multipart like OpenAI's (``image[]`` files, ``mask``
file). With ``callback_url`` it answers ``{"task_id"}`` at once and POSTs the result
once, unsigned, later; without, it holds the request and answers with the images (and a
504 for edits that run long, which is why the hub always asks for the callback).

Quirks handled here:
- GPT image models answer ``b64_json``; ``url`` (the dall-e style) is accepted too.
- The callback nests the images response: ``{"success", "task_id", "trace_id",
  "data": {"created", "data": [...]}}``; a failure carries ``error: {code, message}``.
- ``POST /openai/tasks {"action": "retrieve", "id"}`` has no status field: a task is
  done when ``response`` is present, and ``{}`` means "not stored (yet)".
- No callback signature exists, so none is checked: the hub's signed callback URL is the
  credential.
- ``n`` only takes effect for dall-e-2; gpt-image-1 makes one image per call, so
  ``max_n`` is 1 (the engine refuses more). ``output_compression`` is passed (0-100).
- A 403 ``forbidden`` is the content moderation refusal; ``used_up`` an empty balance.

Failure classification of the submit (``POST /v1/images/edits``), sent on a fresh
connection; see ``hub.providers.base.Resend``:

=========================================  =======  ==================================
failure                                    resend   why
=========================================  =======  ==================================
connection refused, DNS, connect timeout   SAFE     nothing left the hub
429 ``too_many_requests``                  SAFE     a refusal before acceptance (seed:
                                                    "exceeded the rate limit")
400 ``token_mismatched`` / ``api_not_      NEVER    bad input (seed error list);
implemented``, 401 ``invalid_token``                bad key (seed; 401 per Corrections)
403 ``forbidden``                          NEVER    moderation (Corrections), code
                                                    ``moderation_blocked``
403 ``used_up``                            NEVER    balance exhausted (Corrections)
500 ``api_error``                          UNKNOWN  the docs say "retry once"
                                                    (Corrections, responses.mdx) but
                                                    nowhere that a 500 is unbilled;
                                                    the callback may still come, and a
                                                    ``trace_id`` in the body is kept
                                                    as a lookup handle (``trace:``)
502/503/504                                UNKNOWN  504 means a call "runs too long"
                                                    (AD3): it ran; the rest undocumented
read timeout, cut mid-answer, unreadable   UNKNOWN  the body was sent; the callback
2xx                                                 it asked for may still arrive
=========================================  =======  ==================================

Lookups (``POST /openai/tasks``) are free [AD2]: any transient failure is SAFE to repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from hub.providers.base import (
    CallbackRejected,
    EditRequest,
    ErrorCode,
    InputImage,
    Outcome,
    Output,
    ProviderConfig,
    ProviderError,
)
from hub.providers.http import (
    MAX_IMAGE_BYTES,
    ProviderHTTP,
    Reply,
    base64_output,
    describe_error,
    load_json_object,
    url_output,
)

MODEL = "gpt-image-1"
EDITS_PATH = "/v1/images/edits"
TASKS_PATH = "/openai/tasks"
# A provider task id that is really a trace id: the lookup takes either.
TRACE_PREFIX = "trace:"
SERVER_ERRORS = (500, 502, 503, 504)


def _refusal(status: int, body: bytes) -> ErrorCode | None:
    error = (load_json_object(body) or {}).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if status == 403 and code == "forbidden":
        return ErrorCode.MODERATION_BLOCKED
    return None


class AceData:
    name = "acedata"
    supports_callback = True
    max_n = 1

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._http = ProviderHTTP(
            config,
            client,
            {"Authorization": f"Bearer {config.api_key}"},
            refusal=_refusal,
        )

    def wants_callback(self, public_url: str) -> bool:
        # Callback mode is the only one that survives long edits, and it stores the task
        # so that it can be looked up; any URL the hub can be reached at will do.
        return True

    async def submit(self, request: EditRequest) -> Outcome:
        files = [("image[]", await _file(image)) for image in request.images]
        if request.mask is not None:
            files.append(("mask", await _file(request.mask)))
        fields = {"model": MODEL, "prompt": request.prompt}
        options = {
            "size": request.size,
            "quality": request.quality,
            "background": request.background,
            "output_format": request.output_format,
            # gpt-image-1 makes one image whatever ``n`` says; sent only when it is 1.
            "n": request.n if request.n == 1 else None,
            "output_compression": request.output_compression,
            "callback_url": request.callback_url,
        }
        fields.update({key: str(value) for key, value in options.items() if value is not None})
        # A synchronous answer carries the images as base64, hence the image-sized bound.
        reply = await self._http.request(
            "POST",
            EDITS_PATH,
            data=fields,
            files=files,
            limit=MAX_IMAGE_BYTES,
            accept=SERVER_ERRORS,
            submit=True,
        )
        if reply.status in SERVER_ERRORS:
            raise self._server_error(reply)
        body = self._http.json_body(reply, submit=True)
        trace = reply.headers.get("x-request-id")
        task_id = body.get("task_id")
        if "data" not in body and "error" not in body:
            if not isinstance(task_id, str) or not task_id:
                raise self._http.unknown("answered without a task_id or images")
            return Outcome("pending", provider_task_id=task_id, detail=_detail(trace))
        try:
            return _outcome(body, task_id if isinstance(task_id, str) else None, trace)
        except ValueError as exc:
            raise self._http.unknown(str(exc)) from None

    def _server_error(self, reply: Reply) -> ProviderError:
        """A 5xx to the submit: UNKNOWN (see the table), with the trace id as a handle."""
        detail = describe_error(reply.content, reply.headers.get("content-type", ""))
        error = self._http.unknown(
            f"HTTP {reply.status}: {detail or 'no message'}", status=reply.status
        )
        body = load_json_object(reply.content) or {}
        trace = body.get("trace_id") or reply.headers.get("x-request-id")
        if isinstance(trace, str) and trace:
            error.provider_task_id = TRACE_PREFIX + trace
        return error

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        if provider_task_id.startswith(TRACE_PREFIX):
            query = {"action": "retrieve", "trace_id": provider_task_id[len(TRACE_PREFIX) :]}
        else:
            query = {"action": "retrieve", "id": provider_task_id}
        body = await self._http.json("POST", TASKS_PATH, json=query, limit=MAX_IMAGE_BYTES)
        trace = body.get("trace_id")
        response = body.get("response")
        if not isinstance(response, dict):
            # {} right after the submit, or a task still running: both are "not yet".
            detail = {**_detail(trace), "found": bool(body)}
            return Outcome("pending", provider_task_id=provider_task_id, detail=detail)
        outcome = self._read(response, provider_task_id, trace)
        duration = body.get("duration")
        if isinstance(duration, int | float):
            return replace(outcome, detail={**outcome.detail, "duration": duration})
        return outcome

    async def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str | None
    ) -> Outcome:
        # AceData signs nothing; ``secret`` has nothing to check against.
        value = load_json_object(body)
        if value is None or not ({"success", "data", "error"} & value.keys()):
            raise CallbackRejected(
                "not an AceData callback: expected a JSON object", reason="unreadable"
            )
        task_id = value.get("task_id")
        try:
            return _outcome(
                value, task_id if isinstance(task_id, str) else None, value.get("trace_id")
            )
        except ValueError as exc:
            raise CallbackRejected(
                f"unreadable AceData callback: {exc}", reason="unreadable"
            ) from None

    def _read(self, body: Mapping[str, Any], task_id: str | None, trace: object) -> Outcome:
        try:
            return _outcome(body, task_id, trace)
        except ValueError as exc:
            raise self._http.error(str(exc)) from None

    async def cancel(self, provider_task_id: str) -> bool:
        return False


async def _file(image: InputImage) -> tuple[str, bytes, str]:
    return image.filename, await image.load(), image.content_type


def _outcome(body: Mapping[str, Any], task_id: str | None, trace: object) -> Outcome:
    """A finished result: images, or the error. ValueError if an image cannot be read."""
    detail = _detail(trace)
    error = body.get("error")
    if body.get("success") is False or (error and not body.get("data")):
        return Outcome("failed", task_id, error=_error_text(error), detail=detail)
    items = body.get("data")
    # The callback wraps the images response; the sync answer and the task lookup do not.
    if isinstance(items, dict):
        items = items.get("data")
    outputs = tuple(_output(item) for item in items) if isinstance(items, list) else ()
    if not outputs:
        return Outcome("failed", task_id, error="AceData returned no images", detail=detail)
    return Outcome("succeeded", task_id, outputs=outputs, detail=detail)


def _output(item: object) -> Output:
    if isinstance(item, dict):
        if isinstance(item.get("b64_json"), str) and item["b64_json"]:
            return base64_output(item["b64_json"])
        if isinstance(item.get("url"), str) and item["url"]:
            return url_output(item["url"])
    raise ValueError("an image entry has neither b64_json nor url")


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        words = [str(part) for part in (code, message) if part]
        if words:
            return ": ".join(words)
    if isinstance(error, str) and error:
        return error
    return "the edit failed (AceData gave no reason)"


def _detail(trace: object) -> dict[str, object]:
    return {"trace_id": trace} if isinstance(trace, str) and trace else {}
