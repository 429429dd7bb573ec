"""Blobs: image bytes the hub keeps (uploads, inputs, results), checked to be images, and the
URLs they are served at."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import warnings
from io import BytesIO

from PIL import Image

from hub.errors import invalid
from hub.signing import BLOB, Claims, Signer
from hub.store.base import Blob

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# A decoded image larger than this many pixels is refused before it is decoded.
MAX_PIXELS = 64_000_000


def new_id() -> str:
    return "blob_" + secrets.token_hex(12)


def make(owner: str, data: bytes, content_type: str) -> Blob:
    return Blob(
        id=new_id(),
        owner=owner,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        created_at=time.time(),
        data=data,
    )


async def image_type(data: bytes, field: str) -> str:
    """The content type of an image the providers accept, or 422 naming ``field``."""
    return await asyncio.to_thread(_image_type, data, field)


def _image_type(data: bytes, field: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise invalid(field, f"has more than {MAX_PIXELS} pixels")
                kind = image.format
                image.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning):
        raise invalid(field, "is not a readable PNG, JPEG or WebP image") from None
    if kind not in IMAGE_TYPES:
        raise invalid(field, f"is {kind}; PNG, JPEG or WebP are accepted")
    return IMAGE_TYPES[kind]


def sniff(data: bytes) -> str | None:
    """The image type from its first bytes, without decoding it."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def url(public_url: str, blob_id: str) -> str:
    """Where a client with the owner's key reads the blob."""
    return f"{public_url}/v1/blobs/{blob_id}"


def public_url(signer: Signer, base: str, blob_id: str, ttl: int) -> str:
    """A signed, expiring URL a provider can fetch without a key."""
    token = signer.issue(BLOB, Claims(None, int(time.time()) + ttl, blob_id=blob_id))
    return f"{base}/blobs/{token}"
