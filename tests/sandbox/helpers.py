"""Helpers for the sandbox tests.

``running(settings)`` starts a Sandbox whose outbound HTTP client talks to an in-memory
``Outbound`` double: it serves input images under http://images.test/ and records every
callback/webhook POST in a queue, answering with scripted status codes. Requests reach
the emulators through httpx.ASGITransport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from hub.sandbox.app import Sandbox, SandboxSettings
from tests.helpers import data_url, make_image, open_image

__all__ = ["data_url", "make_image", "open_image"]

FAST = SandboxSettings(latency=0, callback_retry_delay=0)


@dataclass
class Outbound:
    """The world outside the sandbox: an image host and callback receivers."""

    images: dict[str, bytes] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)
    callbacks: asyncio.Queue[httpx.Request] = field(default_factory=asyncio.Queue)

    def host(self, name: str, data: bytes) -> str:
        self.images[name] = data
        return f"http://images.test/{name}"

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if request.method == "GET" and request.url.host == "images.test":
            data = self.images.get(request.url.path.lstrip("/"))
            if data is None:
                return httpx.Response(404, text="no such image")
            return httpx.Response(200, content=data, headers={"Content-Type": "image/png"})
        if request.method == "POST":
            await self.callbacks.put(request)
            return httpx.Response(self.statuses.pop(0) if self.statuses else 200, text="ok")
        return httpx.Response(404)

    async def next_callback(self, timeout: float = 5.0) -> httpx.Request:
        async with asyncio.timeout(timeout):
            return await self.callbacks.get()

    def drain(self) -> list[httpx.Request]:
        taken = []
        while not self.callbacks.empty():
            taken.append(self.callbacks.get_nowait())
        return taken


@dataclass
class Harness:
    sandbox: Sandbox
    client: httpx.AsyncClient
    outbound: Outbound

    async def fault(self, provider: str, kind: str, count: int = 1) -> None:
        response = await self.client.post(
            f"/{provider}/_sandbox/faults", json={"kind": kind, "count": count}
        )
        assert response.status_code == 201, response.text


@asynccontextmanager
async def running(settings: SandboxSettings = FAST) -> AsyncIterator[Harness]:
    outbound = Outbound()
    sandbox = Sandbox(settings, transport=httpx.MockTransport(outbound.handle))
    async with sandbox:
        transport = httpx.ASGITransport(app=sandbox.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
            yield Harness(sandbox, client, outbound)
