"""Tasks in every state survive `kill -9` of `hub serve` and finish after the restart, once.

The providers run in a standalone sandbox process, so their jobs outlive the hub. Two HTTP
gates (proxies in this test process) stand between the processes, and the test decides
what passes them: that is how each task is held in the state it is meant to be in when
the hub dies, by what has or has not reached it, never by how long anything takes.

- ``public``: the hub's public URL, which providers post callbacks to and fetch input
  images from.
- ``providers``: in front of the AceData, AtlasCloud and Segmind emulators (their output
  URLs point back through it, so downloads pass it too).

At the kill: two tasks have ended (succeeded, failed); one is queued, its submits failed
by the gate, waiting out a backoff; one is submitted and polled, every status read failed
though its job is done; one is submitted and its callback came with URLs whose downloads
all fail; one is submitted and its webhook is held at the gate. After the restart each
ends exactly once, and the streams replay what was stored before the kill unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from hub.sandbox.app import PROVIDERS
from hub.store import event_bodies
from hub.store.columns import EVENT_COLUMNS
from tests.helpers import AUTH, Frame, data_url, make_png, request_body, stream, until
from tests.processes import HubProcess, free_port, local, replay, rows, running

pytestmark = pytest.mark.process

Verdict = Literal["pass", "hold", "fail"]
Rule = Callable[[str, str], Verdict]
TERMINAL = ("task.succeeded", "task.failed", "task.timed_out")
SUCCEEDED = ["task.queued", "task.submitted", "task.succeeded"]


def pass_all(method: str, path: str) -> Verdict:
    return "pass"


class Gate:
    """An HTTP proxy whose rule says, per request, to pass it on, hold it until the rule
    changes, or fail it with a 503. It records the requests it failed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rule: Rule = pass_all
        self.failed: list[tuple[str, str]] = []
        self.held = 0
        self._changed = asyncio.Event()
        self._client = httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def set(self, rule: Rule) -> None:
        self.rule = rule
        self._changed.set()
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Gate:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        await until(lambda: self._server.started, timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.set(pass_all)
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)
        await self._client.aclose()
        self._sock.close()

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        method, path = scope["method"], scope["path"]
        body = await request_body(receive)
        while (verdict := self.rule(method, path)) == "hold":
            self.held += 1
            await self._changed.wait()
            self.held -= 1
        if verdict == "fail":
            self.failed.append((method, path))
            await _respond(send, 503, [], b"closed by the test's gate")
            return
        query = scope["query_string"].decode()
        url = self.upstream + path + (f"?{query}" if query else "")
        # The Host header goes on unchanged: the emulators build their file URLs from it,
        # so downloads of their outputs come back through this gate too.
        headers = [(k, v) for k, v in scope["headers"] if k.decode().lower() not in _HOP_BY_HOP]
        try:
            response = await self._client.request(method, url, headers=headers, content=body)
        except httpx.TransportError as exc:
            await _respond(send, 502, [], f"upstream: {type(exc).__name__}".encode())
            return
        answer = [
            (k.encode(), v.encode())
            for k, v in response.headers.multi_items()
            if k.lower() not in _HOP_BY_HOP
        ]
        await _respond(send, response.status_code, answer, response.content)


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=2)) as client:
        yield client


@dataclass
class Task:
    role: str
    id: str
    provider: str

    @property
    def stream(self) -> str:
        return f"/v1/tasks/{self.id}/events"


async def submit(
    http: httpx.AsyncClient, hub: HubProcess, role: str, provider: str, channel: str
) -> Task:
    body = {
        "provider": provider,
        "input": {"prompt": role, "images": [data_url(make_png())]},
        "channel_id": channel,
    }
    response = await http.post(hub.url + "/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return Task(role, response.json()["id"], provider)


async def fault(http: httpx.AsyncClient, sandbox: HubProcess, provider: str, kind: str) -> None:
    response = await http.post(
        f"{sandbox.url}/{provider}/_sandbox/faults", json={"kind": kind, "count": 1}
    )
    assert response.status_code == 201, response.text


async def faults_pending(http: httpx.AsyncClient, sandbox: HubProcess, provider: str) -> bool:
    listing = (await http.get(f"{sandbox.url}/{provider}/_sandbox/faults")).json()
    return bool(listing["pending"])


async def until_event(http: httpx.AsyncClient, hub: HubProcess, task: Task, kind: str) -> None:
    async with stream(http, hub.url + task.stream, AUTH) as sse:
        while (await sse.next(30)).event != kind:
            pass


async def finish(http: httpx.AsyncClient, hub: HubProcess, task: Task) -> list[Frame]:
    """The task's whole stream, from its start until it closes after the terminal event."""
    frames = []
    async with stream(http, hub.url + task.stream, AUTH) as sse:
        with contextlib.suppress(EOFError):
            while True:
                frame = await sse.next(60)
                if frame.data:
                    frames.append(frame)
    return frames


async def record(http: httpx.AsyncClient, hub: HubProcess, task: Task) -> dict[str, Any]:
    response = await http.get(f"{hub.url}/v1/tasks/{task.id}", headers=AUTH)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# What a finished task's record says that must never change (a watch URL, say, is minted
# afresh on every read).
STABLE = (
    "id", "provider", "provider_task_id", "status", "outputs", "error", "attempts",
    "created_at", "updated_at",
)  # fmt: skip


def stable(view: dict[str, Any]) -> dict[str, Any]:
    return {name: view[name] for name in STABLE}


def stored_task(hub: HubProcess, task: Task) -> tuple[str, int, bool]:
    """(status, attempts, whether a result waits to be downloaded), as on disk."""
    [(status, attempts, result)] = rows(
        hub.db, "SELECT status, attempts, result FROM tasks WHERE id = ?", (task.id,)
    )
    return status, attempts, result is not None


def stored_events(hub: HubProcess) -> list[tuple[int, str, str | None, bytes]]:
    """Every event as the store keeps it, a callback's body put back from its delivery
    (``hub.store.event_bodies``), as every read of the store does."""
    found = []
    sql = f"SELECT {EVENT_COLUMNS} FROM events ORDER BY id"
    for i, t, _, task, _, data, _, at, form, body in rows(hub.db, sql):
        data = bytes(data)
        if at is not None and body is not None:
            data = event_bodies.assemble(data, at, form, bytes(body))
        found.append((i, t, task, data))
    return found


def sandbox_process(tmp_path: Any) -> HubProcess:
    return HubProcess(
        tmp_path,
        free_port(),
        command=("sandbox",),
        extra={
            "HUB_SANDBOX_LATENCY": "1",
            "HUB_SANDBOX_KEY": "key",
            "HUB_SANDBOX_CALLBACK_RETRY_DELAY": "0.5",
            # AceData answers with URLs to download, not base64.
            "HUB_SANDBOX_ACEDATA_OUTPUT": "url",
        },
    )


def hub_env(sandbox: HubProcess, **urls: str) -> dict[str, str]:
    """Every provider configured, each at the sandbox unless ``urls`` says otherwise."""
    env = {"HUB_ALLOW_LOOPBACK_URLS": "1"}
    for provider in PROVIDERS:
        env[f"HUB_{provider.upper()}_URL"] = urls.get(provider, f"{sandbox.url}/{provider}")
        env[f"HUB_{provider.upper()}_API_KEY"] = "key"
    return env


async def test_tasks_in_every_state_survive_kill_9_and_finish_once(tmp_path, http):
    sandbox = sandbox_process(tmp_path)
    port = free_port()
    with running(sandbox):
        await sandbox.ready(http, "/eachlabs/_sandbox/faults")
        async with Gate(f"http://127.0.0.1:{port}") as public, Gate(sandbox.url) as providers:
            extra = {
                **hub_env(
                    sandbox,
                    acedata=f"{providers.url}/acedata",
                    atlascloud=f"{providers.url}/atlascloud",
                    segmind=f"{providers.url}/segmind",
                ),
                "HUB_PUBLIC_URL": public.url,
                # Callbacks only: a poll must not finish what a callback is meant to.
                "HUB_ACEDATA_FIRST_POLL_AFTER": "600",
                "HUB_EACHLABS_FIRST_POLL_AFTER": "600",
                "HUB_ATLASCLOUD_FIRST_POLL_AFTER": "0.2",
                "HUB_ATLASCLOUD_POLL_INTERVAL": "0.2",
                # A submit the gate fails is retried for as long as the test needs.
                "HUB_TASK_MAX_ATTEMPTS": "1000",
                **{f"HUB_{p.upper()}_REQUEST_TIMEOUT": "10" for p in PROVIDERS},
            }
            hub = HubProcess(tmp_path, port, extra=extra)
            with running(hub):
                await hub.ready(http)
                scene = await _before_the_kill(http, sandbox, hub, public, providers)
            # The providers are reachable again from the restarted hub's first request; the
            # held webhook goes on once the hub is there to take it.
            providers.set(pass_all)
            restarted = HubProcess(tmp_path, port, extra=extra)
            with running(restarted):
                await restarted.ready(http)
                public.set(pass_all)
                await _after_the_restart(http, restarted, scene)


# What each task is doing when the hub dies, checked on disk after the kill:
# (status, attempts, whether a result waits to be downloaded).
EXPECTED_AT_KILL = {
    "ok": ("succeeded", 1, False),
    "failed": ("failed", 1, False),
    "polled": ("submitted", 1, False),
    "download": ("submitted", 1, True),
    "callback": ("submitted", 1, False),
}


@dataclass
class Scene:
    channel: dict[str, str]
    tasks: dict[str, Task]
    records: dict[str, dict[str, Any]]
    events: list[tuple[int, str, str | None, bytes]]
    watched: list[Frame]
    retried: int


async def _before_the_kill(
    http: httpx.AsyncClient, sandbox: HubProcess, hub: HubProcess, public: Gate, providers: Gate
) -> Scene:
    channel = (await http.post(hub.url + "/v1/channels", headers=AUTH)).json()
    for n in range(3):
        response = await http.post(local(channel["callback_url"], hub), json={"n": n})
        assert response.status_code == 200
    tasks: dict[str, Task] = {}
    watched: list[Frame] = []

    async def watch() -> None:
        # A subscriber on the channel through it all, until the kill cuts it off.
        url = local(channel["stream_url"], hub)
        with contextlib.suppress(EOFError, httpx.TransportError):
            async with stream(http, url, {**AUTH, "last-event-id": "0"}) as sse:
                while True:
                    frame = await sse.next(120)
                    if frame.data:
                        watched.append(frame)

    watcher = asyncio.create_task(watch())

    # Over before the kill: one succeeded, one failed.
    tasks["ok"] = await submit(http, hub, "ok", "atlascloud", channel["id"])
    await fault(http, sandbox, "segmind", "fail")
    tasks["failed"] = await submit(http, hub, "failed", "segmind", channel["id"])
    for role in ("ok", "failed"):
        await finish(http, hub, tasks[role])

    # From here the gate fails AtlasCloud's status reads, AceData's output downloads and
    # every call to Segmind.
    failing = ("/atlascloud/api/v1/model/prediction/", "/acedata/files/", "/segmind/")
    providers.set(lambda method, path: "fail" if path.startswith(failing) else "pass")
    # Submitted, then polled in vain, though the job is done.
    tasks["polled"] = await submit(http, hub, "polled", "atlascloud", channel["id"])
    # Submitted; its callback brings URLs to download, and every download fails.
    tasks["download"] = await submit(http, hub, "download", "acedata", channel["id"])
    # Queued: every submit fails (a 503), and is retried after a backoff.
    tasks["retrying"] = await submit(http, hub, "retrying", "segmind", channel["id"])
    for role in ("polled", "download"):
        await until_event(http, hub, tasks[role], "task.submitted")
    polled = (await record(http, hub, tasks["polled"]))["provider_task_id"]

    async def polled_in_vain() -> bool:
        view = await http.get(
            f"{sandbox.url}/atlascloud/api/v1/model/prediction/{polled}",
            headers={"authorization": "Bearer key"},
        )
        done = view.json()["data"]["status"] == "completed"
        return done and ("GET", f"/atlascloud/api/v1/model/prediction/{polled}") in providers.failed

    await until(polled_in_vain, timeout=30, every=0.05)
    await until(
        lambda: (
            stored_task(hub, tasks["download"])[2]
            and any(path.startswith("/acedata/files/") for _, path in providers.failed)
        ),
        timeout=30,
        every=0.05,
    )
    await until(lambda: any(path.startswith("/segmind/") for _, path in providers.failed), 30)

    # From here callbacks wait at the gate; input downloads (GETs) still pass.
    public.set(lambda method, path: "hold" if method == "POST" else "pass")
    # Submitted; its webhook is held at the gate until after the restart.
    tasks["callback"] = await submit(http, hub, "callback", "eachlabs", channel["id"])
    await until_event(http, hub, tasks["callback"], "task.submitted")
    await until(lambda: public.held > 0, timeout=30)

    records = {role: await record(http, hub, task) for role, task in tasks.items()}

    def between_submits() -> bool:
        # Waiting out a backoff long enough to kill in, not in a submit: a submit the kill
        # cut short would never be sent again (its outcome unknown), by design.
        [(next_at, sending)] = rows(
            hub.db, "SELECT next_at, sending_at FROM tasks WHERE id = ?", (retrying,)
        )
        return sending is None and bool(next_at > time.time() + 1)

    retrying = tasks["retrying"].id
    await until(between_submits, timeout=30)
    hub.kill()
    await asyncio.wait_for(watcher, 30)

    at_kill = {role: stored_task(hub, task) for role, task in tasks.items()}
    status, retried, waiting = at_kill.pop("retrying")
    assert (status, waiting) == ("queued", False) and retried >= 1
    assert at_kill == EXPECTED_AT_KILL
    return Scene(channel, tasks, records, stored_events(hub), watched, retried)


async def _not(condition: Awaitable[bool]) -> bool:
    return not await condition


async def _after_the_restart(http: httpx.AsyncClient, hub: HubProcess, scene: Scene) -> None:
    tasks = scene.tasks
    before = {event_id: (kind, task, data) for event_id, kind, task, data in scene.events}
    # The subscriber that the kill cut off saw only what the store kept, under the same ids.
    for frame in scene.watched:
        assert frame.id is not None
        assert before[int(frame.id)][2] == "\n".join(frame.data).encode(), frame
    last_seen = int(scene.watched[-1].id or 0) if scene.watched else 0

    # It resumes from its Last-Event-ID while the tasks finish, and sees every terminal
    # event once, with nothing it saw before.
    resumed: list[Frame] = []
    terminal_seen = Counter(f.json["task_id"] for f in scene.watched if f.event in TERMINAL)

    async def resume() -> None:
        url = local(scene.channel["stream_url"], hub)
        async with stream(http, url, {**AUTH, "last-event-id": str(last_seen)}) as sse:
            while len(terminal_seen) < len(tasks):
                frame = await sse.next(60)
                if frame.data:
                    resumed.append(frame)
                    if frame.event in TERMINAL:
                        terminal_seen[frame.json["task_id"]] += 1

    resumer = asyncio.create_task(resume())
    finished = {role: await finish(http, hub, task) for role, task in tasks.items()}
    await asyncio.wait_for(resumer, 60)

    ids = [int(f.id or 0) for f in resumed]
    assert ids == sorted(set(ids)) and ids[0] > last_seen, ids
    for role, task in tasks.items():
        frames = finished[role]
        kinds = [f.event for f in frames]
        expected = ["task.queued", "task.failed"] if role == "failed" else SUCCEEDED
        retries = kinds.count("task.retrying")
        # Each failed submit said so: before the kill and after it.
        assert retries == (scene.retried if role == "retrying" else 0), (role, kinds)
        assert [k for k in kinds if k != "task.retrying"] == expected, (role, kinds)
        # What was stored before the kill is replayed as it was, under the same ids.
        kept = [(event_id, kind) for event_id, kind, owner, _ in scene.events if owner == task.id]
        assert [(int(f.id or 0), f.event) for f in frames[: len(kept)]] == kept, role

    for role in ("ok", "failed"):
        now = await record(http, hub, tasks[role])
        assert stable(now) == stable(scene.records[role]), role
    after = {role: await record(http, hub, task) for role, task in tasks.items()}
    # Resumed, not started over: only the submit that had failed was sent again.
    attempts = {role: r["attempts"] for role, r in after.items()}
    assert attempts == {
        "ok": 1,
        "failed": 1,
        "polled": 1,
        "download": 1,
        "retrying": scene.retried + 1,
        "callback": 1,
    }
    for role in ("polled", "download", "retrying", "callback"):
        [output] = after[role]["outputs"]
        blob = await http.get(local(output["url"], hub), headers=AUTH)
        assert blob.status_code == 200 and blob.content[:4] == b"\x89PNG", role
    # The held webhook reached the restarted hub and finished its task.
    [(webhooks,)] = rows(
        hub.db, "SELECT COUNT(*) FROM deliveries WHERE task_id = ?", (tasks["callback"].id,)
    )
    assert webhooks >= 1

    # The channel's whole history replays in order: the three callbacks, then every task
    # event, each terminal one once, those from before the kill unchanged.
    history = await replay(http, local(scene.channel["stream_url"], hub))
    ids = [int(f.id or 0) for f in history]
    assert ids == sorted(set(ids))
    assert [f.json["body"] for f in history[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    for frame in history:
        if int(frame.id or 0) in before:
            assert before[int(frame.id or 0)][2] == "\n".join(frame.data).encode(), frame
    for role, task in tasks.items():
        on_channel = [f.event for f in history if f.json.get("task_id") == task.id]
        assert on_channel == [f.event for f in finished[role]], role
    assert terminal_seen == {task.id: 1 for task in tasks.values()}
    assert {int(f.id or 0) for f in history} >= set(ids)


async def test_a_deadline_that_passes_while_the_hub_is_down_times_out_once(tmp_path, http):
    """A task polled for a job that never ends; the hub dies, and by the time it is back
    the task's deadline has passed: it ends timed_out, once."""
    sandbox = sandbox_process(tmp_path)
    port = free_port()
    extra = {
        **hub_env(sandbox),
        "HUB_ATLASCLOUD_FIRST_POLL_AFTER": "0.2",
        "HUB_ATLASCLOUD_POLL_INTERVAL": "0.2",
        "HUB_TASK_TIMEOUT_SECONDS": "10",
    }
    with running(sandbox):
        await sandbox.ready(http, "/eachlabs/_sandbox/faults")
        hub = HubProcess(tmp_path, port, extra=extra)
        with running(hub):
            await hub.ready(http)
            channel = (await http.post(hub.url + "/v1/channels", headers=AUTH)).json()
            await fault(http, sandbox, "atlascloud", "stall")
            polled = await submit(http, hub, "polled", "atlascloud", channel["id"])
            await until_event(http, hub, polled, "task.submitted")
            hub.kill()
        [(deadline,)] = rows(hub.db, "SELECT deadline FROM tasks")
        assert stored_task(hub, polled)[0] == "submitted"
        await until(lambda: time.time() > deadline, timeout=30, every=0.1)

        restarted = HubProcess(tmp_path, port, extra=extra)
        with running(restarted):
            await restarted.ready(http)
            frames = await finish(http, restarted, polled)
            assert [f.event for f in frames] == ["task.queued", "task.submitted", "task.timed_out"]
            view = await record(http, restarted, polled)
            assert view["status"] == "timed_out"
            assert view["error"] == {"code": "timed_out", "message": "no result within 10 s"}
            history = await replay(http, local(channel["stream_url"], restarted))
            assert [f.event for f in history] == [f.event for f in frames]


async def test_a_submit_cut_short_by_kill_9_is_never_sent_again(tmp_path, http):
    """One task's submit hangs at the provider and the next waits for the provider's only
    concurrency slot when the hub dies. After the restart the first is not sent again:
    Segmind may have billed it and sends no callback, so it fails outcome_unknown at once,
    which frees the slot; the second is sent for the first time and succeeds."""
    sandbox = sandbox_process(tmp_path)
    port = free_port()
    extra = {**hub_env(sandbox), "HUB_SEGMIND_CONCURRENCY": "1"}
    with running(sandbox):
        await sandbox.ready(http, "/eachlabs/_sandbox/faults")
        hub = HubProcess(tmp_path, port, extra=extra)
        with running(hub):
            await hub.ready(http)
            channel = (await http.post(hub.url + "/v1/channels", headers=AUTH)).json()
            await fault(http, sandbox, "segmind", "stall")
            hanging = await submit(http, hub, "hanging", "segmind", channel["id"])
            await until(lambda: _not(faults_pending(http, sandbox, "segmind")), timeout=30)
            waiting = await submit(http, hub, "waiting", "segmind", channel["id"])

            def said_waiting() -> bool:
                # Waiting for the provider's only slot: no attempt spent, the wait said.
                [(code,)] = rows(
                    hub.db, "SELECT last_error_code FROM tasks WHERE id = ?", (waiting.id,)
                )
                return code == "rate_limited"

            await until(said_waiting, timeout=30)
            hub.kill()
        assert stored_task(hub, hanging) == ("queued", 1, False)
        [(sending,)] = rows(hub.db, "SELECT sending_at FROM tasks WHERE id = ?", (hanging.id,))
        assert sending is not None  # sent, and no answer recorded
        assert stored_task(hub, waiting) == ("queued", 0, False)

        restarted = HubProcess(tmp_path, port, extra=extra)
        with running(restarted):
            await restarted.ready(http)
            async with asyncio.timeout(20):
                frames = await finish(http, restarted, hanging)
                assert [f.event for f in frames] == ["task.queued", "task.failed"]
                view = await record(http, restarted, hanging)
                assert view["attempts"] == 1 and view["error"]["code"] == "outcome_unknown"
                frames = await finish(http, restarted, waiting)
                kinds = [f.event for f in frames]
                assert kinds == ["task.queued", "task.retrying", *SUCCEEDED[1:]], kinds
                assert (await record(http, restarted, waiting))["attempts"] == 1
