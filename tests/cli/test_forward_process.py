"""`hub forward` as a real process between a real hub and a real local server, each killed
and restarted in turn while deliveries keep coming: every delivery reaches the local server
exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import AUTH, KEY, until
from tests.processes import HubProcess, free_port

pytestmark = pytest.mark.process


class Process:
    """A child process with its output in a file (a pipe nobody reads could fill)."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)

    def kill(self) -> None:
        self.stop()


def received(record: Path) -> list[dict[str, str]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


async def test_every_delivery_reaches_the_local_server_once_across_restarts(tmp_path):
    record = tmp_path / "received.ndjson"
    local_port = free_port()
    hub_port = free_port()
    hub = HubProcess(tmp_path, hub_port)
    processes: list[Process | HubProcess] = [hub]

    def local_server() -> Process:
        server = Process(tmp_path / "local.log", "-m", "tests.cli.hook_server",
                         str(local_port), str(record))  # fmt: skip
        processes.append(server)
        return server

    def forwarder() -> Process:
        command = Process(
            tmp_path / "forward.log", "-m", "hub", "forward", channel["id"],
            "--to", f"http://127.0.0.1:{local_port}/hook", "--url", hub.url, "--key", KEY,
            "--state", str(tmp_path / "forward-state.json"),
        )  # fmt: skip
        processes.append(command)
        return command

    sent = 0

    async def send(http: httpx.AsyncClient, count: int) -> None:
        nonlocal sent
        for _ in range(count):
            answer = await http.post(
                channel["callback_url"] + f"?seq={sent}", content=b"n=%d&x=a+b" % sent,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            sent += 1

    async def all_arrived() -> None:
        await until(lambda: len(received(record)) >= sent, timeout=60, every=0.05)

    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await hub.ready(http)
            channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
            local = local_server()
            forward = forwarder()
            await until(lambda: "forwarding " in forward.output(), timeout=30, every=0.05)
            await send(http, 10)
            await all_arrived()

            # hub forward dies (kill -9) while deliveries keep coming; restarted, it resumes.
            forward.kill()
            await send(http, 10)
            forward = forwarder()
            await all_arrived()

            # The local server dies: hub forward waits for it, then sends what came meanwhile.
            local.kill()
            await send(http, 10)
            await until(lambda: "does not answer" in forward.output(), timeout=30)
            local = local_server()
            await all_arrived()

            # The hub itself restarts: the stream resumes with Last-Event-ID.
            hub.kill()
            hub = HubProcess(tmp_path, hub_port)
            processes.append(hub)
            await hub.ready(http)
            await send(http, 10)
            await all_arrived()

            # Stopped (SIGTERM) while deliveries stream in: what is in flight is answered
            # and saved before it exits, so the restart neither repeats nor skips one.
            sending = asyncio.create_task(send(http, 20))
            await until(lambda: len(received(record)) >= sent - 15, timeout=30, every=0.01)
            forward.stop(signal.SIGTERM)
            await sending
            forward = forwarder()
            await all_arrived()
            # Nothing more comes: give a repeat the time to show itself.
            await send(http, 1)
            await all_arrived()
    finally:
        for process in processes:
            process.kill()
    got = received(record)
    bodies = [line["body"] for line in got]
    assert bodies == [f"n={n}&x=a+b" for n in range(sent)], forward.output()
    assert [line["path"] for line in got] == [f"/hook?seq={n}" for n in range(sent)]
    assert len({line["delivery_id"] for line in got}) == sent
    assert {line["content_type"] for line in got} == {"application/x-www-form-urlencoded"}
    assert forward.output().count(" -> 200 in ") >= 1
