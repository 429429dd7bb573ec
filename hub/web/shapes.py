"""The bodies only the web layer speaks: the error shape, health, and the answers of the
OpenAI-compatible edit route (in OpenAI's shapes, which its clients read)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from hub.shapes import TaskId
from hub.tasks.shapes import Background, OutputFormat, Quality, Size


class ErrorDetail(Struct, forbid_unknown_fields=True):
    code: str
    message: str
    # The input at fault, on its own (the message starts with it too), where there is one.
    field: str | UnsetType = UNSET


class Error(Struct, forbid_unknown_fields=True):
    """Every error the hub answers (but the OpenAI-compatible route's)."""

    error: ErrorDetail


class Component(Struct, forbid_unknown_fields=True):
    """One background loop, as hub.background.loops reports it."""

    state: Literal["ok", "failing", "stuck", "dead"]
    seconds_since_beat: float | UnsetType = UNSET
    failures: int | UnsetType = UNSET
    last_error: str | UnsetType = UNSET


class Health(Struct, forbid_unknown_fields=True):
    status: Literal["ok", "error"]
    store: Literal["ok", "unreachable", "failed"]
    version: str | UnsetType = UNSET
    components: dict[str, Component] | UnsetType = UNSET
    # What is not well, by name (``store`` among them), when ``status`` is error.
    unwell: list[str] | UnsetType = UNSET


class B64Image(Struct, forbid_unknown_fields=True):
    b64_json: Annotated[str, Meta(extra_json_schema={"contentEncoding": "base64"})]


class ImagesResponse(Struct):
    """OpenAI's answer to an image edit. Open, as OpenAI's is: its clients take more."""

    created: int
    data: list[B64Image]
    background: Background | UnsetType = UNSET
    output_format: OutputFormat | UnsetType = UNSET
    quality: Quality | UnsetType = UNSET
    size: Size | UnsetType = UNSET


class EditAccepted(Struct, forbid_unknown_fields=True):
    """An edit given a callback_url: the task that will POST AceData's body there."""

    task_id: TaskId


class OpenAIErrorDetail(Struct, forbid_unknown_fields=True):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(Struct, forbid_unknown_fields=True):
    error: OpenAIErrorDetail
