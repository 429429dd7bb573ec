"""What the four emulators share, and its lifecycle: settings, the one outbound HTTP
client, the background jobs, the file store, and the steps every job takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response

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
T = TypeVar("T")
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
        # An injected transport (a test's) reaches nothing real: the address rules of
        # hub.net apply to real connections only.
        self.guarded = transport is None
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
        return [
            await fetch_source(
                url,
                client=self.client,
                files=self.files,
                guarded=self.guarded,
                allow_loopback=self.settings.allow_loopback,
            )
            for url in urls
        ]

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
            self.client,
            delivery,
            attempts=attempts,
            retry_delay=retry_delay,
            log=log,
            guarded=self.guarded,
            allow_loopback=self.settings.allow_loopback,
        )

    async def hold(self, request: Request) -> None:
        """The ``hang`` fault: hold until the client leaves, ``hang_seconds`` pass or the
        sandbox stops."""
        await self.hang(request, limit=self.settings.hang_seconds)

    async def finish(self, job: Coroutine[Any, Any, T], *, name: str) -> T:
        """Run ``job`` as a background job and wait for it: a client that leaves (and
        cancels this request) does not stop it, as a real provider's work goes on."""
        results: list[T] = []
        errors: list[Exception] = []

        async def run() -> None:
            try:
                results.append(await job)
            except Exception as error:  # the request's to answer (an ApiError), not a crash
                errors.append(error)

        await asyncio.shield(self.jobs.spawn(run(), name=name))
        if errors:
            raise errors[0]
        return results[0]

    async def hang(self, request: Request, *, limit: float = HANG_LIMIT) -> None:
        """Hold a request unanswered until the client disconnects or the sandbox stops."""
        waiters = [
            asyncio.ensure_future(_disconnected(request)),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(
                waiters, timeout=min(limit, HANG_LIMIT), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


async def _disconnected(request: Request) -> None:
    # The body has been read by now, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class CutResponse(Response):
    """The ``reset_after_accept`` fault: the status line and headers of a 200 go out,
    then the connection is cut before the body. Under a server (uvicorn) the raise closes
    the connection; through an in-process transport it reaches the client as the
    transport error a cut connection is."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise httpx.RemoteProtocolError("sandbox fault: connection reset after accept")
