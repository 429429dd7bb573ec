"""Fetching input images named by URL: http(s), ``data:`` URLs, and the sandbox's own files.

Downloads are streamed under the providers' 50 MB per-image cap. A URL that points at a
file this sandbox serves itself (an AtlasCloud upload, an earlier output) is read from the
store directly, which also works where the sandbox cannot reach its own address (tests
driving it through an in-process transport).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from hub.net import fetch
from hub.sandbox.images import MAX_IMAGE_BYTES
from hub.sandbox.state import FileStore


class InputError(Exception):
    """An input could not be obtained. ``download`` tells a transport failure (the URL did
    not answer with the file) from content that is unusable once obtained."""

    def __init__(self, message: str, *, download: bool) -> None:
        super().__init__(message)
        self.message = message
        self.download = download


def decode_data_url(url: str, limit: int = MAX_IMAGE_BYTES) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise InputError("malformed data: URL", download=False)
    if len(payload) > limit * 4 // 3 + 4:
        raise InputError("data: URL is larger than 50 MB", download=False)
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("data: URL is not valid base64", download=False) from None
    return unquote_to_bytes(payload)


def _own_file(url: str, files: FileStore) -> bytes | None:
    path = urlsplit(url).path
    head, _, name = path.rpartition("/")
    if not head.endswith("/files"):
        return None
    stored = files.get(name)
    return stored.data if stored is not None else None


FETCH_TIMEOUT = 60.0


async def fetch_source(
    url: str,
    *,
    client: httpx.AsyncClient,
    files: FileStore,
    limit: int = MAX_IMAGE_BYTES,
    guarded: bool = False,
    allow_loopback: bool = False,
) -> bytes:
    """The image at ``url``. ``guarded``: fetched by the hub's outbound rules
    (``hub.net.fetch``: public addresses only, loopback if allowed, each redirect checked,
    identity asked for and the decoded size bounded); off only for an in-memory test
    transport, which reaches nothing."""
    if url.startswith("data:"):
        return decode_data_url(url, limit)
    own = _own_file(url, files)
    if own is not None:
        return own
    if guarded:
        try:
            data, _ = await fetch.fetch(
                client, url, max_bytes=limit, within=FETCH_TIMEOUT, allow_private=allow_loopback
            )
        except fetch.FetchError as error:
            raise InputError(f"fetching the image failed: it {error}", download=True) from None
        return data
    # The host is left out of messages: it may be a private address the caller cares about.
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InputError(
                    f"fetching the image failed with HTTP {response.status_code}", download=True
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise InputError("the image is larger than 50 MB", download=True)
                chunks.append(chunk)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise InputError(f"fetch failed ({type(error).__name__})", download=True) from None
    return b"".join(chunks)
