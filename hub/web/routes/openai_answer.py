"""What ``POST /v1/images/edits`` answers once its task exists, in OpenAI's shapes.

Every answer given after the task was made carries ``x-should-retry: false``: the openai
SDK retries 408, 409, 429, every 5xx and timeouts twice by default, and a retry without an
``Idempotency-Key`` would be another task, another paid job. A content refusal is OpenAI's
400 ``moderation_blocked``; a wait that ran out is a 504 whose message names the task,
which goes on.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from io import BytesIO

import orjson
from PIL import Image

from hub.enums import TaskStatus
from hub.shapes import given
from hub.store.base import TaskRecord
from hub.tasks.shapes import OutputFormat
from hub.web.routes.common import json_response
from hub.web.shapes import B64Image, ImagesResponse, OpenAIError, OpenAIErrorDetail
from hub.web.state import HubState

NO_RETRY = {"x-should-retry": "false"}
FORMATS: dict[str, OutputFormat] = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
# What OpenAI reports as quality; "auto" says nothing of what was produced.
REPORTED_QUALITIES = ("low", "medium", "high")
MODERATION_BLOCKED = "moderation_blocked"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


def error(status: int, message: str, kind: str, param: str | None, code: str | None) -> Answer:
    body = OpenAIError(OpenAIErrorDetail(message, kind, param, code))
    return Answer(status, bytes(json_response(body).body))


async def ended(state: HubState, task: TaskRecord) -> Answer:
    """The answer to a task that has ended: its images, or OpenAI's error for how it failed."""
    if task.status == TaskStatus.SUCCEEDED:
        return await _images(state, task)
    code = error_code(task)
    message = task.error or task.status.value
    if code == MODERATION_BLOCKED:
        return error(400, message, "image_generation_user_error", None, MODERATION_BLOCKED)
    if task.status == TaskStatus.TIMED_OUT:
        return error(504, message, "server_error", None, code or "timed_out")
    return error(502, message, "server_error", None, code or "provider_failed")


def wait_ran_out(task: TaskRecord, waited: float) -> Answer:
    """The task had not ended when the wait did: OpenAI's 504, and where to look next."""
    message = (
        f"the edit did not finish within {waited:.0f} s; task {task.id} goes on: GET"
        f" /v1/tasks/{task.id}, or repeat the request with the same Idempotency-Key to"
        " wait for it again (without one, a repeat is a new, paid edit)"
    )
    return error(504, message, "server_error", None, "timeout")


def error_code(task: TaskRecord) -> str | None:
    """The task's ``error.code``. Tasks carry one once the engine keeps error codes; until
    then there is none, and the answer falls back on the task's status."""
    code = getattr(task, "error_code", None)
    return str(code) if code else None


async def _images(state: HubState, task: TaskRecord) -> Answer:
    data: list[B64Image] = []
    first: bytes | None = None
    for output in orjson.loads(task.outputs):
        blob = await state.store.get_blob(output["blob_id"])
        if blob is not None:
            first = blob.data if first is None else first
            data.append(B64Image(base64.b64encode(blob.data).decode()))
    answer = ImagesResponse(created=int(task.created_at), data=data)
    if first is not None:
        answer.size, kind, transparent = await asyncio.to_thread(_facts, first)
        answer.output_format = given(kind)
        answer.background = "transparent" if transparent else "opaque"
    quality = orjson.loads(task.input).get("quality")
    if quality in REPORTED_QUALITIES:
        answer.quality = quality
    return Answer(200, bytes(json_response(answer).body))


def _facts(data: bytes) -> tuple[str, OutputFormat | None, bool]:
    """(size, format, whether any pixel is less than opaque) of an image, from its bytes."""
    with Image.open(BytesIO(data)) as image:
        return f"{image.width}x{image.height}", FORMATS.get(image.format or ""), _transparent(image)


def _transparent(image: Image.Image) -> bool:
    """Whether any pixel is less than opaque (an alpha channel that is all 255 is not)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        low, _ = alpha.getextrema()
        return isinstance(low, int | float) and low < 255
    return False
