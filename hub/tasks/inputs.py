"""The body of ``POST /v1/tasks``, checked field by field (422 naming the field), with every
input image turned into a blob the hub holds: fetched (URL), decoded (``data:`` URL) or
looked up (an upload's blob id)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from hub.blobs import images, records
from hub.checks import integer, text
from hub.errors import invalid
from hub.net.fetch import FetchError, fetch
from hub.providers import PROVIDERS
from hub.providers.base import BACKGROUNDS, OUTPUT_FORMATS, QUALITIES, SIZES
from hub.store.base import Blob, Store

MAX_PROMPT = 32_000
MAX_IMAGES = 16
# AtlasCloud's gpt-image-1 edit model takes one image; the others take up to 16.
MAX_IMAGES_BY_PROVIDER = {"atlascloud": 1}
BLOB_ID = re.compile(r"blob_[0-9a-f]{24}")
DATA_URL = re.compile(r"data:(image/[a-z0-9.+-]+)?(;[^,]*)?;base64,(.*)", re.DOTALL)
FETCH_TIMEOUT = 20.0

_FIELDS = {"provider", "input", "channel_id"}
_INPUT_FIELDS = {
    "prompt", "images", "mask", "size", "quality", "background", "output_format", "n",
}  # fmt: skip


@dataclass(frozen=True)
class TaskInput:
    provider: str
    channel_id: str | None
    prompt: str
    images: tuple[str, ...]  # blob ids
    mask: str | None
    options: dict[str, Any]  # size, quality, background, output_format, n: only those given

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"prompt": self.prompt, "images": self.images, "mask": self.mask, **self.options}
        )


@dataclass(frozen=True)
class Sources:
    """What resolving images needs: who asks, the store, a client, and the limits."""

    owner: str
    store: Store
    client: httpx.AsyncClient
    max_image_bytes: int
    allow_private: bool


def _check_shape(body: dict[str, Any], configured: Collection[str]) -> tuple[str, dict[str, Any]]:
    """The provider and the input object, before any image is touched."""
    _no_unknown(body, _FIELDS, "")
    if "provider" not in body:
        raise invalid("provider", "is required")
    provider = body["provider"]
    # A dict or a list cannot even be looked up (unhashable): a 500 before this check.
    if not isinstance(provider, str) or provider not in PROVIDERS:
        raise invalid("provider", f"must be one of {', '.join(sorted(PROVIDERS))}")
    if provider not in configured:
        raise invalid(
            "provider", f"{provider} is not configured: set HUB_{provider.upper()}_API_KEY"
        )
    value = body.get("input")
    if not isinstance(value, dict):
        raise invalid("input", "is required and must be an object")
    _no_unknown(value, _INPUT_FIELDS, "input.")
    return provider, value


async def parse(body: dict[str, Any], configured: Collection[str], sources: Sources) -> TaskInput:
    """The task's input, checked, with every image held as a blob. ``configured``: the
    providers that accept tasks here."""
    provider, value = _check_shape(body, configured)
    if not isinstance(value.get("prompt"), str) or not value["prompt"].strip():
        raise invalid("input.prompt", "is required and must be a non-empty string")
    prompt = text(value["prompt"], "input.prompt", MAX_PROMPT)
    options = _options(value)
    images = value.get("images")
    limit = MAX_IMAGES_BY_PROVIDER.get(provider, MAX_IMAGES)
    if not isinstance(images, list) or not 1 <= len(images) <= limit:
        raise invalid("input.images", f"must be a list of 1 to {limit} images for {provider}")
    channel_id = body.get("channel_id")
    if channel_id is not None:
        channel_id = text(channel_id, "channel_id", 64)
        channel = await sources.store.get_channel(channel_id)
        if channel is None or channel.owner != sources.owner:
            raise invalid("channel_id", "no such channel")
    image_ids = []
    for index, source in enumerate(images):
        image_ids.append(await _resolve(source, f"input.images[{index}]", sources))
    mask = None
    if value.get("mask") is not None:
        mask = await _resolve(value["mask"], "input.mask", sources)
    return TaskInput(provider, channel_id, prompt, tuple(image_ids), mask, options)


def _options(value: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, allowed in (
        ("size", SIZES),
        ("quality", QUALITIES),
        ("background", BACKGROUNDS),
        ("output_format", OUTPUT_FORMATS),
    ):
        if value.get(name) is not None:
            if value[name] not in allowed:
                raise invalid(f"input.{name}", f"must be one of {', '.join(allowed)}")
            options[name] = value[name]
    if value.get("n") is not None:
        options["n"] = integer(value["n"], "input.n", 1, 10)
    return options


async def _resolve(source: Any, field: str, sources: Sources) -> str:
    """The blob id for one image source, storing new bytes as a blob."""
    if not isinstance(source, str) or not source:
        raise invalid(field, "must be a URL, a data: URL or a blob id")
    if BLOB_ID.fullmatch(source):
        blob = await sources.store.get_blob(source)
        if blob is None or blob.owner != sources.owner:
            raise invalid(field, "no such blob")
        if blob.content_type not in images.EXTENSIONS:
            raise invalid(field, "is not an image")
        return blob.id
    if source.startswith("data:"):
        data = _decode_data_url(source, field, sources.max_image_bytes)
    elif source.startswith(("http://", "https://")):
        try:
            data, _ = await fetch(
                sources.client,
                source,
                max_bytes=sources.max_image_bytes,
                within=FETCH_TIMEOUT,
                allow_private=sources.allow_private,
            )
        except FetchError as exc:
            raise invalid(field, f"the URL {exc}") from None
    else:
        raise invalid(field, "must be a URL, a data: URL or a blob id")
    content_type = await images.image_type(data, field)
    made: Blob = records.make(sources.owner, data, content_type)
    await sources.store.put_blob(made)
    return made.id


def _decode_data_url(source: str, field: str, max_bytes: int) -> bytes:
    # base64 is 4/3 of the bytes: refuse before decoding what could not fit.
    if len(source) > max_bytes * 4 // 3 + 256:
        raise invalid(field, f"is larger than {max_bytes} bytes")
    match = DATA_URL.fullmatch(source)
    if match is None:
        raise invalid(field, "must be a base64 data: URL")
    try:
        return base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "is not valid base64") from None


def _no_unknown(value: dict[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = set(value) - allowed
    if unknown:
        raise invalid(prefix + sorted(unknown)[0], "unknown field")
