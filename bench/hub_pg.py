"""The hub on PostgreSQL ("hub-pg"): two ``hub serve`` replicas, A and B, on one database
created afresh for each measurement (and dropped after it), with the same secret and API key
and the rate limits off, as for the SQLite hub.

Channels are made on A. The intake load is split over both replicas; steady and fan-out
publishing goes to A while every subscriber is connected to B, so the latency and fan-out
figures are cross-replica: a callback committed by A reaches B's subscribers through B's
NOTIFY listener and one read of the store.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from bench import databases, servers
from bench.procstat import Server, Servers
from bench.targets import Hub

REPLICAS = ("a", "b")


class HubPostgres(Hub):
    name = "hub-pg"

    def __init__(self, ports: tuple[int, int], workdir: Path, api_key: str, admin_url: str):
        super().__init__(ports[0], workdir, api_key)
        self.ports = ports
        self.admin_url = admin_url
        # Shared by the replicas: a callback URL signed by one is accepted by the other.
        self._secret = secrets.token_urlsafe(32)
        self.listed = databases.NameFile(workdir / "databases")
        self._database: databases.Database | None = None

    def replica(self, instance: int, index: int, database_url: str) -> servers.Launch:
        letter = REPLICAS[index]
        return self.hub_launch(
            self.ports[index],
            self.workdir / f"hub-pg-data-{instance}-{letter}",
            f"hub-pg-{letter}.log",
            {"HUB_DATABASE_URL": database_url, "HUB_SECRET": self._secret},
        )

    def launch(self, instance: int) -> servers.Launch:
        """Replica A as it is started, but for the database's name (new at each start)."""
        placeholder = databases.database_url(self.admin_url, databases.PREFIX + "<fresh>")
        return self.replica(instance, 0, placeholder)

    def describe(self) -> str:
        argv = " ".join(self.launch(0).argv[:-1])
        pairs = zip(REPLICAS, self.ports, strict=True)
        ports = ", ".join(f"{letter.upper()} {port}" for letter, port in pairs)
        where = databases.shown_url(databases.database_url(self.admin_url, "hub_bench_*"))
        return f"ports {ports}: 2 x {argv} PORT, HUB_DATABASE_URL={where} (fresh each start)"

    @contextlib.asynccontextmanager
    async def fresh(self, pids: servers.PidFile) -> AsyncIterator[None]:
        self._starts += 1
        self.log_problems = []
        async with databases.fresh(self.admin_url, self.listed) as database:
            a, b = (self.replica(self._starts, i, database.url) for i in range(len(REPLICAS)))
            async with (
                servers.running(a, pids, self.log_problems) as process_a,
                servers.running(b, pids, self.log_problems) as process_b,
            ):
                self._database = database
                self._server = Servers(
                    self.name,
                    (Server("hub-pg A", process_a.pid), Server("hub-pg B", process_b.pid)),
                )
                try:
                    yield
                finally:
                    self._server = None
                    self._database = None

    def publish_urls(self, path: str) -> list[str]:
        return [f"http://{self.host}:{port}{path}" for port in self.ports]

    @property
    def subscribe_port(self) -> int:
        return self.ports[1]

    def db_cpu_seconds(self) -> float | None:
        return self._database.backends_cpu_seconds() if self._database is not None else None
