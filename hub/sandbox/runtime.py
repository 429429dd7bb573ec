"""What the four emulators share, and its lifecycle: settings, the one outbound HTTP
client, the background jobs, the file store, and the steps every job takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from starlette.requests import Request

from hub.sandbox.delivery import Delivery, DeliveryLog, deliver
from hub.sandbox.images import EditedImage, EditSpec, edit_images
from hub.sandbox.inputs import fetch_source
from hub.sandbox.jobs import JobRunner
from hub.sandbox.settings import SandboxSettings
from hub.sandbox.state import FileStore

# A "hang" ends when the client gives up or the sandbox stops; this bounds it regardless,
# because a server waits for open requests before it runs its shutdown.
HANG_LIMIT = 600.0
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30.0)


class Runtime:
    """Created with the Sandbox; usable between ``start()`` and ``stop()``."""

    def __init__(
        self, settings: SandboxSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.files = FileStore()
        self.jobs = JobRunner()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the sandbox is not started: call Sandbox.start() first")
        return self._client

    async def start(self) -> None:
        if self._client is not None or self._stopping.is_set():
            raise RuntimeError("a Sandbox is started once: create a new one")
        self._client = httpx.AsyncClient(
            transport=self._transport,
            timeout=_TIMEOUT,
            limits=_LIMITS,
            follow_redirects=True,
            headers={"User-Agent": "hub-sandbox"},
        )

    async def stop(self) -> None:
        self._stopping.set()
        await self.jobs.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def wait_latency(self) -> None:
        await asyncio.sleep(self.settings.latency)

    async def fetch_all(self, urls: Sequence[str]) -> list[bytes]:
        return [await fetch_source(url, client=self.client, files=self.files) for url in urls]

    async def render(
        self, sources: Sequence[bytes], spec: EditSpec, mask: bytes | None = None
    ) -> list[EditedImage]:
        # Pillow work blocks for tens of milliseconds per image: keep it off the event loop.
        return await asyncio.to_thread(edit_images, list(sources), spec, mask)

    def publish(self, image: EditedImage, mount: str) -> str:
        """Store an output and return the URL the emulator serves it at."""
        return f"{mount}/files/{self.files.put(image.data, image.content_type, image.extension)}"

    async def deliver(
        self,
        delivery: Delivery,
        *,
        attempts: int = 1,
        retry_delay: float = 0.0,
        log: DeliveryLog | None = None,
    ) -> bool:
        return await deliver(
            self.client, delivery, attempts=attempts, retry_delay=retry_delay, log=log
        )

    async def hang(self, request: Request) -> None:
        """Hold a request unanswered until the client disconnects or the sandbox stops."""
        waiters = [
            asyncio.ensure_future(_disconnected(request)),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=HANG_LIMIT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


async def _disconnected(request: Request) -> None:
    # The body has been read by now, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
