"""`hub serve` killed with -9 under a flood of callbacks, round after round on one data dir.

Each round: 32 senders POST callbacks while a subscriber watches live; the hub is killed at
a moment drawn from a seeded RNG (after a number of acknowledged callbacks, or after a
delay); the restarted hub must replay every callback it ever answered 200 to, in every
round so far, exactly once, under the ids subscribers already saw. Callbacks that got no
answer are sent again byte for byte, as a provider retries, and must land once.

HUB_CRASH_SEED reproduces a run's kill plan (timing still varies); HUB_CRASH_ROUNDS sets
how many rounds (3 by default)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import AUTH, stream, until
from tests.processes import HubProcess, free_port, replay, running

pytestmark = pytest.mark.process

SENDERS = 32
ROUNDS = int(os.environ.get("HUB_CRASH_ROUNDS") or 3)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=SENDERS + 8, max_keepalive_connections=SENDERS + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, connect=2), limits=limits) as client:
        yield client


@dataclass
class Plan:
    """When a round's kill comes: after ``acks`` acknowledged callbacks, or ``delay`` s
    into the flood."""

    acks: int | None = None
    delay: float | None = None

    @classmethod
    def draw(cls, rng: random.Random) -> Plan:
        if rng.random() < 0.5:
            return cls(acks=rng.randint(20, 800))
        return cls(delay=round(rng.uniform(0.05, 2.5), 3))

    def __str__(self) -> str:
        if self.acks is not None:
            return f"kill -9 after {self.acks} acknowledged callbacks"
        return f"kill -9 {self.delay} s into the flood"


@dataclass
class Round:
    number: int
    plan: Plan
    acked: set[int] = field(default_factory=set)
    # Sent, but the hub died before answering: committed or not, nobody knows.
    unanswered: list[bytes] = field(default_factory=list)
    # Answers other than 200 and dropped connections; there should be none.
    refused: list[str] = field(default_factory=list)
    # What a live subscriber saw before the kill: id -> (round, i).
    seen_live: dict[int, tuple[int, int]] = field(default_factory=dict)


def body(round_number: int, i: int) -> bytes:
    return orjson.dumps({"round": round_number, "i": i})


async def flood(http: httpx.AsyncClient, hub: HubProcess, url: str, current: Round) -> None:
    """Senders post until the hub dies, which happens when ``current.plan`` says."""
    counter = iter(range(10**9))

    async def sender() -> None:
        while True:
            content = body(current.number, next(counter))
            try:
                response = await http.post(
                    url, content=content, headers={"content-type": "application/json"}
                )
            except httpx.TransportError:
                current.unanswered.append(content)
                return  # the hub is gone
            if response.status_code == 200:
                current.acked.add(key_of(orjson.loads(content))[1])
            else:
                current.refused.append(f"{response.status_code} {response.text[:200]}")

    senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
    try:
        if current.plan.acks is not None:
            want = current.plan.acks
            await until(lambda: len(current.acked) >= want or hub.proc.poll() is not None, 60)
        else:
            assert current.plan.delay is not None
            await asyncio.sleep(current.plan.delay)  # the chosen kill moment, not a wait
        hub.kill()
        await asyncio.wait_for(asyncio.gather(*senders), 30)
    finally:
        for task in senders:
            task.cancel()


async def watch(http: httpx.AsyncClient, url: str, last: int, current: Round) -> None:
    """A live subscriber until the hub dies under it."""
    headers = {**AUTH, "last-event-id": str(last)}
    with contextlib.suppress(EOFError, httpx.TransportError):
        async with stream(http, url, headers) as sse:
            while True:
                frame = await sse.next(60)
                if frame.id is not None:
                    current.seen_live[int(frame.id)] = _key(frame.json)


def _key(event: dict[str, Any]) -> tuple[int, int]:
    return key_of(event["body"])


def key_of(sent: dict[str, Any]) -> tuple[int, int]:
    return int(sent["round"]), int(sent["i"])


def check(stored: list[tuple[int, tuple[int, int]]], rounds: list[Round], context: str) -> None:
    """Every acknowledged callback of every round is stored once, and every event a
    subscriber saw live is still stored under the id it saw."""
    ids = [event_id for event_id, _ in stored]
    assert ids == sorted(set(ids)), f"{context}: event ids not strictly increasing"
    keys = [key for _, key in stored]
    duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
    assert not duplicates, f"{context}: stored twice: {duplicates[:10]}"
    by_id = dict(stored)
    present = set(keys)
    for r in rounds:
        lost = sorted(i for i in r.acked if (r.number, i) not in present)
        assert not lost, f"{context}: round {r.number} ({r.plan}) lost acked {lost[:10]}"
        for event_id, key in r.seen_live.items():
            assert by_id.get(event_id) == key, (
                f"{context}: round {r.number} ({r.plan}): event {event_id} was seen live as"
                f" {key}, but the store has {by_id.get(event_id)}"
            )


async def stored_events(http: httpx.AsyncClient, url: str) -> list[tuple[int, tuple[int, int]]]:
    return [(int(f.id or 0), _key(f.json)) for f in await replay(http, url)]


async def resend(http: httpx.AsyncClient, url: str, unanswered: list[bytes]) -> list[str]:
    """Unanswered callbacks again, byte for byte; whatever is not a 200."""
    problems = []
    for content in unanswered:
        response = await http.post(
            url, content=content, headers={"content-type": "application/json"}
        )
        if response.status_code != 200:
            problems.append(f"{response.status_code} {response.text[:200]}")
    return problems


async def test_kill_9_under_load_round_after_round_loses_no_acknowledged_callback(tmp_path, http):
    seed = int(os.environ.get("HUB_CRASH_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    port = free_port()
    rounds: list[Round] = []
    channel: dict[str, str] = {}

    for number in range(ROUNDS + 1):
        hub = HubProcess(tmp_path, port)
        with running(hub):
            await hub.ready(http)
            if not channel:
                channel = (await http.post(hub.url + "/v1/channels", headers=AUTH)).json()
            else:
                previous = rounds[-1]
                context = f"seed {seed}, after round {previous.number} ({previous.plan})"
                stored = await stored_events(http, channel["stream_url"])
                check(stored, rounds, context)
                problems = await resend(http, channel["callback_url"], previous.unanswered)
                assert not problems, f"{context}: retries refused: {problems[:5]}"
                stored = await stored_events(http, channel["stream_url"])
                check(stored, rounds, context + ", retries resent")
                present = {key for _, key in stored}
                missing = [c for c in previous.unanswered if key_of(orjson.loads(c)) not in present]
                assert not missing, f"{context}: a resent callback is not stored: {missing[:3]}"
            if number == ROUNDS:
                break
            current = Round(number, Plan.draw(rng))
            rounds.append(current)
            last = max((i for i, _ in await stored_events(http, channel["stream_url"])), default=0)
            watcher = asyncio.create_task(watch(http, channel["stream_url"], last, current))
            await flood(http, hub, channel["callback_url"], current)
            await asyncio.wait_for(watcher, 30)
            context = f"seed {seed}, round {number} ({current.plan})"
            assert not current.refused, f"{context}: refused: {current.refused[:5]}"
            print(
                f"{context}: {len(current.acked)} acked, {len(current.unanswered)} unanswered,"
                f" {len(current.seen_live)} seen live"
            )
