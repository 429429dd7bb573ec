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
from hub.net.urls import UrlRefused, checked
from hub.providers.base import Provider
from hub.shapes import BLOB_IDS
from hub.store.base import Blob, Store
from hub.tasks.shapes import MAX_IMAGES, TaskRequest

# AtlasCloud's gpt-image-1 edit model takes one image; the others take up to 16.
MAX_IMAGES_BY_PROVIDER = {"atlascloud": 1}
DATA_URL = re.compile(r"data:(image/[a-z0-9.+-]+)?(;[^,]*)?;base64,(.*)", re.DOTALL)
FETCH_TIMEOUT = 20.0
OPTIONS = ("size", "quality", "background", "output_format", "n", "output_compression")


@dataclass(frozen=True)
class TaskInput:
    provider: str
    channel_id: str | None
    prompt: str
    images: tuple[str, ...]  # blob ids
    mask: str | None
    options: dict[str, Any]  # OPTIONS: only those given
    fallbacks: tuple[str, ...] = ()  # the providers to try after ``provider``, in order

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
    value = request.input
    route = checked_route(request.provider, configured)
    # Every provider the task may reach must be able to do it as asked: a fallback that
    # made fewer images, or took fewer inputs, would not be the same job.
    for provider in route:
        if provider not in configured:
            continue  # skipped when the task gets to it (task.rerouted, not_configured)
        limit = MAX_IMAGES_BY_PROVIDER.get(provider, MAX_IMAGES)
        if len(value.images) > limit:
            raise invalid("input.images", f"must hold at most {limit} images for {provider}")
        most = configured[provider].max_n
        if value.n is not None and value.n > most:
            # Refused rather than silently given fewer images than paid for.
            images = "image" if most == 1 else "images"
            raise invalid(
                "input.n", f"must be at most {most}: {provider} makes {most} {images} a job"
            )
    channel_id = request.channel_id
    if channel_id is not None:
        channel = await sources.store.get_channel(channel_id)
        if channel is None or channel.owner != sources.owner:
            raise invalid("channel_id", "no such channel")
    # Every URL checked before any is fetched: a bad mask URL is refused as fast as a bad
    # first image's, and with nothing fetched or stored for it.
    named = [(f"input.images[{i}]", source) for i, source in enumerate(value.images)]
    for field, source in named + ([("input.mask", value.mask)] if value.mask else []):
        _check_url(source, field, sources.allow_private)
    image_ids = []
    for index, source in enumerate(value.images):
        image_ids.append(await _resolve(source, f"input.images[{index}]", sources))
    mask = None
    if value.mask is not None:
        mask = await _resolve(value.mask, "input.mask", sources)
    options = {name: getattr(value, name) for name in OPTIONS}
    given = {name: option for name, option in options.items() if option is not None}
    return TaskInput(
        route[0], channel_id, value.prompt, tuple(image_ids), mask, given, tuple(route[1:])
    )


def checked_route(asked: str | list[str], configured: Mapping[str, Provider]) -> list[str]:
    """The providers to try, in order: each named once, and at least one configured
    here (one named alone must be)."""
    route = [asked] if isinstance(asked, str) else list(asked)
    if len(set(route)) < len(route):
        twice = next(name for name in route if route.count(name) > 1)
        raise invalid("provider", f"names {twice} more than once")
    if not any(name in configured for name in route):
        keys = " or ".join(f"HUB_{name.upper()}_API_KEY" for name in route)
        said = f"{route[0]} is not" if len(route) == 1 else f"none of {', '.join(route)} is"
        raise invalid("provider", f"{said} configured: set {keys}")
    return route


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


def _check_url(source: str, field: str, allow_private: bool) -> None:
    if source.startswith(("http://", "https://")):
        try:
            checked(source, allow_private=allow_private)
        except UrlRefused as exc:
            raise invalid(field, f"the URL {exc}") from None


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
