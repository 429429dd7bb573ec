"""What the hub takes as an image: PNG, JPEG or WebP, told from the bytes themselves."""

from __future__ import annotations

import asyncio
import warnings
from io import BytesIO

from PIL import Image

from hub.errors import invalid

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# A decoded image larger than this many pixels is refused before it is decoded.
MAX_PIXELS = 64_000_000


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
