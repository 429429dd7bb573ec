"""Reading an answer someone else sends within a byte bound that holds after decoding.

The hub asks for ``identity`` (``ASK_IDENTITY``), but a server may compress anyway, and
httpx decodes each chunk whole before the caller can count it: 1,827 bytes of gzip of
gzip became 1 GiB in memory. Here the raw bytes are decoded in small steps, and the
bound is on what comes out. gzip and deflate, up to two layers, are decoded; any other
encoding is refused.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import httpx

# Every outbound request says this; it is a request, not a guarantee.
ASK_IDENTITY = {"accept-encoding": "identity"}
MAX_LAYERS = 2
# Output taken from a decoder per step: what one step may hold, whatever the input.
STEP = 64 * 1024


class TooLarge(Exception):
    """The decoded body is larger than its bound."""


class UnreadableEncoding(Exception):
    """A content encoding the hub does not decode, or bytes that do not decode."""


async def read(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The decoded body, at most ``limit`` bytes. Past the bound: cut there when
    ``truncate`` (an error body, read for its message), else TooLarge."""
    if response.is_stream_consumed:
        # Made in memory (a test's transport), not read from a connection: nothing to bound.
        content = response.content
        if len(content) > limit and not truncate:
            raise TooLarge
        return content[:limit]
    encodings = _encodings(response)
    declared = response.headers.get("content-length", "")
    if not truncate and not encodings and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    decode = _decoder(encodings)
    chunks: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        for piece in decode(raw):
            size += len(piece)
            if size > limit:
                if truncate:
                    chunks.append(piece[: len(piece) - (size - limit)])
                    return b"".join(chunks)
                raise TooLarge
            chunks.append(piece)
    return b"".join(chunks)


def _encodings(response: httpx.Response) -> list[str]:
    header = response.headers.get("content-encoding", "")
    found = [part.strip().lower() for part in header.split(",")]
    return [name for name in found if name and name != "identity"]


def _decoder(encodings: list[str]) -> Callable[[bytes], Iterator[bytes]]:
    """A function from raw bytes to decoded pieces of at most STEP bytes each, made lazily
    so the caller counts each before the next is made. Encodings are listed in the order
    they were applied, so they are undone from the last."""
    if len(encodings) > MAX_LAYERS:
        raise UnreadableEncoding(f"{len(encodings)} layers of content encoding")
    layers = [_layer(name) for name in reversed(encodings)]

    def decode(raw: bytes) -> Iterator[bytes]:
        pieces: Iterator[bytes] = iter((raw,))
        for layer in layers:
            pieces = _through(layer, pieces)
        return pieces

    return decode


def _through(layer: Callable[[bytes], Iterator[bytes]], pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from layer(piece)


def _layer(name: str) -> Callable[[bytes], Iterator[bytes]]:
    if name in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif name == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped, as HTTP's deflate is meant to be
    else:
        raise UnreadableEncoding(f"content encoding {name!r}")
    decompressor = zlib.decompressobj(wbits)

    def layer(data: bytes) -> Iterator[bytes]:
        try:
            # Until the input is used up and nothing more comes out: zlib may hold output
            # back when a step's output is full.
            while not decompressor.eof:
                piece = decompressor.decompress(data, STEP)
                data = decompressor.unconsumed_tail
                if piece:
                    yield piece
                elif not data:
                    return
        except zlib.error:
            raise UnreadableEncoding(f"a body that is not valid {name}") from None

    return layer
