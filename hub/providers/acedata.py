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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from hub.providers.base import (
    CallbackRejected,
    EditRequest,
    InputImage,
    Outcome,
    Output,
    ProviderConfig,
)
from hub.providers.http import (
    MAX_IMAGE_BYTES,
    ProviderHTTP,
    base64_output,
    load_json_object,
    url_output,
)

MODEL = "gpt-image-1"
EDITS_PATH = "/v1/images/edits"
TASKS_PATH = "/openai/tasks"


class AceData:
    name = "acedata"
    supports_callback = True
    max_n = 1

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self._http = ProviderHTTP(config, client, {"Authorization": f"Bearer {config.api_key}"})

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
            "n": request.n,
            "callback_url": request.callback_url,
        }
        fields.update({key: str(value) for key, value in options.items() if value is not None})
        # A synchronous answer carries the images as base64, hence the image-sized bound.
        reply = await self._http.request(
            "POST", EDITS_PATH, data=fields, files=files, limit=MAX_IMAGE_BYTES
        )
        body = self._http.json_body(reply)
        trace = reply.headers.get("x-request-id")
        task_id = body.get("task_id")
        if "data" not in body and "error" not in body:
            if not isinstance(task_id, str) or not task_id:
                raise self._http.error("answered without a task_id or images")
            return Outcome("pending", provider_task_id=task_id, detail=_detail(trace))
        return self._read(body, task_id if isinstance(task_id, str) else None, trace)

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        body = await self._http.json(
            "POST",
            TASKS_PATH,
            json={"action": "retrieve", "id": provider_task_id},
            limit=MAX_IMAGE_BYTES,
        )
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
