"""`hub serve` under a flood of callbacks while its store fails, on both stores.

SQLite: the data dir is a small tmpfs, and a filler file takes its last byte mid-flood:
a real full disk (ENOSPC on SQLite's own writes), not a simulated error. The test mounts
it itself as root, else in a user and mount namespace it starts the hub in; only where
neither is possible is it skipped, saying so. No stand-in does the same to a running hub:
``PRAGMA max_page_count`` is per connection (the hub's own, out of reach), and
``RLIMIT_FSIZE`` does not fail the WAL's rewrites of space it already holds. (The
in-process equivalent, max_page_count on the writer's connection, is in
tests/store/test_faults.py, in the quick suite.)

PostgreSQL: every connection of the hub's database is killed with
``pg_terminate_backend``, again and again for a while, mid-flood.

Either way: callbacks answer 503 with ``Retry-After``, never 500; every callback answered
200 is stored, once, under the id it was answered with; the hub recovers by itself when
the store is back (200s again, ``/healthz`` 200); and the callbacks that were refused,
sent again byte for byte as a provider retries, all land.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from tests.helpers import AUTH, until
from tests.postgres import SERVER_URL, fresh_database
from tests.processes import HubProcess, free_port, replay, running

pytestmark = pytest.mark.process

SENDERS = 16
PAD = "x" * 2000  # so the disk fills in seconds, not minutes


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=SENDERS + 8, max_keepalive_connections=SENDERS + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5), limits=limits) as client:
        yield client


@dataclass
class Flood:
    """What every callback sent was answered."""

    url: str
    acked: dict[bytes, int] = field(default_factory=dict)  # body -> event id (200)
    refused: list[bytes] = field(default_factory=list)  # 503, or no answer: to send again
    statuses: Counter[int] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # anything else, or a 503 without Retry-After

    async def send(self, http: httpx.AsyncClient, body: bytes) -> int:
        headers = {"content-type": "application/json"}
        try:
            answer = await http.post(self.url, content=body, headers=headers)
        except httpx.TransportError:
            self.refused.append(body)
            return 0
        self.statuses[answer.status_code] += 1
        if answer.status_code == 200:
            ack = answer.json()
            if not ack["duplicate"]:
                self.acked[body] = ack["event_id"]
        elif answer.status_code == 503:
            self.refused.append(body)
            retry_after = answer.headers.get("retry-after", "")
            if not (retry_after.isdigit() and int(retry_after) >= 1):
                self.wrong.append(f"503 without Retry-After: {answer.headers}")
            if answer.json()["error"]["code"] != "store_unavailable":
                self.wrong.append(f"503 {answer.text}")
        else:
            self.wrong.append(f"{answer.status_code} {answer.text[:300]}")
        return answer.status_code

    @contextlib.asynccontextmanager
    async def running(self, http: httpx.AsyncClient) -> AsyncIterator[None]:
        stop = asyncio.Event()

        async def sender(index: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                await self.send(http, orjson.dumps({"sender": index, "n": n, "pad": PAD}))

        tasks = [asyncio.create_task(sender(i)) for i in range(SENDERS)]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def run_fault(
    http: httpx.AsyncClient,
    hub: HubProcess,
    fault: Callable[[], Awaitable[None]],
    heal: Callable[[], Awaitable[None]],
) -> Flood:
    await hub.ready(http)
    channel = (await http.post(hub.url + "/v1/channels", headers=AUTH)).json()
    flood = Flood(channel["callback_url"])
    async with flood.running(http):
        await until(lambda: len(flood.acked) >= 300, timeout=60, every=0.05)
        before = len(flood.acked)
        await fault()
        await until(lambda: flood.statuses[503] >= 50, timeout=120, every=0.05)
        during = len(flood.acked) - before
        await heal()
        healed = len(flood.acked)
        # Recovered by itself: acknowledged callbacks again, with nothing done to the hub.
        await until(lambda: len(flood.acked) >= healed + 300, timeout=60, every=0.05)
    print(
        f"\nanswers: {dict(flood.statuses)}; acknowledged {len(flood.acked)}"
        f" ({during} while the store failed); refused {len(flood.refused)}"
    )
    assert flood.statuses[500] == 0 and not flood.wrong, flood.wrong[:5]

    # A provider sends a refused callback again, byte for byte: now each one lands.
    refused, flood.refused = flood.refused, []
    for body in refused:
        assert await flood.send(http, body) == 200, flood.wrong[-1:]

    # Nothing acknowledged is lost: each is stored once, under the id it was answered with.
    frames = await replay(http, channel["stream_url"], timeout=120)
    stored: dict[bytes, int] = {}
    for frame in frames:
        body = orjson.dumps(frame.json["body"])
        assert body not in stored, "stored twice"
        stored[body] = int(frame.id or 0)
    for body, event_id in flood.acked.items():
        assert stored.get(body) == event_id, (body[:40], event_id)
    assert all(body in stored for body in refused)

    async def healthy() -> bool:
        return (await http.get(hub.url + "/healthz")).status_code == 200

    await until(healthy, timeout=60, every=0.2)
    return flood


@dataclass
class Disk:
    """A small tmpfs for the hub's data dir: ``path`` as the hub sees it, ``prefix`` to start
    the hub with, and ``outside()`` the way to that file system from this process."""

    path: Path
    prefix: tuple[str, ...] = ()
    hub: HubProcess | None = None

    def outside(self) -> Path:
        if not self.prefix:
            return self.path
        assert self.hub is not None
        # The hub's own mount namespace, reached through its /proc entry.
        return Path(f"/proc/{self.hub.pid}/root{self.path}")


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Disk]:
    """A tmpfs of ``size`` at ``path``: mounted here where this process may (root), else in
    a user and mount namespace of the hub's own (``unshare``, no privilege needed where
    the kernel allows unprivileged user namespaces)."""
    path.mkdir(mode=0o700)
    options = f"size={size},mode=0700"
    if os.geteuid() == 0:
        mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
        subprocess.run(mount, check=True, capture_output=True)
        try:
            yield Disk(path)
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        return
    try:
        subprocess.run(["unshare", "-rm", "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (not root, no user namespaces): {exc}")
    script = f'mount -t tmpfs -o {options} tmpfs "{path}" && exec "$@"'
    yield Disk(path, ("unshare", "-rm", "sh", "-c", script, "sh"))


def fill(filler: Path) -> int:
    """Write ``filler`` until the file system has no byte left; the bytes written."""
    written = 0
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            chunk = b"\0" * size
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return written


async def test_a_full_disk_answers_503_and_loses_nothing(tmp_path, http):
    logs = tmp_path / "logs"
    logs.mkdir()
    with small_disk(tmp_path / "disk", "24m") as disk:
        hub = disk.hub = HubProcess(disk.path, free_port(), log_dir=logs, prefix=disk.prefix)

        async def fault() -> None:
            filler = disk.outside() / "filler"
            print(f"\nfilled the disk with {await asyncio.to_thread(fill, filler)} bytes")

        async def heal() -> None:
            (disk.outside() / "filler").unlink()

        with running(hub):
            await run_fault(http, hub, fault, heal)
            assert hub.alive(), hub.output()[-3000:]
        # A full disk is not a failed fsync: the hub went on, it did not stop.
        assert "fsync of the write-ahead log failed" not in hub.output()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async for url in fresh_database():
        yield url


async def test_dropped_postgres_connections_answer_503_and_lose_nothing(tmp_path, http, database):
    hub = HubProcess(tmp_path, free_port(), extra={"HUB_DATABASE_URL": database})
    name = database.rsplit("/", 1)[1]
    admin = await asyncpg.connect(SERVER_URL)
    killed = 0
    dropping: asyncio.Task[None] | None = None

    async def drop_all() -> None:
        nonlocal killed
        while True:
            killed += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await asyncio.sleep(0.1)

    async def fault() -> None:
        nonlocal dropping
        dropping = asyncio.create_task(drop_all())

    async def heal() -> None:
        assert dropping is not None
        dropping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dropping

    try:
        with running(hub):
            await run_fault(http, hub, fault, heal)
            assert hub.alive(), hub.output()[-3000:]
        print(f"connections terminated: {killed}")
        assert killed > 0
    finally:
        if dropping is not None:
            dropping.cancel()
        await admin.close()
