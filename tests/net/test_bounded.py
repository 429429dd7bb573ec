"""Answers read within a bound that holds after decoding: a gzip-of-gzip bomb is refused
after a few kilobytes of work, whatever it claims to expand to."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from hub.net import bounded
from tests.helpers import AUTH
from tests.processes import HubProcess, free_port, running

GIB = 1 << 30


@functools.cache
def bomb() -> bytes:
    """1 GiB of zeros, gzipped twice: 1,827 bytes."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    layer = b"".join(inner.compress(chunk) for _ in range(GIB // len(chunk))) + inner.flush()
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return outer.compress(layer) + outer.flush()


class Chunks(httpx.AsyncByteStream):
    def __init__(self, data: bytes, size: int = 512) -> None:
        self._data, self._size = data, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), self._size):
            yield self._data[start : start + self._size]


def streamed(data: bytes, encoding: str = "") -> httpx.Response:
    headers = {"content-encoding": encoding} if encoding else {}
    return httpx.Response(200, headers=headers, stream=Chunks(data))


async def test_a_gzip_of_gzip_bomb_is_refused_within_the_bound():
    tracemalloc.start()
    try:
        with pytest.raises(bounded.TooLarge):
            await bounded.read(streamed(bomb(), "gzip, gzip"), 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The bound (1 MiB) and a few decoding steps, not the gigabyte.
    assert peak < 4 << 20, peak


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
        ("identity", lambda data: data),
        ("", lambda data: data),
    ],
)
async def test_what_is_encoded_is_decoded(encoding, encode):
    body = b"an image, honestly " * 5000
    assert await bounded.read(streamed(encode(body), encoding), len(body)) == body
    with pytest.raises(bounded.TooLarge):
        await bounded.read(streamed(encode(body), encoding), len(body) - 1)


async def test_an_error_body_is_cut_at_the_bound():
    body = gzip.compress(b"x" * 100_000)
    assert await bounded.read(streamed(body, "gzip"), 1000, truncate=True) == b"x" * 1000


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip, gzip"])
async def test_other_encodings_are_refused(encoding):
    with pytest.raises(bounded.UnreadableEncoding):
        await bounded.read(streamed(b"whatever", encoding), 1000)


async def test_bytes_that_do_not_decode_are_refused():
    with pytest.raises(bounded.UnreadableEncoding):
        await bounded.read(streamed(b"not gzip at all", "gzip"), 1000)


@contextlib.asynccontextmanager
async def bomb_server() -> AsyncIterator[str]:
    """An image URL on loopback that answers with the bomb, as a hostile host would."""
    body = bomb()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            head = (
                "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\n"
                f"content-encoding: gzip, gzip\r\ncontent-length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/photo.png"


async def task_with_a_bomb_image(http: httpx.AsyncClient, hub_url: str) -> httpx.Response:
    """The hub's answer to a Segmind task whose image URL serves the bomb.
    scripts/chaos_figures.py measures the same."""
    async with bomb_server() as url:
        return await http.post(
            f"{hub_url}/v1/tasks",
            headers=AUTH,
            json={"provider": "segmind", "input": {"prompt": "p", "images": [url]}},
        )


@pytest.mark.process
async def test_hub_serve_refuses_a_bomb_image_without_growing(tmp_path, http):
    hub = HubProcess(tmp_path, free_port(), command=("serve", "--sandbox"))
    with running(hub):
        await hub.ready(http)
        before = hub.memory()
        answer = await task_with_a_bomb_image(http, hub.url)
        after = hub.memory()
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "input.images[0]"
    assert "larger than" in answer.json()["error"]["message"]
    # Was: 61 -> 1,088 MiB and a MemoryError. The image bound is 50 MiB.
    assert after.peak - before.rss < 80 * 1024, (before, after)
