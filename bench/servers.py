"""Starting and stopping the servers under test, by PID.

Every measurement runs on a freshly started server (a new process; the hub with a new data
dir), so no row inherits another's memory, backlog or closing connections: the idle row's
"RSS growth per connection" in particular is only meaningful on a fresh process, since an
allocator reuses what an earlier row freed. Each running server's PID is kept in a file, so
``scripts/bench``'s exit trap can stop it even if this process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.http_client import Connection

HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# Log lines that say a figure may not be what it seems (the hub's format is
# "<time> LEVEL logger message", uvicorn's "LEVEL:    message").
PROBLEM = re.compile(rb"\b(WARNING|ERROR|CRITICAL)\b|^Traceback")
PROBLEMS_KEPT = 20


@dataclass(frozen=True)
class Launch:
    """How to start one server: a command, its environment, and where it answers."""

    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    scratch: Path | None = None  # removed once the server has stopped


class PidFile:
    """``PID PORT`` lines of the servers running now, for scripts/bench's exit trap."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, entries: dict[int, int]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{pid} {port}\n" for pid, port in entries.items()))
        tmp.replace(self.path)

    def _read(self) -> dict[int, int]:
        if not self.path.exists():
            return {}
        pairs = (line.split() for line in self.path.read_text().splitlines() if line.strip())
        return {int(pid): int(port) for pid, port in pairs}

    def add(self, pid: int, port: int) -> None:
        self._write(self._read() | {pid: port})

    def remove(self, pid: int) -> None:
        entries = self._read()
        entries.pop(pid, None)
        self._write(entries)


async def healthy(launch: Launch, process: subprocess.Popen[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEALTH_TIMEOUT
    while loop.time() < deadline:
        if process.poll() is not None:
            break
        connection = Connection("127.0.0.1", launch.port)
        try:
            if (await connection.request("GET", "/healthz")).status == 200:
                return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            await connection.close()
        await asyncio.sleep(0.05)
    log = launch.log.read_text(errors="replace")[-4000:] if launch.log.exists() else ""
    raise RuntimeError(f"{launch.argv[0]} did not answer /healthz on {launch.port}:\n{log}")


async def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


def log_problems(path: Path, offset: int) -> list[str]:
    """Warning and error lines written to the log after ``offset``: the first PROBLEMS_KEPT,
    then how many more there were."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            written = log.read()
    except OSError:
        return []
    found = [line for line in written.splitlines() if PROBLEM.search(line)]
    kept = [line.decode(errors="replace")[:300] for line in found[:PROBLEMS_KEPT]]
    if len(found) > PROBLEMS_KEPT:
        kept.append(f"... and {len(found) - PROBLEMS_KEPT} more such lines in {path.name}")
    return kept


@contextlib.asynccontextmanager
async def running(
    launch: Launch, pids: PidFile, problems: list[str] | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The server, started and healthy; stopped by its PID on the way out. Warnings and
    errors it logged meanwhile are added to ``problems``."""
    with launch.log.open("ab") as log:
        offset = log.tell()
        # Popen, not asyncio's: the PID is ours to stop, and starting it does not block.
        process = subprocess.Popen(  # noqa: ASYNC220, S603
            launch.argv,
            env={**os.environ, **launch.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    pids.add(process.pid, launch.port)
    try:
        await healthy(launch, process)
        yield process
    finally:
        # Shielded: a cancelled run still stops what it started.
        await asyncio.shield(stop(process))
        pids.remove(process.pid)
        if problems is not None:
            problems.extend(log_problems(launch.log, offset))
        if launch.scratch is not None:
            shutil.rmtree(launch.scratch, ignore_errors=True)
