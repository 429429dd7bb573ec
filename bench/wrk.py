"""Runs wrk with ``unique_post.lua`` and returns its figures and its own CPU time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("unique_post.lua")
WRK = os.environ.get("WRK", "wrk")
GUARD_INTERVAL = 0.1


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    cpu_seconds: float  # wrk's user + system time
    stopped_early: bool

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _collect(process: subprocess.Popen[bytes]) -> tuple[str, float]:
    """wrk's output and CPU seconds, once it has exited (blocking: run in a thread)."""
    assert process.stdout is not None
    output = process.stdout.read().decode()
    # wait4, not wait: it also returns the child's resource usage.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return output, usage.ru_utime + usage.ru_stime


async def post(
    url: str,
    seconds: float,
    *,
    threads: int = 2,
    connections: int = 50,
    size: int = 1024,
    stop_when: Callable[[], bool] | None = None,
) -> WrkResult:
    """POSTs unique ``size``-byte JSON bodies to ``url`` for ``seconds``.

    ``stop_when`` is polled every 100 ms; when it says so, wrk gets SIGINT, which ends the run
    early with its summary (used to stop a server from buffering without bound)."""
    tag = os.urandom(4).hex()
    command = [
        WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", str(SCRIPT), url,
        "--", str(size), tag,
    ]  # fmt: skip
    # Popen, not asyncio's subprocess: wait4 must reap it, to read its resource usage.
    process = subprocess.Popen(  # noqa: ASYNC220, S603
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    collecting = asyncio.ensure_future(asyncio.to_thread(_collect, process))
    stopped_early = False
    try:
        while not collecting.done():
            await asyncio.wait({collecting}, timeout=GUARD_INTERVAL)
            if not collecting.done() and not stopped_early and stop_when and stop_when():
                process.send_signal(signal.SIGINT)
                stopped_early = True
        output, cpu = await collecting
    except asyncio.CancelledError:
        if process.returncode is None:
            process.kill()
        raise
    figures: dict[str, Any] | None = None
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            figures = json.loads(line.removeprefix("WRK_JSON "))
    if process.returncode != 0 or figures is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    return WrkResult(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        errors=figures["errors"],
        latency_p50_ms=figures["latency_p50_us"] / 1e3,
        latency_p99_ms=figures["latency_p99_us"] / 1e3,
        cpu_seconds=cpu,
        stopped_early=stopped_early,
    )
