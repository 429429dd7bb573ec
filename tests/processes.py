"""`hub` commands run as real processes on loopback ports, for crash, restart and memory
tests, and what such tests read from outside a process: its resident memory, its log, its
SQLite database (opened read-only), and its streams as a client sees them."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.helpers import AUTH, KEY, Frame, stream, until

# Short enough that a replay's end (the first heartbeat after it) comes quickly.
HEARTBEAT_SECONDS = "0.3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubProcess:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        extra: dict[str, str] | None = None,
        command: tuple[str, ...] = ("serve",),
        log_dir: Path | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "HUB_DATA_DIR": str(data_dir),
            "HUB_API_KEYS": KEY,
            "HUB_SECRET": "process-test-secret",
            "HUB_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS,
            "HUB_RATE_LIMIT_PER_KEY": "0",
            "HUB_RATE_LIMIT_PER_CALLBACK": "0",
            **(extra or {}),
        }
        # Elsewhere than the data dir where that is a disk a test fills up.
        self.log = (log_dir or data_dir) / f"hub-{port}-{os.urandom(3).hex()}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                # ``prefix`` runs it inside another command that ends by exec-ing it.
                [*prefix, sys.executable, "-m", "hub", *command, "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def db(self) -> Path:
        return self.data_dir / "hub.db"

    async def ready(self, http: httpx.AsyncClient, path: str = "/healthz") -> None:
        async def up() -> bool:
            assert self.proc.poll() is None, self.output()
            with contextlib.suppress(httpx.TransportError):
                return (await http.get(self.url + path)).status_code == 200
            return False

        await until(up, timeout=30, every=0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def memory(self) -> Memory:
        return Memory.of(self.pid)


@contextlib.contextmanager
def running(*processes: HubProcess | None) -> Iterator[None]:
    """Kill whatever is still running on the way out, pass or fail."""
    try:
        yield
    finally:
        for process in processes:
            if process is not None:
                process.kill()


@dataclass(frozen=True)
class Memory:
    """A process's resident memory in kB: now (VmRSS) and its peak so far (VmHWM)."""

    rss: int
    peak: int

    @classmethod
    def of(cls, pid: int) -> Memory:
        values: dict[str, int] = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
        return cls(values["VmRSS"], values["VmHWM"])


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files toward ``wanted`` (children inherit
    it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """The hub's database as it is on disk, opened read-only (the hub may be running)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        yield connection
    finally:
        connection.close()


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with read_only(db) as connection:
        return connection.execute(sql, params).fetchall()


def local(url: str, hub: HubProcess) -> str:
    """``url`` (built on the hub's public URL, which may be a proxy) aimed at the hub itself."""
    return urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{hub.port}"))


async def replay(
    http: httpx.AsyncClient, url: str, last_event_id: int = 0, timeout: float = 60
) -> list[Frame]:
    """Every event a stream replays after ``last_event_id``: what it sends before its first
    heartbeat, which a stream sends only once it is live and idle."""
    frames: list[Frame] = []
    headers = {**AUTH, "last-event-id": str(last_event_id)}
    async with stream(http, url, headers) as sse:
        while True:
            frame = await sse.next(timeout)
            if frame.comments:
                return frames
            if frame.data:
                frames.append(frame)
