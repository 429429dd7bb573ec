"""Reading a request body within bounds: in size (413 as soon as it is known to be too
large) and in time (408 for a sender trickling bytes)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from hub.errors import Malformed, TooLarge, TooSlow


async def read_body(request: Request, limit: int, within: float = 30.0) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed ``limit`` (before it is all
    read), or 408 if it takes longer than ``within`` seconds to arrive (a sender trickling
    bytes would otherwise hold a connection and its buffer as long as it likes)."""
    try:
        async with asyncio.timeout(within):
            return await _read_body(request, limit)
    except TimeoutError:
        raise TooSlow("request_timeout", f"the body took longer than {within:g} s") from None


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = TooLarge("payload_too_large", f"the body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        # ASCII digits only: str.isdigit() also takes "³", which int() then refuses.
        if not (declared.isascii() and declared.isdigit()):
            raise Malformed("bad_request", "content-length is not a number")
        # More digits than any limit has is too large, and int() refuses over 4300 of them.
        digits = declared.lstrip("0")
        if len(digits) > len(str(limit)) or int(digits or "0") > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
