"""A webhook receiver on loopback that holds requests open: the first ``hold`` are answered
only once ``release`` is set (or never, if the sender dies first); later ones at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Arrival:
    at: float  # time.monotonic()
    webhook_id: str


@dataclass
class Holding:
    hold: int = 1
    url: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.arrivals.append(Arrival(time.monotonic(), headers.get("webhook-id", "")))
            if len(self.arrivals) <= self.hold:
                await self.release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sender went away (killed, or gave up)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def holding(hold: int = 1) -> AsyncIterator[Holding]:
    receiver = Holding(hold)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
