"""SSE subscribers as one raw-asyncio process: N TCP connections, minimal parsing.

Run by the harness as ``python -m bench.sse_client '<json config>'`` (see ``ClientConfig``).
It opens every connection, sends the GET, and prints one JSON line when all have answered
200 and sent their first body bytes (the hub's ``retry:`` line, Nchan's ``: hi``): from then
on each is subscribed. Then it obeys one command a line on stdin, answering one JSON line:

- ``mark``: frames received so far, this process's CPU seconds, the monotonic clock.
- ``wait SECONDS``: returns once every connection has ``target_frames`` frames (or has
  closed), or after SECONDS.
- ``stop``: the final figures (and latency percentiles in latency mode), then exits.

Frames are never decoded. In ``count`` mode a frame is an ``id:`` line, counted with
``bytes.count`` (chunked transfer framing puts ``\\r\\n`` before it, which still matches). In
``latency`` mode a frame is the ``"sent_ns":<digits>`` its publisher embedded (the hub
re-encodes the JSON body, Nchan forwards it as is); receipt minus that is one sample.
``time.monotonic_ns`` is CLOCK_MONOTONIC, the same clock in the publisher's process.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, cast

ID_LINE = b"\nid:"
SENT_TOKEN = b'"sent_ns":'
MAX_HEAD_BYTES = 16_384
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


@dataclass(frozen=True)
class ClientConfig:
    host: str
    port: int
    path: str
    headers: dict[str, str]
    connections: int
    mode: str = "count"  # or "latency"
    target_frames: int = 0
    connect_concurrency: int = 200
    connect_timeout: float = 60.0
    # Source addresses to bind to, in turn (127.0.0.x): each holds about 28,000 connections
    # to one server port, so 50,000 need two or more. Empty: the kernel chooses.
    sources: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: str) -> ClientConfig:
        return cls(**json.loads(raw))

    def request(self) -> bytes:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Totals:
    """What every connection adds to; one instance per process."""

    target: int
    frames: int = 0
    open: int = 0
    closed_by_server: int = 0
    reached: int = 0
    last_reach_ns: int = 0
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def count_frames(tail: bytes, data: bytes) -> tuple[int, bytes]:
    """``id:`` lines in ``data``, plus one that starts in the previous chunk's ``tail``."""
    found = data.count(ID_LINE)
    if tail:
        # tail and data[:3] are each shorter than the pattern: only a straddling one counts.
        found += (tail + data[:3]).count(ID_LINE)
    return found, data[-3:] if len(data) >= 3 else (tail + data)[-3:]


def scan_sent(pending: bytes, data: bytes, now_ns: int, out: array[int]) -> tuple[int, bytes]:
    """Appends ``now_ns - sent_ns`` for each embedded send time; returns (found, pending)."""
    buf = pending + data if pending else data
    found = 0
    pos = 0
    while True:
        start = buf.find(SENT_TOKEN, pos)
        if start < 0:
            return found, buf[-(len(SENT_TOKEN) - 1) :]
        digits = start + len(SENT_TOKEN)
        end = buf.find(b",", digits)
        if end < 0:
            return found, buf[start:]
        out.append(now_ns - int(buf[digits:end]))
        found += 1
        pos = end


class SseConnection(asyncio.Protocol):
    def __init__(self, totals: Totals, latency: bool) -> None:
        self._totals = totals
        self._latency = latency
        self._head = bytearray()
        self._in_body = False
        self._carry = b"\n"  # so an ``id:`` at the very start of the body counts
        self._frames = 0
        self._lost_expected = False
        self.transport: asyncio.Transport | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self._in_body:
            data = self._read_head(data)
            if not data:
                return
        if not self.started.done():
            self.started.set_result(None)
        if self._latency:
            found, self._carry = scan_sent(self._carry, data, now, self._totals.latencies_ns)
        else:
            found, self._carry = count_frames(self._carry, data)
        if found:
            self._add(found, now)

    def _read_head(self, data: bytes) -> bytes:
        """Collects the response head; returns the body bytes that followed it, if any."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD_BYTES:
                self._fail("response head too large")
            return b""
        status_line = bytes(self._head[: self._head.find(b"\r\n")])
        if status_line.split(b" ", 2)[1:2] != [b"200"]:
            self._fail(status_line.decode("latin-1"))
            return b""
        self._in_body = True
        if self._latency:
            self._carry = b""
        body = bytes(self._head[end + 4 :])
        self._head = bytearray()
        return body

    def _fail(self, reason: str) -> None:
        if not self.started.done():
            self.started.set_exception(ConnectionError(reason))
        self._lost_expected = True
        if self.transport is not None:
            self.transport.close()

    def _add(self, found: int, now: int) -> None:
        totals = self._totals
        before = self._frames
        self._frames += found
        totals.frames += found
        if totals.target and before < totals.target <= self._frames:
            totals.reached += 1
            totals.last_reach_ns = max(totals.last_reach_ns, now)
            totals.changed.set()

    def close(self) -> None:
        self._lost_expected = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(exc or ConnectionError("closed before the first byte"))
        if self._in_body:
            self._totals.open -= 1
            if not self._lost_expected:
                self._totals.closed_by_server += 1
                self._totals.changed.set()


class Client:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.totals = Totals(target=config.target_frames)
        self.connections: list[SseConnection] = []
        self.failures: list[str] = []
        self.connect_start_ns = 0
        self.connect_seconds = 0.0

    async def open_all(self) -> None:
        loop = asyncio.get_running_loop()
        request = self.config.request()
        gate = asyncio.Semaphore(self.config.connect_concurrency)
        latency = self.config.mode == "latency"

        sources = self.config.sources

        async def open_one(number: int) -> None:
            async with gate:
                try:
                    async with asyncio.timeout(self.config.connect_timeout):
                        _, protocol = await loop.create_connection(
                            lambda: SseConnection(self.totals, latency),
                            sock=await self._connected(sources[number % len(sources)]),
                        ) if sources else await loop.create_connection(
                            lambda: SseConnection(self.totals, latency),
                            self.config.host,
                            self.config.port,
                        )  # fmt: skip
                        assert protocol.transport is not None
                        protocol.transport.write(request)
                        await protocol.started
                except (OSError, TimeoutError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    return
                self.connections.append(protocol)
                self.totals.open += 1

        self.connect_start_ns = time.monotonic_ns()
        await asyncio.gather(*(open_one(n) for n in range(self.config.connections)))
        self.connect_seconds = (time.monotonic_ns() - self.connect_start_ns) / 1e9

    async def _connected(self, source: str) -> socket.socket:
        """A TCP socket from ``source`` connected to the server. The port is left to the
        connect (IP_BIND_ADDRESS_NO_PORT), so it is chosen per destination, not per bind."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await asyncio.get_running_loop().sock_connect(
                sock, (self.config.host, self.config.port)
            )
        except BaseException:
            sock.close()
            raise
        return sock

    async def wait(self, seconds: float) -> None:
        totals = self.totals
        deadline = time.monotonic() + seconds
        while totals.reached + totals.closed_by_server < len(self.connections):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            totals.changed.clear()
            try:
                async with asyncio.timeout(left):
                    await totals.changed.wait()
            except TimeoutError:
                return

    def mark(self) -> dict[str, Any]:
        return {
            "frames": self.totals.frames,
            "open": self.totals.open,
            "closed_by_server": self.totals.closed_by_server,
            "reached": self.totals.reached,
            "cpu_seconds": cpu_seconds(),
            "t_ns": time.monotonic_ns(),
        }

    def final(self) -> dict[str, Any]:
        totals = self.totals
        figures = self.mark()
        figures.update(
            connected=len(self.connections),
            failed=len(self.failures),
            connect_seconds=self.connect_seconds,
            connect_start_ns=self.connect_start_ns,
            last_reach_ns=totals.last_reach_ns,
            max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )
        if self.config.mode == "latency":
            figures["latency"] = percentiles(totals.latencies_ns)
        return figures

    def close_all(self) -> None:
        for connection in self.connections:
            connection.close()


def percentiles(samples: array[int]) -> dict[str, float | int]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return ordered[min(last, round(q * last))] / 1e6

    return {"count": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_open_files_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def main(config: ClientConfig) -> None:
    client = Client(config)
    await client.open_all()
    say(
        {
            "ready": True,
            "connected": len(client.connections),
            "failed": len(client.failures),
            "errors": sorted(set(client.failures))[:5],
            "connect_seconds": client.connect_seconds,
        }
    )
    commands = await stdin_lines()
    while line := (await commands.readline()).decode().strip():
        verb, *args = line.split()
        if verb == "mark":
            say(client.mark())
        elif verb == "wait":
            await client.wait(float(args[0]))
            say(client.mark())
        elif verb == "stop":
            break
        else:
            say({"error": f"unknown command {verb!r}"})
    final = client.final()
    client.close_all()
    say(final)


def run() -> None:
    raise_open_files_limit()
    config = ClientConfig.from_json(sys.argv[1])
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(config))
    else:
        uvloop.run(main(config))


if __name__ == "__main__":
    run()
