"""Publishing from the harness's own process: unique JSON bodies, at a steady rate with an
embedded send time (latency rows), or as fast as a few connections go (catch-up row)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bench.http_client import Pool

JSON = {"Content-Type": "application/json"}


def body(seq: int, size: int, *, run: str, sent_ns: int | None = None) -> bytes:
    """A unique JSON body of about ``size`` bytes (the hub deduplicates identical bodies).

    ``sent_ns`` comes first and is followed by a comma: the subscriber finds it with one
    ``find`` (the hub keeps key order when it re-encodes the body into the event)."""
    head = f'{{"sent_ns":{sent_ns},' if sent_ns is not None else "{"
    text = f'{head}"task_id":"{run}-{seq:09d}","seq":{seq},"pad":"'
    return (text + "x" * max(0, size - len(text) - 2) + '"}').encode()


def new_run_tag() -> str:
    return os.urandom(4).hex()


@dataclass(frozen=True)
class Sent:
    count: int
    failed: int
    seconds: float
    max_behind_ms: float  # how late the open-loop schedule ran at worst
    connections: int
    reply_p50_ms: float | None = None  # POST to its 200 (the hub: committed)
    reply_p99_ms: float | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def steady(
    pool: Pool, path: str, headers: Mapping[str, str], rate: float, count: int, size: int
) -> Sent:
    """``count`` POSTs at ``rate``/s on an open-loop schedule, each stamped with its send time."""
    run = new_run_tag()
    loop = asyncio.get_running_loop()
    statuses: list[int] = []
    replies_ms: list[float] = []
    behind = 0.0

    async def send(seq: int) -> None:
        sent_ns = 0

        def stamped() -> bytes:
            nonlocal sent_ns
            sent_ns = time.monotonic_ns()
            return body(seq, size, run=run, sent_ns=sent_ns)

        reply = await pool.request("POST", path, {**JSON, **headers}, stamped)
        replies_ms.append((time.monotonic_ns() - sent_ns) / 1e6)
        statuses.append(reply.status)

    started = loop.time()
    tasks: list[asyncio.Task[None]] = []
    for seq in range(count):
        due = started + seq / rate
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        else:
            behind = max(behind, now - due)
        tasks.append(asyncio.create_task(send(seq)))
    await asyncio.gather(*tasks)
    seconds = loop.time() - started
    replies_ms.sort()
    return Sent(
        count=count,
        failed=sum(not 200 <= s < 300 for s in statuses),
        seconds=seconds,
        max_behind_ms=behind * 1e3,
        connections=pool.size,
        reply_p50_ms=replies_ms[len(replies_ms) // 2],
        reply_p99_ms=replies_ms[min(len(replies_ms) - 1, round(0.99 * (len(replies_ms) - 1)))],
    )


async def burst(
    pool: Pool, path: str, headers: Mapping[str, str], count: int, size: int, concurrency: int
) -> Sent:
    """``count`` unique POSTs over ``concurrency`` connections, each waiting for its reply."""
    run = new_run_tag()
    loop = asyncio.get_running_loop()
    next_seq = iter(range(count))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for seq in next_seq:
            reply = await pool.request("POST", path, {**JSON, **headers}, body(seq, size, run=run))
            failed += not 200 <= reply.status < 300

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sent(count, failed, loop.time() - started, 0.0, pool.size)


async def one(pool: Pool, path: str, headers: Mapping[str, str], size: int) -> int:
    """One stamped POST; returns its status."""
    run = new_run_tag()

    def stamped() -> bytes:
        return body(0, size, run=run, sent_ns=time.monotonic_ns())

    return (await pool.request("POST", path, {**JSON, **headers}, stamped)).status
