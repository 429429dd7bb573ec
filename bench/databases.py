"""Fresh PostgreSQL databases for the hub's replicas: one per measurement, dropped after it,
so every measurement starts empty (as the SQLite hub starts with a fresh data dir).

Each is named ``hub_bench_<hex>``, so a leftover is recognisable, and is listed in a file
while it may exist, so ``scripts/bench``'s exit trap can drop what a killed run left:

    python -m bench.databases drop-listed FILE ADMIN_URL
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.procstat import TICKS, children

PREFIX = "hub_bench_"
# Only names this module makes are ever dropped, whatever the list file says.
NAME = re.compile(r"hub_bench_[0-9a-f]{12}")
CONNECT_TIMEOUT = 10.0
SHOWN_SETTINGS = ("synchronous_commit", "fsync", "shared_buffers", "max_connections")


class NameFile:
    """Names of the databases that may exist now, one a line, for scripts/bench's exit trap."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def names(self) -> list[str]:
        if not self.path.exists():
            return []
        return [n for n in self.path.read_text().split() if NAME.fullmatch(n)]

    def _write(self, names: list[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{n}\n" for n in names))
        tmp.replace(self.path)

    def add(self, name: str) -> None:
        self._write([*self.names(), name])

    def remove(self, name: str) -> None:
        self._write([n for n in self.names() if n != name])


def database_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def shown_url(url: str) -> str:
    """The URL without its password, for the output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _postmaster(backend: int) -> int | None:
    """The PostgreSQL server's main PID, if it runs on this machine (its backend is here)."""
    if "postgres" not in _cmdline(backend):
        return None
    try:
        stat = Path(f"/proc/{backend}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@dataclass(frozen=True)
class Database:
    name: str
    url: str
    postmaster: int | None

    def backends_cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the backends connected to this database now (a
        backend's process title names its database). Not the WAL writer or checkpointer,
        which serve every database. A backend that exits takes its share with it; the hub's
        connection pools keep theirs open for the length of a measurement."""
        if self.postmaster is None:
            return None
        ticks = 0
        for pid in children(self.postmaster):
            if f" {self.name} " not in _cmdline(pid):
                continue
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / TICKS


async def _admin(admin_url: str) -> asyncpg.Connection:
    connection: asyncpg.Connection = await asyncpg.connect(admin_url, timeout=CONNECT_TIMEOUT)
    return connection


async def drop(admin_url: str, name: str) -> None:
    if not NAME.fullmatch(name):
        raise ValueError(f"not a bench database: {name!r}")
    admin = await _admin(admin_url)
    try:
        # FORCE: a replica that did not stop cleanly still holds sessions on it.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def fresh(admin_url: str, listed: NameFile) -> AsyncIterator[Database]:
    """A new, empty database; dropped on the way out, also on failure or cancellation."""
    name = PREFIX + secrets.token_hex(6)
    # Listed before it is created: the trap may try to drop a name that never existed, but
    # never misses one that does.
    listed.add(name)
    try:
        admin = await _admin(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            postmaster = _postmaster(await admin.fetchval("SELECT pg_backend_pid()"))
        finally:
            await admin.close()
        yield Database(name, database_url(admin_url, name), postmaster)
    finally:
        try:
            await asyncio.shield(drop(admin_url, name))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            # Still listed: the exit trap tries again. The error that got here, if any, is
            # the one worth raising.
            print(f"    ! could not drop database {name}: {exc}", flush=True)
        else:
            listed.remove(name)


async def describe(admin_url: str) -> dict[str, object]:
    """The server's version and settings that shape the figures, and leftover databases of
    earlier runs (reported, not dropped: another run may be using them)."""
    admin = await _admin(admin_url)
    try:
        shown: dict[str, object] = {"version": await admin.fetchval("SHOW server_version")}
        for setting in SHOWN_SETTINGS:
            shown[setting] = await admin.fetchval(f"SHOW {setting}")
        rows = await admin.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", PREFIX + "%"
        )
        shown["leftover_databases"] = [r["datname"] for r in rows]
    finally:
        await admin.close()
    return shown


async def drop_listed(path: Path, admin_url: str) -> int:
    failed = 0
    for name in NameFile(path).names():
        try:
            await drop(admin_url, name)
        except (OSError, asyncpg.PostgresError) as exc:
            failed += 1
            print(f"bench.databases: could not drop {name}: {exc}", file=sys.stderr)
        else:
            print(f"bench.databases: dropped {name}", file=sys.stderr)
    return failed


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "drop-listed":
        print("usage: python -m bench.databases drop-listed FILE ADMIN_URL", file=sys.stderr)
        return 2
    return 1 if asyncio.run(drop_listed(Path(argv[1]), argv[2])) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
