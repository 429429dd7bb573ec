"""Test helpers: a real hub on a loopback port, an SSE reader, waiting without sleeping."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from PIL import Image

from hub.config.settings import Settings
from hub.web.server import Server, build_server
from hub.web.state import HubState

KEY = "test-key-one"
OTHER_KEY = "test-key-two"
AUTH = {"authorization": f"Bearer {KEY}"}
OTHER_AUTH = {"authorization": f"Bearer {OTHER_KEY}"}
# Sandbox AceData and Eachlabs finish a job at once and are first polled after 5 s, so an
# image edit ends by callback, in moments.
FAST_SANDBOX = (
    ("HUB_SANDBOX_LATENCY", "0"),
    ("HUB_ACEDATA_FIRST_POLL_AFTER", "5"),
    ("HUB_EACHLABS_FIRST_POLL_AFTER", "5"),
)


def make_image(
    size: tuple[int, int] = (64, 48), fmt: str = "PNG", color: tuple[int, ...] = (40, 90, 200)
) -> bytes:
    """A small real image, encoded."""
    mode = "RGBA" if len(color) == 4 else "RGB"
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def make_png(size: tuple[int, int] = (64, 48), color: tuple[int, ...] = (40, 90, 200)) -> bytes:
    return make_image(size, "PNG", color)


def png_file(name: str = "in.png", size: tuple[int, int] = (64, 48)) -> tuple[str, bytes, str]:
    """A PNG as an upload: (file name, bytes, media type), as httpx and the openai SDK take it."""
    return (name, make_png(size), "image/png")


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@dataclass
class LiveHub:
    url: str
    state: HubState
    server: Server


@contextlib.asynccontextmanager
async def live_hub(settings: Settings) -> AsyncIterator[LiveHub]:
    """The hub on real uvicorn on 127.0.0.1, on a port picked by the kernel."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = build_server(settings.replace(public_url=url, port=port), log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started or task.done(), timeout=10)
        if task.done():
            task.result()
        yield LiveHub(url, server.hub_state, server)
    finally:
        server.hub_state.begin_shutdown()
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, every: float = 0.005
) -> None:
    """Wait for ``condition`` to hold, checking often; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(every)


@dataclass
class Frame:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return orjson.loads("\n".join(self.data))


class SSE:
    """Reads frames off a streaming httpx response, the way an EventSource parses them."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> Frame:
        frame = Frame()
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line == "":
                    if frame.data or frame.event or frame.id or frame.retry is not None:
                        return frame
                    if frame.comments:
                        return frame
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    frame.comments.append(value)
                elif name == "data":
                    frame.data.append(value)
                elif name == "event":
                    frame.event = value
                elif name == "id":
                    frame.id = value
                elif name == "retry":
                    frame.retry = int(value)
            raise EOFError("the stream ended")

    async def events(self, count: int, timeout: float = 10.0) -> list[Frame]:
        """The next ``count`` events (frames with data), skipping comments and retry hints."""
        found: list[Frame] = []
        async with asyncio.timeout(timeout):
            while len(found) < count:
                frame = await self.next(timeout)
                if frame.data:
                    found.append(frame)
        return found


@contextlib.asynccontextmanager
async def stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SSE]:
    async with client.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        yield SSE(response)


async def query_store(store: Any, sql: str) -> Any:
    """The first row of a plain SQL query, on whichever store the hub runs (for tests that
    check what was kept beyond what the API shows)."""
    if hasattr(store, "pool"):
        return await store.pool.fetchrow(sql)
    return await store._row(sql)


async def request_body(receive: Any) -> bytes:
    """A whole ASGI request body, for the small servers tests run."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook receiver on real uvicorn: records what arrives and answers with the next
    status from ``answers`` (then 200), so a test can make it fail for a while."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.received: list[Received] = []
        self.url = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await request_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, body))
        status = self.answers.pop(0) if self.answers else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@contextlib.asynccontextmanager
async def receiver(answers: list[int] | None = None) -> AsyncIterator[Receiver]:
    import uvicorn

    app = Receiver(answers)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started or task.done(), timeout=10)
        yield app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def stream_to_end(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], timeout: float = 30.0
) -> list[str]:
    """The event types of a stream that ends by itself (a task's), in order."""
    seen: list[str] = []
    async with stream(http, url, headers) as sse:
        with contextlib.suppress(EOFError):
            while True:
                frame = await sse.next(timeout)
                if frame.event:
                    seen.append(frame.event)
    return seen
