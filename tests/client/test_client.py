"""hub.client against a live hub with the sandbox providers: submit, wait, download, and a
channel's events across a connection the server cuts."""

from __future__ import annotations

import asyncio

import pytest

from hub.client import AsyncClient, Client, HubError
from tests.helpers import KEY, live_hub, make_png, open_image, until

FAST = (("HUB_SANDBOX_LATENCY", "0"), ("HUB_ACEDATA_FIRST_POLL_AFTER", "5"))


@pytest.fixture
async def hub(make_settings):
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as live:
        yield live


async def test_submit_wait_and_download(hub, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(make_png((40, 30)))
    async with AsyncClient(hub.url, KEY) as client:
        task = await client.submit("acedata", "make it blue", [photo, make_png()], size="1024x1024")
        assert task["status"] == "queued"
        done = await client.wait(task["id"], timeout=30)
        assert done["status"] == "succeeded"
        image = await client.download(done["outputs"][0]["url"])
    assert open_image(image).size == (1024, 1024)


async def test_errors_carry_the_hubs_code_and_message(hub):
    async with AsyncClient(hub.url, KEY) as client:
        with pytest.raises(HubError) as missing:
            await client.get("task_000000000000000000000000")
        with pytest.raises(HubError) as bad:
            await client.submit("nobody", "p", [make_png()])
    assert missing.value.status == 404 and missing.value.code == "not_found"
    assert bad.value.status == 422 and "provider" in bad.value.message
    async with AsyncClient(hub.url, "wrong-key") as client:
        with pytest.raises(HubError) as denied:
            await client.create_channel()
    assert denied.value.status == 401


async def test_channel_events_resume_after_a_cut_without_loss_or_duplicate(hub, http):
    async with AsyncClient(hub.url, KEY) as client:
        channel = await client.create_channel(label="resume")
        seen: list[int] = []

        async def follow() -> None:
            async for event in client.events(channel_id=channel["id"], last_event_id=0):
                seen.append(event.data["body"]["n"])
                if len(seen) == 10:
                    return

        follower = asyncio.create_task(follow())
        for n in range(5):
            await http.post(channel["callback_url"], json={"n": n})
        await until(lambda: len(seen) == 5, timeout=10)
        # The server ends the stream (as when a subscriber overflows or a replica stops).
        for subscription in list(hub.state.broker._by_channel.get(channel["id"], ())):
            subscription.close()
        for n in range(5, 10):
            await http.post(channel["callback_url"], json={"n": n})
        await asyncio.wait_for(follower, 20)
    assert seen == list(range(10))


async def test_the_sync_client_does_the_same(hub):
    def run() -> dict[str, object]:
        with Client(hub.url, KEY) as client:
            task = client.submit("acedata", "p", [make_png()])
            types = [event.type for event in client.events(task_id=task["id"])]
            assert types[0] == "task.queued" and types[-1] == "task.succeeded"
            done = client.wait(task["id"], timeout=30)
            assert client.download(done["outputs"][0]["url"])[:4] == b"\x89PNG"
            return done

    done = await asyncio.to_thread(run)
    assert done["status"] == "succeeded"


async def test_listings_and_a_deliverys_stored_request(hub, http):
    async with AsyncClient(hub.url, KEY) as client:
        channel = await client.create_channel(label="listed")
        assert channel["id"] in [c["id"] for c in await client.list_channels()]
        task = await client.submit("acedata", "p", [make_png()])
        assert task["id"] in [t["id"] for t in await client.list_tasks()]
        for n in range(3):
            body = b"n=%d&raw=\xff" % n
            sent = await http.post(channel["callback_url"], content=body,
                                   headers={"content-type": "application/x-www-form-urlencoded",
                                            "x-n": str(n)})  # fmt: skip
            assert sent.status_code == 200
        first = await client.deliveries(channel["id"], limit=2)
        assert len(first["deliveries"]) == 2 and first["next_before"] is not None
        rest = await client.deliveries(channel["id"], limit=2, before=first["next_before"])
        newest_first = [*first["deliveries"], *rest["deliveries"]]
        assert [dict(d["headers"])["x-n"] for d in newest_first] == ["2", "1", "0"]
        oldest = newest_first[-1]["id"]
        assert (await client.delivery(oldest))["id"] == oldest
        body, media = await client.delivery_body(oldest)
    assert body == b"n=0&raw=\xff" and media == "application/x-www-form-urlencoded"


async def test_the_sync_client_lists_too(hub):
    def use() -> None:  # blocking calls, in a thread: the hub runs on this test's loop
        with Client(hub.url, KEY) as client:
            channel = client.create_channel(label="sync")
            assert channel["id"] in [c["id"] for c in client.list_channels()]
            assert client.deliveries(channel["id"]) == {"deliveries": [], "next_before": None}

    await asyncio.to_thread(use)
