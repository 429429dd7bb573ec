"""`hub serve` as a real process: asked to stop with SIGTERM it ends its streams and exits
promptly; killed with -9 while a provider works on a task, it finishes the task after a
restart. (Kill -9 under a flood of callbacks, round after round: test_crash_rounds.py.)"""

import asyncio
import signal

import httpx
import pytest

from tests.helpers import AUTH, data_url, make_png, stream, stream_to_end
from tests.processes import HubProcess, free_port, running

pytestmark = pytest.mark.process


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, connect=2)) as client:
        yield client


async def test_sigterm_ends_streams_and_exits(tmp_path, http):
    hub = HubProcess(tmp_path, free_port())
    with running(hub):
        await hub.ready(http)
        channel = (await http.post(hub.url + "/v1/channels", headers=AUTH)).json()
        async with stream(http, channel["stream_url"], AUTH) as sse:
            await sse.next()
            hub.proc.send_signal(signal.SIGTERM)
            with pytest.raises(EOFError):
                while True:
                    await sse.next(5)
        # Well inside the 10 s graceful-shutdown budget: the open stream did not hold it.
        # uvicorn re-raises the signal once shut down cleanly, so the status names it.
        assert await asyncio.to_thread(hub.proc.wait, 5) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in hub.output()


async def test_a_task_interrupted_by_kill_9_finishes_after_restart(tmp_path, http):
    """The hub dies while a provider is working on its task; the restarted hub picks the
    task up from the store and polls it to the end, without submitting it again."""
    sandbox = HubProcess(
        tmp_path,
        free_port(),
        command=("sandbox",),
        extra={"HUB_SANDBOX_LATENCY": "2", "HUB_SANDBOX_KEY": "key"},
    )
    port = free_port()
    extra = {
        "HUB_ATLASCLOUD_URL": f"{sandbox.url}/atlascloud",
        "HUB_ATLASCLOUD_API_KEY": "key",
        "HUB_ATLASCLOUD_FIRST_POLL_AFTER": "0.2",
        "HUB_ATLASCLOUD_POLL_INTERVAL": "0.2",
        "HUB_ALLOW_LOOPBACK_URLS": "1",
    }
    hub = HubProcess(tmp_path, port, extra=extra)
    with running(sandbox, hub):
        await sandbox.ready(http, "/eachlabs/_sandbox/faults")
        await hub.ready(http)

        body = {
            "provider": "atlascloud",
            "input": {"prompt": "p", "images": [data_url(make_png())]},
        }
        created = (await http.post(hub.url + "/v1/tasks", json=body, headers=AUTH)).json()
        async with stream(http, created["stream_url"], AUTH) as sse:
            while (await sse.next(10)).event != "task.submitted":
                pass
        hub.kill()

        restarted = HubProcess(tmp_path, port, extra=extra)
        with running(restarted):
            await restarted.ready(http)
            seen = await stream_to_end(http, created["stream_url"], AUTH)
            assert seen == ["task.queued", "task.submitted", "task.succeeded"]
            record = (await http.get(f"{hub.url}/v1/tasks/{created['id']}", headers=AUTH)).json()
            assert record["status"] == "succeeded" and record["attempts"] == 1
