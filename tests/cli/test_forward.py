"""`hub forward`: each delivery POSTed to a local server as it came (exact bytes, content
type, headers less hop-by-hop ones and host), once, in order, resuming from its state file;
against a live hub and a real local receiver."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.cli.connect import CommandError
from hub.cli.forward import DELIVERY_HEADER, Forwarder, State, forward_headers, with_query
from hub.client import AsyncClient
from tests.helpers import AUTH, KEY, live_hub, receiver, until


def test_headers_lose_what_belongs_to_one_hop_and_keep_the_rest():
    pairs = [
        ["Host", "hub.example"], ["Content-Length", "3"], ["Connection", "keep-alive"],
        ["Transfer-Encoding", "chunked"], ["Content-Type", "text/plain; charset=latin-1"],
        ["X-Signature", "sha256=ab"], ["Accept", "a"], ["accept", "b"],
    ]  # fmt: skip
    assert forward_headers(pairs) == {
        "content-type": "text/plain; charset=latin-1",
        "x-signature": "sha256=ab",
        "accept": "a, b",
    }


def test_the_deliverys_query_follows_the_local_urls_own():
    assert with_query("http://localhost:3000/hook", "") == "http://localhost:3000/hook"
    assert (
        with_query("http://localhost:3000/hook", "event=a") == "http://localhost:3000/hook?event=a"
    )
    assert with_query("http://h/hook?k=1", "event=a&b") == "http://h/hook?k=1&event=a&b"
    assert with_query("http://h/hook#top", "e=1") == "http://h/hook?e=1#top"


def test_the_state_file_is_kept_per_channel(tmp_path):
    path = tmp_path / "state.json"
    assert State.load(path, "ch_a").last_event_id is None
    State(path, "ch_a").save(41)
    assert State.load(path, "ch_a").last_event_id == 41
    assert list(tmp_path.iterdir()) == [path]  # nothing left aside
    with pytest.raises(CommandError, match="for channel ch_a"):
        State.load(path, "ch_b")


@pytest.fixture
async def hub(make_settings):
    async with live_hub(make_settings()) as live:
        yield live


@contextlib.asynccontextmanager
async def forwarding(
    hub_url: str, channel_id: str, to: str, state: Path, after: int | None = None
) -> AsyncIterator[io.StringIO]:
    out = io.StringIO()
    stopping = asyncio.Event()
    async with AsyncClient(hub_url, KEY, read_timeout=60) as client:
        import httpx

        async with httpx.AsyncClient(timeout=10) as local:
            forwarder = Forwarder(client, local, to, State.load(state, channel_id), out, stopping)
            await forwarder.start(after)
            running = asyncio.create_task(forwarder.run())
            try:
                yield out
            finally:
                stopping.set()
                await asyncio.wait_for(running, 10)


async def test_each_delivery_arrives_as_it_came_once_in_order(hub, http, tmp_path):
    channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
    # Sent before forwarding began: not forwarded (it starts after the newest).
    await http.post(channel["callback_url"], json={"old": True})
    bodies = [
        (b'{"a":  1, "b": [1,2]}', "application/json"),
        (b"task_id=job-1&status=done", "application/x-www-form-urlencoded"),
        (b"plain \xff bytes", "text/plain; charset=latin-1"),
        (b"", None),
    ]
    async with receiver() as local:
        async with forwarding(hub.url, channel["id"], local.url, tmp_path / "s.json") as out:
            for n, (body, media) in enumerate(bodies):
                headers = {"x-signature": f"sig-{n}"}
                if media:
                    headers["content-type"] = media
                sent = await http.post(
                    channel["callback_url"] + f"?n={n}", content=body, headers=headers
                )
                assert sent.status_code == 200
            await until(lambda: len(local.received) >= len(bodies), timeout=20)
        assert [r.body for r in local.received] == [body for body, _ in bodies]
        for n, (received, (_, media)) in enumerate(zip(local.received, bodies, strict=True)):
            assert received.headers.get("content-type") == media
            assert received.headers["x-signature"] == f"sig-{n}"
            assert received.headers[DELIVERY_HEADER].startswith("dlv_")
            assert "authorization" not in received.headers
            assert received.headers["host"] == local.url.split("/")[2]  # the local one
        lines = out.getvalue().splitlines()
        assert sum(" -> 200 in " in line for line in lines) == len(bodies)
    assert State.load(tmp_path / "s.json", channel["id"]).last_event_id is not None


async def test_a_local_server_that_is_down_is_retried_and_a_restart_resumes(hub, http, tmp_path):
    channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
    state = tmp_path / "s.json"
    async with receiver() as first:
        down_url = first.url
    # Nothing listens there now: the first delivery waits for an answer.
    async with forwarding(hub.url, channel["id"], down_url, state) as out:
        await http.post(channel["callback_url"], json={"n": 0})
        await until(lambda: "does not answer" in out.getvalue(), timeout=20)
    assert State.load(state, channel["id"]).last_event_id == 0  # not forwarded: not saved
    for n in (1, 2):
        await http.post(channel["callback_url"], json={"n": n})
    async with receiver() as local:
        async with forwarding(hub.url, channel["id"], local.url, state):
            await until(lambda: len(local.received) >= 3, timeout=20)
            await http.post(channel["callback_url"], json={"n": 3})
            await until(lambda: len(local.received) >= 4, timeout=20)
        async with forwarding(hub.url, channel["id"], local.url, state):
            await http.post(channel["callback_url"], json={"n": 4})
            await until(lambda: len(local.received) >= 5, timeout=20)
    assert [r.body for r in local.received] == [b'{"n":%d}' % n for n in range(5)]


async def test_a_signed_body_still_verifies_at_the_local_server(hub, http, tmp_path):
    """What smee-client breaks (it re-serializes what it forwards): the sender's signature
    over the exact bytes still checks downstream, with the reference Standard Webhooks code
    (whose verify also parses the body as JSON)."""
    import base64
    import datetime

    from standardwebhooks import Webhook

    secret = "whsec_" + base64.b64encode(b"a local secret, 24 bytes").decode()
    body = '{ "type":"order.paid",\n  "data": {"id": "ord_1", "note": "café"} }'.encode()
    stamp = datetime.datetime.now(tz=datetime.UTC)
    headers = {
        "webhook-id": "msg_forward_1",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_forward_1", stamp, body.decode()),
        "content-type": "application/json",
    }
    channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
    state = tmp_path / "s.json"
    async with receiver() as local, forwarding(hub.url, channel["id"], local.url, state):
        sent = await http.post(channel["callback_url"], content=body, headers=headers)
        assert sent.status_code == 200
        await until(lambda: len(local.received) == 1, timeout=20)
    [got] = local.received
    assert got.body == body
    Webhook(secret).verify(got.body, got.headers)  # raises if the signature does not check
