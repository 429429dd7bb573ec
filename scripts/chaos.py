"""A soak test of `hub serve` under everything at once, for minutes, then a consistency check.

For MINUTES (default 5) it mixes: floods of callbacks from many senders (in bursts, with
bodies of up to 16 KB, some resent byte for byte as providers retry), stream subscribers
that reconnect with Last-Event-ID (on their own, and when the hub dies under them),
subscribers that stall (a 4 KB receive window, never read), tasks through a standalone
sandbox with random faults queued ahead of them, and `kill -9` of the hub at random
moments, each followed by a restart on the same data dir and port.

Then it stops the chaos, lets everything finish (every unanswered callback resent until
answered, every task to its end, every subscriber caught up), stops the hub, opens its
SQLite database read-only, and checks:

- every acknowledged callback is stored exactly once, under the event id its answer gave;
- event ids are unique and every event a subscriber saw is stored under that id, unchanged;
- every task is terminal, with exactly one terminal event, of its status, and one queued;
- no event names a channel or task that does not exist; the database passes integrity_check;
- each subscriber's ids strictly increase across all its reconnects, none twice, and it
  has every event of its channel from where it started.

It prints a summary (senders, callbacks acked, kills, tasks, faults, subscribers,
reconnects, the hub's peak memory) and exits 1 on any inconsistency.

    scripts/chaos [MINUTES] [--seed N] [--senders N] [--subscribers N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import sqlite3
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import AUTH, KEY, data_url, make_png
from tests.processes import HubProcess, Memory, free_port, rows

CHANNELS = 4
TERMINAL = ("succeeded", "failed", "timed_out")
# The faults each emulator can apply to a submit from the hub: AtlasCloud sends no webhook
# to an http:// hub, and a callback fault would wait at the head of its queue forever.
FAULTS = {
    "acedata": ("429", "500", "hang", "duplicate_callback", "callback_before_response",
                "lost_callback", "fail"),
    "eachlabs": ("429", "500", "hang", "duplicate_callback", "callback_before_response",
                 "lost_callback", "fail"),
    "atlascloud": ("429", "500", "hang", "fail"),
    "segmind": ("429", "500", "hang", "fail"),
}  # fmt: skip
TASK_TIMEOUT = 45
IMAGE = data_url(make_png((32, 32), (200, 60, 60)))


@dataclass
class Stats:
    bodies: int = 0
    acked: int = 0
    duplicates_sent: int = 0
    retries_sent: int = 0
    kills: int = 0
    restarts: int = 0
    tasks: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    # Reconnects because the hub ended the stream (a kill, a cut-off), not by choice.
    cut_off: int = 0
    stalled_opened: int = 0
    peak_rss_kb: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)


@dataclass
class Subscriber:
    name: str
    channel: int
    start: int = 0
    ids: list[int] = field(default_factory=list)
    crcs: dict[int, int] = field(default_factory=dict)
    connections: int = 0


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.data = Path(args.data_dir or tempfile.mkdtemp(prefix="hub-chaos-"))
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.stats = Stats()
        self.up = asyncio.Event()
        self.stopping = asyncio.Event()
        self.hub: HubProcess | None = None
        self.sandbox: HubProcess | None = None
        self.channels: list[dict[str, Any]] = []
        # Every callback body sent: (sender, i) -> (channel, bytes); acked ones -> event id.
        self.sent: dict[tuple[int, int], tuple[int, bytes]] = {}
        self.acked: dict[tuple[int, int], int | None] = {}
        self.unanswered: set[tuple[int, int]] = set()
        self.task_ids: list[str] = []
        self.subscribers: list[Subscriber] = []
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30, connect=3),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )

    # -- processes ---------------------------------------------------------------------

    def hub_env(self) -> dict[str, str]:
        assert self.sandbox is not None
        env = {
            "HUB_ALLOW_LOOPBACK_URLS": "1",
            "HUB_TASK_TIMEOUT_SECONDS": str(TASK_TIMEOUT),
            "HUB_HEARTBEAT_SECONDS": "1",
            "HUB_SEND_TIMEOUT_SECONDS": "3",
        }
        for provider in FAULTS:
            prefix = f"HUB_{provider.upper()}_"
            env[prefix + "URL"] = f"{self.sandbox.url}/{provider}"
            env[prefix + "API_KEY"] = "key"
            # A worker's lease is the longest request timeout plus 30 s: keep it short.
            env[prefix + "REQUEST_TIMEOUT"] = "10"
            env[prefix + "FIRST_POLL_AFTER"] = "3"
            env[prefix + "POLL_INTERVAL"] = "1"
        return env

    async def start_hub(self) -> None:
        self.hub = HubProcess(self.data, self.port, extra=self.hub_env())
        await self.hub.ready(self.http)
        self.up.set()

    async def start(self) -> None:
        self.sandbox = HubProcess(
            self.data,
            free_port(),
            command=("sandbox",),
            extra={
                "HUB_SANDBOX_LATENCY": "1",
                "HUB_SANDBOX_KEY": "key",
                "HUB_SANDBOX_CALLBACK_RETRY_DELAY": "1",
            },
        )
        await self.sandbox.ready(self.http, "/eachlabs/_sandbox/faults")
        await self.start_hub()
        assert self.hub is not None
        for n in range(CHANNELS):
            response = await self.http.post(
                self.hub.url + "/v1/channels", headers=AUTH, json={"label": f"chaos-{n}"}
            )
            response.raise_for_status()
            self.channels.append(response.json())

    def stop_processes(self) -> None:
        for process in (self.hub, self.sandbox):
            if process is not None:
                process.kill()

    # -- chaos -------------------------------------------------------------------------

    async def killer(self) -> None:
        """kill -9 at random moments; restart after a random pause."""
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.rng.uniform(5, 25))
            if self.stopping.is_set():
                return
            assert self.hub is not None
            self.up.clear()
            self.hub.kill()
            self.stats.kills += 1
            await asyncio.sleep(self.rng.uniform(0, 1.5))
            await self.start_hub()
            self.stats.restarts += 1

    async def sample_memory(self) -> None:
        while True:
            if self.hub is not None and self.hub.alive():
                with contextlib.suppress(OSError, KeyError):
                    rss = Memory.of(self.hub.pid).rss
                    self.stats.peak_rss_kb = max(self.stats.peak_rss_kb, rss)
            await asyncio.sleep(1)

    async def post(self, key: tuple[int, int]) -> None:
        """Send one callback until the hub answers it (it may die meanwhile)."""
        channel, content = self.sent[key]
        url = self.local(self.channels[channel]["callback_url"])
        while True:
            await self.up.wait()
            try:
                response = await self.http.post(
                    url, content=content, headers={"content-type": "application/json"}
                )
            except httpx.TransportError:
                self.unanswered.add(key)
                await asyncio.sleep(0.2)
                continue
            if response.status_code != 200:
                self.stats.problem(f"callback {key}: HTTP {response.status_code}")
                return
            answer = response.json()
            if key in self.unanswered:
                self.stats.retries_sent += 1
                self.unanswered.discard(key)
            if key in self.acked:
                # Sent again after a 200: it must be recognised as the same delivery.
                if not answer.get("duplicate"):
                    self.stats.problem(f"callback {key} stored twice (event {answer})")
                return
            # A resend whose first try was committed before the crash is a duplicate too.
            self.acked[key] = None if answer.get("duplicate") else answer["event_id"]
            self.stats.acked += 1
            return

    async def sender(self, number: int) -> None:
        i = 0
        while not self.stopping.is_set():
            for _ in range(self.rng.randint(20, 300)):
                if self.stopping.is_set():
                    return
                key = (number, i)
                i += 1
                channel = self.rng.randrange(CHANNELS)
                pad = "p" * self.rng.choice((0, 100, 1000, 4000, 16000))
                body = orjson.dumps({"s": number, "i": key[1], "pad": pad})
                self.sent[key] = (channel, body)
                self.stats.bodies += 1
                await self.post(key)
                if self.acked and self.rng.random() < 0.02:
                    again = self.rng.choice(list(self.acked))
                    self.stats.duplicates_sent += 1
                    await self.post(again)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.rng.uniform(0, 3))

    async def subscribe(self, sub: Subscriber, until_replayed: bool = False) -> bool:
        """One connection: reads until the stream ends, a random lifetime passes, or (with
        ``until_replayed``) the replay is over. True if the hub ended it (or was gone)."""
        url = self.local(self.channels[sub.channel]["stream_url"])
        last = sub.ids[-1] if sub.ids else sub.start
        headers = {**AUTH, "last-event-id": str(last)}
        sub.connections += 1
        lifetime = 120 if until_replayed else self.rng.uniform(2, 30)
        try:
            async with asyncio.timeout(lifetime):
                async with self.http.stream(
                    "GET", url, headers=headers, timeout=httpx.Timeout(30, connect=3)
                ) as response:
                    if response.status_code != 200:
                        self.stats.problem(f"{sub.name}: stream answered {response.status_code}")
                        return True
                    event_id: int | None = None
                    data: list[str] = []
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            event_id = int(line[4:])
                        elif line.startswith("data: "):
                            data.append(line[6:])
                        elif line.startswith(":") and until_replayed:
                            return False
                        elif line == "":
                            if event_id is not None:
                                self.saw(sub, event_id, "\n".join(data).encode())
                            event_id, data = None, []
        except TimeoutError:
            return False  # its own lifetime ran out (a partial frame is read again)
        except httpx.TransportError:
            pass
        return True

    def saw(self, sub: Subscriber, event_id: int, data: bytes) -> None:
        if sub.ids and event_id <= sub.ids[-1]:
            self.stats.problem(f"{sub.name}: event {event_id} after {sub.ids[-1]}")
        sub.ids.append(event_id)
        sub.crcs[event_id] = zlib.crc32(data)

    async def subscriber(self, sub: Subscriber) -> None:
        while not self.stopping.is_set():
            await self.up.wait()
            if await self.subscribe(sub):
                self.stats.cut_off += 1
            self.stats.reconnects += 1
            await asyncio.sleep(self.rng.uniform(0, 0.5))

    async def staller(self) -> None:
        """A subscriber that never reads, replaced by another now and then."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            await self.up.wait()
            channel = self.channels[self.rng.randrange(CHANNELS)]
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", self.port))
                request = (
                    f"GET /v1/channels/{channel['id']}/events HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\r\n"
                )
                await loop.sock_sendall(sock, request.encode())
                self.stats.stalled_opened += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.rng.uniform(5, 40))
            except OSError:
                await asyncio.sleep(0.5)
            finally:
                sock.close()

    async def tasker(self) -> None:
        """Tasks on random providers, about one a second, some with a fault queued first."""
        assert self.sandbox is not None
        while not self.stopping.is_set():
            await asyncio.sleep(self.rng.uniform(0.2, 2))
            provider = self.rng.choice(list(FAULTS))
            if self.rng.random() < 0.4:
                kind = self.rng.choice(FAULTS[provider])
                response = await self.http.post(
                    f"{self.sandbox.url}/{provider}/_sandbox/faults",
                    json={"kind": kind, "count": 1},
                )
                if response.status_code == 201:
                    self.stats.faults[kind] += 1
            body = {
                "provider": provider,
                "input": {"prompt": "chaos", "images": [IMAGE]},
                "channel_id": self.channels[self.rng.randrange(CHANNELS)]["id"],
            }
            await self.up.wait()
            assert self.hub is not None
            with contextlib.suppress(httpx.TransportError):
                response = await self.http.post(self.hub.url + "/v1/tasks", json=body, headers=AUTH)
                if response.status_code == 202:
                    self.task_ids.append(response.json()["id"])
                    self.stats.tasks += 1
                else:
                    self.stats.problem(f"task refused: {response.status_code} {response.text}")

    def local(self, url: str) -> str:
        return f"http://127.0.0.1:{self.port}/" + url.split("/", 3)[3]

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> int:
        started = time.monotonic()
        await self.start()
        for n in range(self.args.subscribers):
            self.subscribers.append(Subscriber(f"subscriber-{n}", n % CHANNELS))
        background = [asyncio.create_task(self.sample_memory())]
        workers = [
            *(asyncio.create_task(self.sender(n)) for n in range(self.args.senders)),
            *(asyncio.create_task(self.subscriber(s)) for s in self.subscribers),
            *(asyncio.create_task(self.staller()) for _ in range(self.args.stalled)),
            asyncio.create_task(self.tasker()),
            asyncio.create_task(self.killer()),
        ]
        print(
            f"chaos: {self.args.minutes:g} min, seed {self.args.seed}, data in {self.data}",
            flush=True,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self.args.minutes * 60)
        self.stopping.set()
        print("chaos: stopping; letting everything finish", flush=True)
        await asyncio.wait_for(asyncio.gather(*workers), 120)
        if not self.up.is_set():
            await self.start_hub()
        await self.settle()
        for task in background:
            task.cancel()
        assert self.hub is not None
        # A clean stop: SIGTERM, as an operator would.
        self.hub.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.hub.proc.wait, 30)
        self.check()
        self.report(time.monotonic() - started)
        return 1 if self.stats.problems else 0

    async def settle(self) -> None:
        for key in list(self.unanswered):
            await self.post(key)
        assert self.hub is not None
        # Every task in the store, including any whose 202 the kill swallowed.
        deadline = time.monotonic() + TASK_TIMEOUT + 120
        unfinished = "SELECT id, status FROM tasks WHERE status NOT IN (?, ?, ?)"
        while left := rows(self.hub.db, unfinished, TERMINAL):
            if time.monotonic() > deadline:
                self.stats.problem(f"tasks never ended: {left[:10]}")
                break
            await asyncio.sleep(0.5)
        for sub in self.subscribers:
            await self.subscribe(sub, until_replayed=True)

    # -- the check ---------------------------------------------------------------------

    def check(self) -> None:
        assert self.hub is not None
        db = sqlite3.connect(f"file:{self.hub.db}?mode=ro", uri=True)
        try:
            self.check_db(db)
        finally:
            db.close()

    def check_db(self, db: sqlite3.Connection) -> None:
        problem = self.stats.problem
        [(integrity,)] = db.execute("PRAGMA integrity_check").fetchall()
        if integrity != "ok":
            problem(f"integrity_check: {integrity}")
        events = db.execute(
            "SELECT id, type, channel_id, task_id, data, delivery_id FROM events ORDER BY id"
        ).fetchall()
        ids = [row[0] for row in events]
        if len(ids) != len(set(ids)):
            problem("event ids repeat")
        by_id = {row[0]: row for row in events}
        delivery_ids = [row[5] for row in events if row[5] is not None]
        if len(delivery_ids) != len(set(delivery_ids)):
            problem("a delivery published more than one event")

        # Callbacks: every acknowledged one once, under the id its answer gave.
        channel_index = {c["id"]: n for n, c in enumerate(self.channels)}
        stored: dict[tuple[int, int], list[int]] = {}
        for event_id, kind, channel_id, _, data, _ in events:
            if kind != "callback.received":
                continue
            body = orjson.loads(data)["body"]
            key = (body["s"], body["i"])
            stored.setdefault(key, []).append(event_id)
            if self.sent.get(key, (None,))[0] != channel_index.get(channel_id):
                problem(f"callback {key} stored on the wrong channel")
        for key, event_ids in stored.items():
            if len(event_ids) > 1:
                problem(f"callback {key} stored {len(event_ids)} times: {event_ids}")
        for key, event_id in self.acked.items():
            if key not in stored:
                problem(f"acknowledged callback {key} is not stored")
            elif event_id is not None and stored[key] != [event_id]:
                problem(f"callback {key} answered as event {event_id}, stored as {stored[key]}")

        # Tasks: every one terminal, with one terminal event of its status.
        tasks = {row[0]: row[1] for row in db.execute("SELECT id, status FROM tasks")}
        for task_id in self.task_ids:
            if task_id not in tasks:
                problem(f"task {task_id} was accepted but is not stored")
        kinds: dict[str, Counter[str]] = {task_id: Counter() for task_id in tasks}
        for _, kind, _, task_id, _, _ in events:
            if task_id is not None and task_id in kinds:
                kinds[task_id][kind] += 1
        outcomes: Counter[str] = Counter()
        for task_id, status in tasks.items():
            outcomes[status] += 1
            seen = kinds[task_id]
            if status not in TERMINAL:
                problem(f"task {task_id} never ended: {status}")
            terminal = {k: n for k, n in seen.items() if k.removeprefix("task.") in TERMINAL}
            if terminal != {f"task.{status}": 1}:
                problem(f"task {task_id} ({status}) has terminal events {terminal}")
            if seen["task.queued"] != 1 or seen["task.submitted"] > 1:
                problem(f"task {task_id} has events {dict(seen)}")
        self.outcomes = outcomes

        # References.
        channels = {row[0] for row in db.execute("SELECT id FROM channels")}
        for event_id, _, channel_id, task_id, _, _ in events:
            if channel_id is not None and channel_id not in channels:
                problem(f"event {event_id} names a missing channel {channel_id}")
            if task_id is not None and task_id not in tasks:
                problem(f"event {event_id} names a missing task {task_id}")

        # Subscribers: in order, none twice, nothing missed, nothing changed.
        for sub in self.subscribers:
            if sub.ids != sorted(set(sub.ids)):
                problem(f"{sub.name}: ids not strictly increasing across reconnects")
            channel_id = self.channels[sub.channel]["id"]
            expected = [row[0] for row in events if row[2] == channel_id and row[0] > sub.start]
            if sub.ids != expected:
                missing = sorted(set(expected) - set(sub.ids))[:10]
                extra = sorted(set(sub.ids) - set(expected))[:10]
                problem(f"{sub.name}: missing {missing}, unexpected {extra}")
            for event_id, crc in sub.crcs.items():
                row = by_id.get(event_id)
                if row is None or zlib.crc32(bytes(row[4])) != crc:
                    problem(f"{sub.name}: event {event_id} is not stored as it was seen")
        self.events = len(events)

    def report(self, elapsed: float) -> None:
        s = self.stats
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(s.faults.items()))
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items()))
        lines = [
            f"chaos: ran {elapsed / 60:.1f} min (seed {self.args.seed}), data in {self.data}",
            f"  senders {self.args.senders}: {s.bodies} callbacks sent, {s.acked} acked,"
            f" {s.retries_sent} resent after a crash, {s.duplicates_sent} duplicates sent",
            f"  kills (kill -9) {s.kills}, restarts {s.restarts}",
            f"  tasks {s.tasks} ({outcomes})",
            f"  faults injected {sum(s.faults.values())} ({faults})",
            f"  subscribers {len(self.subscribers)}: {s.reconnects} reconnects"
            f" ({s.cut_off} after the hub ended the stream),"
            f" {sum(len(x.ids) for x in self.subscribers)} events received;"
            f" stalled subscribers opened {s.stalled_opened}",
            f"  events stored {self.events}; hub peak RSS {s.peak_rss_kb // 1024} MB",
        ]
        if s.problems:
            lines.append(f"INCONSISTENT: {len(s.problems)} problems")
            lines += [f"  - {p}" for p in s.problems[:50]]
        else:
            lines.append("consistent: every check passed")
        print("\n".join(lines), flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n")[0])
    parser.add_argument("minutes", nargs="?", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    parser.add_argument("--senders", type=int, default=24)
    parser.add_argument("--subscribers", type=int, default=16)
    parser.add_argument("--stalled", type=int, default=4)
    parser.add_argument("--data-dir")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    chaos = Chaos(parse(argv))
    try:
        return await chaos.run()
    finally:
        chaos.stop_processes()
        await chaos.http.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
