"""Driving the adapters against the real emulators, in process.

``sandbox_env(settings)`` starts a Sandbox whose outbound client talks to ``World``: an
image host at http://images.test/ (the hub's signed blob URLs, as far as providers can
tell) and a callback receiver that records every POST. The adapters reach the emulators
through httpx.ASGITransport, at the same base URLs a deployed sandbox would have.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from hub.providers.base import InputImage, ProviderConfig
from hub.sandbox.app import Sandbox, SandboxSettings
from hub.sandbox.faults import FaultKind
from tests.helpers import make_png, open_image

__all__ = ["make_png", "open_image"]

SANDBOX = "http://sandbox.test"
CALLBACK = "http://hub.test/callbacks/signed-token"
KEY = "sk-test-0123456789abcdef"
FAST = SandboxSettings(latency=0, callback_retry_delay=0)


@dataclass
class World:
    """Everything outside the sandbox that it talks to."""

    images: dict[str, bytes] = field(default_factory=dict)
    callbacks: list[httpx.Request] = field(default_factory=list)

    def image(self, name: str = "image-1.png", data: bytes | None = None) -> InputImage:
        content = data if data is not None else make_png()
        self.images[name] = content

        async def load() -> bytes:
            return content

        return InputImage(
            blob_id=f"blob-{name}",
            content_type="image/png",
            filename=name,
            url=f"http://images.test/{name}",
            load=load,
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if request.method == "GET" and request.url.host == "images.test":
            data = self.images.get(request.url.path.lstrip("/"))
            if data is None:
                return httpx.Response(404)
            return httpx.Response(200, content=data, headers={"Content-Type": "image/png"})
        if request.method == "POST":
            self.callbacks.append(request)
            return httpx.Response(200, text="ok")
        return httpx.Response(404)


@dataclass
class Env:
    sandbox: Sandbox
    client: httpx.AsyncClient
    world: World
    # Raw paths (as sent, still quoted) the adapters asked the sandbox for, in order.
    paths: list[str] = field(default_factory=list)

    def config(self, provider: str, api_key: str = KEY, **changes: Any) -> ProviderConfig:
        return ProviderConfig(
            name=provider, base_url=f"{SANDBOX}/{provider}", api_key=api_key, **changes
        )

    def fault(self, provider: str, kind: str, count: int = 1) -> None:
        self.sandbox.faults(provider).add(FaultKind(kind), count)

    async def download(self, url: str) -> bytes:
        response = await self.client.get(url)
        assert response.status_code == 200
        return response.content

    async def callback(self) -> httpx.Request:
        """The one callback the finished jobs sent."""
        await self.sandbox.wait_idle()
        assert len(self.world.callbacks) == 1, self.world.callbacks
        return self.world.callbacks[0]


@asynccontextmanager
async def sandbox_env(settings: SandboxSettings = FAST) -> AsyncIterator[Env]:
    world = World()
    sandbox = Sandbox(settings, transport=httpx.MockTransport(world.handle))
    async with sandbox:
        inner = httpx.ASGITransport(app=sandbox.app)
        paths: list[str] = []

        async def recording(request: httpx.Request) -> httpx.Response:
            paths.append(request.url.raw_path.decode())
            return await inner.handle_async_request(request)

        transport = httpx.MockTransport(recording)
        async with httpx.AsyncClient(transport=transport, base_url=SANDBOX) as client:
            yield Env(sandbox, client, world, paths)


def static_image(name: str = "image-1.png", data: bytes | None = None) -> InputImage:
    """An input for adapters driven by a MockTransport rather than the sandbox."""
    content = data if data is not None else make_png()

    async def load() -> bytes:
        return content

    return InputImage(f"blob-{name}", "image/png", name, f"http://images.test/{name}", load)


def config(provider: str, api_key: str = KEY, **changes: Any) -> ProviderConfig:
    return ProviderConfig(
        name=provider, base_url=f"http://{provider}.test", api_key=api_key, **changes
    )


@asynccontextmanager
async def mock_client(
    handler: Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]],
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield client
