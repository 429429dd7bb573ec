"""A tiny HTTP/1.1 server on loopback that misbehaves on purpose, for the failure
classification tests: it reads each request in full (so the client has certainly sent
it), then answers, holds the connection without answering, closes it, or cuts an answer
in the middle. It records which connection each request arrived on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class Hang:
    """Read the request, then say nothing until the client gives up."""


@dataclass(frozen=True)
class Close:
    """Read the request, then close the connection without a byte of answer."""


@dataclass(frozen=True)
class Cut:
    """Read the request, send the status line, headers and part of the body, then close."""

    status: int = 200


Behaviour = Answer | Hang | Close | Cut


@dataclass(frozen=True)
class Seen:
    connection: int
    method: str
    path: str
    body: bytes


@dataclass
class RawServer:
    url: str
    routes: dict[str, Callable[[], Behaviour]]
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def on(self, path: str, behaviour: Behaviour) -> None:
        self.routes[path] = lambda: behaviour


async def _serve_connection(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    server.connections += 1
    number = server.connections
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = target.split("?", 1)[0]
            server.seen.append(Seen(number, method, path, body))
            make = server.routes.get(path)
            behaviour = make() if make is not None else Answer(404, b'{"error": "not found"}')
            if isinstance(behaviour, Hang):
                await reader.read()  # until the client closes
                return
            if isinstance(behaviour, Close):
                return
            if isinstance(behaviour, Cut):
                writer.write(
                    f"HTTP/1.1 {behaviour.status} OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: 1000\r\n\r\n".encode()
                    + b'{"predictionID": "cut-'
                )
                await writer.drain()
                return
            extra = "".join(f"{name}: {value}\r\n" for name, value in behaviour.headers)
            writer.write(
                f"HTTP/1.1 {behaviour.status} X\r\n{extra}"
                f"Content-Length: {len(behaviour.body)}\r\n\r\n".encode()
                + behaviour.body
            )
            await writer.drain()
    finally:
        writer.close()


@asynccontextmanager
async def raw_server() -> AsyncIterator[RawServer]:
    tasks: set[asyncio.Task[None]] = set()
    holder: list[RawServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _serve_connection(holder[0], reader, writer)
        finally:
            tasks.discard(task)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    holder.append(RawServer(f"http://127.0.0.1:{port}", {}))
    try:
        yield holder[0]
    finally:
        listener.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.wait_closed()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
