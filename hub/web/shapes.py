"""The bodies only the web layer speaks: the error shape, health, and the answers of the
OpenAI-compatible edit route (in OpenAI's shapes, which its clients read)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from hub.shapes import TaskId
from hub.tasks.shapes import OutputFormat, Quality


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


class InputTokens(Struct, forbid_unknown_fields=True, frozen=True):
    image_tokens: int
    text_tokens: int


class Usage(Struct, forbid_unknown_fields=True, frozen=True):
    """OpenAI's token counts. The hub's providers report none, so every count is 0: a
    client that reads ``usage`` finds it, and nothing is made up."""

    input_tokens: int
    input_tokens_details: InputTokens
    output_tokens: int
    total_tokens: int


NO_USAGE = Usage(0, InputTokens(0, 0), 0, 0)


class ImagesResponse(Struct):
    """OpenAI's answer to an image edit. Open, as OpenAI's is: its clients take more.
    ``size``, ``output_format`` and ``background`` describe the image produced (the first
    one), read from its bytes: its dimensions (any, e.g. ``1024x1536``), its format, and
    ``transparent`` when any pixel is not opaque. ``quality`` cannot be read from an image:
    it is the quality the provider was sent (low, medium or high), left out otherwise."""

    created: int
    data: list[B64Image]
    background: Literal["transparent", "opaque"] | UnsetType = UNSET
    output_format: OutputFormat | UnsetType = UNSET
    quality: Quality | UnsetType = UNSET
    size: Annotated[str, Meta(pattern=r"^[0-9]+x[0-9]+$")] | UnsetType = UNSET
    usage: Usage = NO_USAGE


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
