"""A task request (``hub.tasks.shapes.TaskRequest``, its shape already checked) made
ready to run: the provider configured here, the image count it takes, the channel the
key's, and every input image turned into a blob the hub holds: fetched (URL), decoded
(``data:`` URL) or looked up (an upload's blob id). Refusals are 422 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from hub.blobs import images, records
from hub.errors import invalid
from hub.net.fetch import FetchError, fetch
from hub.providers.base import Provider
from hub.shapes import BLOB_IDS
from hub.store.base import Blob, Store
from hub.tasks.shapes import MAX_IMAGES, TaskRequest

# AtlasCloud's gpt-image-1 edit model takes one image; the others take up to 16.
MAX_IMAGES_BY_PROVIDER = {"atlascloud": 1}
DATA_URL = re.compile(r"data:(image/[a-z0-9.+-]+)?(;[^,]*)?;base64,(.*)", re.DOTALL)
FETCH_TIMEOUT = 20.0
OPTIONS = ("size", "quality", "background", "output_format", "n")


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


async def parse(
    request: TaskRequest, configured: Mapping[str, Provider], sources: Sources
) -> TaskInput:
    """The task's input, with every image held as a blob. ``configured``: the providers
    that accept tasks here."""
    provider, value = request.provider, request.input
    if provider not in configured:
        raise invalid(
            "provider", f"{provider} is not configured: set HUB_{provider.upper()}_API_KEY"
        )
    limit = MAX_IMAGES_BY_PROVIDER.get(provider, MAX_IMAGES)
    if len(value.images) > limit:
        raise invalid("input.images", f"must hold at most {limit} images for {provider}")
    most = configured[provider].max_n
    if value.n is not None and value.n > most:
        # Refused rather than silently given fewer images than paid for.
        images = "image" if most == 1 else "images"
        raise invalid("input.n", f"must be at most {most}: {provider} makes {most} {images} a job")
    channel_id = request.channel_id
    if channel_id is not None:
        channel = await sources.store.get_channel(channel_id)
        if channel is None or channel.owner != sources.owner:
            raise invalid("channel_id", "no such channel")
    image_ids = []
    for index, source in enumerate(value.images):
        image_ids.append(await _resolve(source, f"input.images[{index}]", sources))
    mask = None
    if value.mask is not None:
        mask = await _resolve(value.mask, "input.mask", sources)
    options = {name: getattr(value, name) for name in OPTIONS}
    given = {name: option for name, option in options.items() if option is not None}
    return TaskInput(provider, channel_id, value.prompt, tuple(image_ids), mask, given)


async def _resolve(source: str, field: str, sources: Sources) -> str:
    """The blob id for one image source, storing new bytes as a blob."""
    if BLOB_IDS.matches(source):
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
