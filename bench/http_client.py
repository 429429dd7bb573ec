"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for the harness's own requests
(creating channels, publishing at a steady rate, publishing in bursts). Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | Callable[[], bytes] = b"",
    ) -> Reply:
        """One request. ``body`` may be a function, called just before the bytes are written
        (so a send time embedded in it is taken as late as possible)."""
        if self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        payload = body() if callable(body) else body
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"Content-Length: {len(payload)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        return await self._read_reply()

    async def _read_reply(self) -> Reply:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(int(status_line.split(" ", 2)[1]), headers, body)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
        await self._reader.readuntil(b"\r\n")
        return b"".join(parts)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


class Pool:
    """Keep-alive connections handed out one request at a time; grows when all are busy, so
    an open-loop sender is never held back by a slow reply."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[Connection] = []
        self._all: list[Connection] = []

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | Callable[[], bytes] = b"",
    ) -> Reply:
        connection = self._idle.pop() if self._idle else self._new()
        reply = await connection.request(method, path, headers, body)
        self._idle.append(connection)
        return reply

    def _new(self) -> Connection:
        connection = Connection(self.host, self.port)
        self._all.append(connection)
        return connection

    @property
    def size(self) -> int:
        return len(self._all)

    async def close(self) -> None:
        for connection in self._all:
            await connection.close()
        self._all.clear()
        self._idle.clear()
