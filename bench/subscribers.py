"""The harness's handle on one ``bench.sse_client`` process: start it, wait until every
connection is subscribed, send it commands, stop it (by its PID if it does not stop)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from bench.sse_client import ClientConfig

READY_TIMEOUT = 120.0
REPLY_TIMEOUT = 60.0


class SubscriberError(RuntimeError):
    pass


class Subscribers:
    def __init__(self, process: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self._process = process
        self.ready = ready

    @property
    def pid(self) -> int:
        return self._process.pid

    async def _reply(self, within: float = REPLY_TIMEOUT) -> dict[str, Any]:
        assert self._process.stdout is not None
        async with asyncio.timeout(within):
            line = await self._process.stdout.readline()
        if not line:
            raise SubscriberError(f"sse_client (pid {self.pid}) exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def read_ready(self) -> None:
        """Waits for the line saying every connection is subscribed (or failed)."""
        self.ready = await self._reply(READY_TIMEOUT)

    async def command(self, line: str, within: float = REPLY_TIMEOUT) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(line.encode() + b"\n")
        await self._process.stdin.drain()
        return await self._reply(within)

    async def mark(self) -> dict[str, Any]:
        return await self.command("mark")

    async def wait(self, seconds: float) -> dict[str, Any]:
        """Until every connection has its target frames (or closed), at most ``seconds``."""
        return await self.command(f"wait {seconds:g}", within=seconds + REPLY_TIMEOUT)

    async def stop(self) -> dict[str, Any]:
        final = await self.command("stop")
        await self._process.wait()
        return final

    def kill(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()


@contextlib.asynccontextmanager
async def subscribed(config: ClientConfig) -> AsyncIterator[Subscribers]:
    """A client process whose connections are all subscribed (or failed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sse_client",
        json.dumps(dataclasses.asdict(config)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    subscribers = Subscribers(process, {})
    try:
        await subscribers.read_ready()
        yield subscribers
    finally:
        subscribers.kill()
        await process.wait()
