"""The servers under test: how each is started, where to publish, where to subscribe.

- the hub: ``hub serve`` with its embedded defaults and a fresh data dir; a fresh channel per
  measurement (``POST /v1/channels``); publish to its signed callback URL, subscribe at its
  stream URL with the bearer key.
- Nchan: nginx with ``nchan.conf`` (2 workers) under a tmp prefix; a fresh channel id per
  measurement; POST and EventSource GET on ``/ch/<id>``.
- bare: ``bare.py`` on uvicorn, ``POST /cb`` (intake only: it has no streams).
- the hub on PostgreSQL, two replicas: see ``bench.hub_pg``.
- the baseline: the hub as another commit built it (``scripts/bench --baseline REV``), from
  that commit's worktree and ``.venv``, started as the hub is.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import servers
from bench.http_client import Connection, Pool
from bench.procstat import Processes, Server

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent
NCHAN_CONF = BENCH_DIR / "nchan.conf"


@dataclass(frozen=True)
class Channel:
    publish_path: str
    stream_path: str
    stream_headers: dict[str, str]
    publish_headers: dict[str, str] = field(default_factory=dict)


class Target:
    name = ""
    streams = True

    def __init__(self, port: int, workdir: Path) -> None:
        self.host = HOST
        self.port = port
        self.workdir = workdir
        self._server: Processes | None = None
        self._starts = 0
        # Warnings and errors the server logged during its last start (see servers.running).
        self.log_problems: list[str] = []

    @property
    def server(self) -> Processes:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._server

    @contextlib.asynccontextmanager
    async def fresh(self, pids: servers.PidFile) -> AsyncIterator[None]:
        """A newly started instance for the duration of one measurement."""
        self._starts += 1
        self.log_problems = []
        async with servers.running(self.launch(self._starts), pids, self.log_problems) as process:
            self._server = Server(self.name, process.pid)
            try:
                yield
            finally:
                self._server = None

    def launch(self, instance: int) -> servers.Launch:
        raise NotImplementedError

    def describe(self) -> str:
        """How it is started, for the run's header."""
        return f"port {self.port}: {' '.join(self.launch(0).argv)}"

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def publish_urls(self, path: str) -> list[str]:
        """Where the intake load goes, split evenly."""
        return [self.url(path)]

    @property
    def subscribe_port(self) -> int:
        return self.port

    def db_cpu_seconds(self) -> float | None:
        """CPU seconds used so far by a database server working for it, if it has one."""
        return None

    def pool(self) -> Pool:
        return Pool(self.host, self.port)

    async def new_channel(self) -> Channel:
        raise NotImplementedError

    async def replay_from_here(self, channel: Channel) -> dict[str, str]:
        """Headers for a subscriber that wants every event published after this call."""
        raise NotImplementedError


class Hub(Target):
    name = "hub"

    def __init__(self, port: int, workdir: Path, api_key: str, bin_dir: Path = VENV_BIN) -> None:
        super().__init__(port, workdir)
        self.api_key = api_key
        self.bin_dir = bin_dir
        self._auth = {"Authorization": f"Bearer {api_key}"}

    def launch(self, instance: int) -> servers.Launch:
        data_dir = self.workdir / f"{self.name}-data-{instance}"
        return self.hub_launch(self.port, data_dir, f"{self.name}.log", {})

    def hub_launch(
        self, port: int, data_dir: Path, log: str, env: dict[str, str]
    ) -> servers.Launch:
        return servers.Launch(
            argv=[str(self.bin_dir / "hub"), "serve", "--port", str(port)],
            # Rate limits off: the bench measures the path, not the limiter; and the idle
            # row holds more connections (and streams, on one key) than a hub allows by default.
            env={
                "HUB_DATA_DIR": str(data_dir),
                "HUB_API_KEYS": self.api_key,
                "HUB_RATE_LIMIT_PER_KEY": "0",
                "HUB_RATE_LIMIT_PER_CALLBACK": "0",
                "HUB_MAX_CONNECTIONS": "100000",
                "HUB_QUOTA_STREAMS": "0",
                **env,
            },
            port=port,
            log=self.workdir / log,
            scratch=data_dir,
        )

    async def new_channel(self) -> Channel:
        connection = Connection(self.host, self.port)
        try:
            reply = await connection.request(
                "POST", "/v1/channels", {**self._auth, "Content-Type": "application/json"},
                b'{"label": "bench"}',
            )  # fmt: skip
        finally:
            await connection.close()
        if reply.status != 201:
            raise RuntimeError(f"hub: POST /v1/channels answered {reply.status}: {reply.body!r}")
        created = json.loads(reply.body)
        return Channel(
            publish_path=urlsplit(created["callback_url"]).path,
            stream_path=urlsplit(created["stream_url"]).path,
            stream_headers={**self._auth, "Accept": "text/event-stream"},
        )

    async def replay_from_here(self, channel: Channel) -> dict[str, str]:
        # A fresh channel: everything after event 0 is everything.
        return {"Last-Event-ID": "0"}


class Baseline(Hub):
    """The hub at another commit: its own checkout and ``.venv``, the same settings."""

    name = "baseline"

    def __init__(self, port: int, workdir: Path, api_key: str, checkout: Path, rev: str):
        super().__init__(port, workdir, api_key, bin_dir=checkout / ".venv" / "bin")
        self.checkout = checkout
        self.rev = rev

    def launch(self, instance: int) -> servers.Launch:
        data_dir = self.workdir / f"{self.name}-data-{instance}"
        # Its own code only: a PYTHONPATH naming this checkout would shadow the commit's.
        return self.hub_launch(self.port, data_dir, f"{self.name}.log", {"PYTHONPATH": ""})

    def describe(self) -> str:
        return f"commit {self.rev}, {super().describe()}"


class Nchan(Target):
    name = "nchan"

    def __init__(self, port: int, workdir: Path, connections: int = 10_000) -> None:
        super().__init__(port, workdir)
        # The idle row's streams, all of which may land on one worker, and some spare.
        self.worker_connections = max(16_000, connections + 1_000)

    def launch(self, instance: int) -> servers.Launch:
        prefix = self.workdir / f"nginx-{self.port}"
        prefix.mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        text = NCHAN_CONF.read_text().replace("@PREFIX@", str(prefix))
        text = text.replace("@WORKER_CONNECTIONS@", str(self.worker_connections))
        text = text.replace("@NOFILE@", str(self.worker_connections + 4_000))
        conf.write_text(text.replace("@PORT@", str(self.port)))
        return servers.Launch(
            argv=["nginx", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")],
            env={},
            port=self.port,
            log=self.workdir / "nginx.log",
        )

    async def new_channel(self) -> Channel:
        path = f"/ch/bench-{os.urandom(6).hex()}"
        return Channel(
            publish_path=path,
            stream_path=path,
            stream_headers={"Accept": "text/event-stream"},
            publish_headers={"Accept": "application/json"},
        )

    async def replay_from_here(self, channel: Channel) -> dict[str, str]:
        # Nchan's ids are "<time>:<tag>": publish a marker and resume after its id.
        connection = Connection(self.host, self.port)
        try:
            reply = await connection.request(
                "POST", channel.publish_path, {"Accept": "application/json"}, b'{"marker":true}'
            )
        finally:
            await connection.close()
        return {"Last-Event-ID": json.loads(reply.body)["last_message_id"]}


class Bare(Target):
    name = "bare"
    streams = False

    def launch(self, instance: int) -> servers.Launch:
        argv = [
            str(VENV_BIN / "uvicorn"), "--app-dir", str(BENCH_DIR), "bare:app",
            "--host", self.host, "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return servers.Launch(
            argv=argv,
            env={},
            port=self.port,
            log=self.workdir / "bare.log",
        )

    async def new_channel(self) -> Channel:
        return Channel(publish_path="/cb", stream_path="", stream_headers={})

    async def replay_from_here(self, channel: Channel) -> dict[str, str]:
        raise NotImplementedError("the bare endpoint has no streams")
