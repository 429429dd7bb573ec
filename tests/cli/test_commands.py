"""The `hub` command's client side, run as real processes against a live hub."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import pytest

from hub.client import AsyncClient
from tests.helpers import KEY, live_hub, make_png, open_image, query_store, until

# Every test here runs the CLI as a process.
pytestmark = pytest.mark.process

FAST = (("HUB_SANDBOX_LATENCY", "0.3"), ("HUB_ACEDATA_FIRST_POLL_AFTER", "5"))


@pytest.fixture
async def hub(make_settings):
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as live:
        yield live


async def hub_command(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_channel_create_prints_its_urls(hub):
    code, out, _ = await hub_command("channel", "create", "--url", hub.url, "--key", KEY,
                                     "--label", "cli")  # fmt: skip
    assert code == 0
    channel = orjson.loads(out)
    assert channel["label"] == "cli" and channel["callback_url"].startswith(hub.url)


async def test_submit_waits_shows_progress_and_saves_the_image(hub, tmp_path):
    photo = tmp_path / "in.png"
    photo.write_bytes(make_png())
    code, out, err = await hub_command(
        "submit", "--url", hub.url, "--provider", "acedata", "--prompt", "make it blue",
        "--image", str(photo), "--size", "1024x1024", "--out", str(tmp_path / "out"),
        env={"HUB_API_KEY": KEY},
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert any(" queued at " in line for line in lines)
    assert any(" succeeded in " in line for line in lines)
    [saved] = list((tmp_path / "out").iterdir())
    assert f"saved {saved}" in lines
    assert open_image(saved.read_bytes()).size == (1024, 1024)


async def test_submit_reports_the_hubs_error(hub, tmp_path):
    photo = tmp_path / "in.png"
    photo.write_bytes(make_png())
    code, _, err = await hub_command(
        "submit", "--url", hub.url, "--key", KEY, "--provider", "nobody", "--prompt", "p",
        "--image", str(photo),
    )  # fmt: skip
    assert code == 1 and "422" in err and "provider" in err


async def test_submit_again_with_the_same_idempotency_key_is_the_same_task(hub, tmp_path):
    photo = tmp_path / "in.png"
    photo.write_bytes(make_png())
    runs = []
    for _ in range(2):
        code, out, err = await hub_command(
            "submit", "--url", hub.url, "--key", KEY, "--provider", "acedata", "--prompt", "p",
            "--image", str(photo), "--out", str(tmp_path / "out"), "--idempotency-key", "run-1",
        )  # fmt: skip
        assert code == 0, err
        runs.append(out.split()[0])
    assert runs[0] == runs[1] and runs[0].startswith("task_")
    row = await query_store(hub.state.store, "SELECT count(*) FROM tasks")
    assert int(row[0]) == 1


async def test_watch_prints_each_event_as_a_line(hub, http):
    channel = (
        await http.post(f"{hub.url}/v1/channels", headers={"authorization": f"Bearer {KEY}"})
    ).json()
    for n in range(3):
        await http.post(channel["callback_url"], json={"task_id": f"p-{n}", "n": n})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "watch", channel["id"], "--from", "0",
        "--url", hub.url, "--key", KEY, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode() for _ in range(4)]
    finally:
        process.kill()
        await process.wait()
    assert lines[0].startswith(f"watching {channel['id']}")
    for n, line in enumerate(lines[1:]):
        assert " callback.received application/json task p-" in line
        assert f'"n":{n}' in line and line.startswith("#")


async def test_keys_are_made_listed_and_revoked_in_the_store(tmp_path):
    env = {"HUB_DATA_DIR": str(tmp_path / "data")}
    code, out, _ = await hub_command("keys", "create", "--label", "ci", env=env)
    assert code == 0
    key_id, key = out.split()[:2]
    assert key_id.startswith("key_") and key.startswith("hub_")
    code, out, _ = await hub_command("keys", "list", env=env)
    assert code == 0 and f"{key_id}  active" in out and "ci" in out and key not in out
    assert (await hub_command("keys", "revoke", key_id, env=env))[0] == 0
    code, out, _ = await hub_command("keys", "list", env=env)
    assert f"{key_id}  revoked" in out
    assert (await hub_command("keys", "revoke", key_id, env=env))[0] == 1


async def test_a_key_made_with_the_cli_works_until_revoked(make_settings, http):
    """Made by another process, against the running hub's store: usable within the
    refresh interval, and refused again soon after it is revoked."""
    settings = make_settings()
    # The CLI finds the running hub's store the way the hub does: from its settings.
    env = {"HUB_DATA_DIR": str(settings.data_dir), "HUB_DATABASE_URL": settings.database_url}
    async with live_hub(settings) as hub:
        code, out, _ = await hub_command("keys", "create", env=env)
        assert code == 0
        key_id, key = out.split()[:2]
        headers = {"authorization": f"Bearer {key}"}

        async def answers(status: int) -> bool:
            return (
                await http.post(f"{hub.url}/v1/channels", headers=headers)
            ).status_code == status

        await until(lambda: answers(201), timeout=10, every=0.2)
        # Its own tenant: it does not see the configured key's channels, nor they its own.
        mine = (await http.post(f"{hub.url}/v1/channels", headers=headers)).json()
        other = await http.get(
            f"{hub.url}/v1/channels/{mine['id']}", headers={"authorization": f"Bearer {KEY}"}
        )
        assert other.status_code == 404
        assert (await hub_command("keys", "revoke", key_id, env=env))[0] == 0
        await until(lambda: answers(401), timeout=10, every=0.2)


async def test_channel_list_shows_the_keys_channels(hub):
    code, out, _ = await hub_command("channel", "create", "--url", hub.url, "--key", KEY,
                                     "--label", "listed")  # fmt: skip
    made = orjson.loads(out)
    code, out, err = await hub_command("channel", "list", "--url", hub.url, "--key", KEY)
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith(made["id"])]
    assert line.endswith("  listed") and " expires " in line


async def test_tasks_lists_the_keys_tasks(hub, tmp_path):
    photo = tmp_path / "in.png"
    photo.write_bytes(make_png())
    async with AsyncClient(hub.url, KEY) as client:
        task = await client.submit("acedata", "make it blue", [photo])
    code, out, err = await hub_command("tasks", "--url", hub.url, env={"HUB_API_KEY": KEY})
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith(task["id"])]
    assert line.split()[1] in {"queued", "submitted", "succeeded"}
    assert line.split()[2] == "acedata"
    # Once it ended, what it was billed.
    async with AsyncClient(hub.url, KEY) as client:
        ended = await client.wait(task["id"], timeout=30)
    _, out, _ = await hub_command("tasks", "--url", hub.url, env={"HUB_API_KEY": KEY})
    [line] = [line for line in out.splitlines() if line.startswith(task["id"])]
    assert line.split()[1:4] == ["succeeded", "acedata", f"${ended['cost']['billed_usd']:.4f}"]


async def test_http_errors_show_the_hubs_code_and_message_in_one_line(hub):
    code, out, err = await hub_command("watch", "ch_000000000000000000000000", "--url", hub.url,
                                       "--key", KEY)  # fmt: skip
    assert code == 1 and out == ""
    assert err.startswith("hub: 404 not_found: ") and err.count("\n") == 1
    code, _, err = await hub_command("channel", "list", "--url", hub.url, "--key", "wrong")
    assert code == 1 and err.startswith("hub: 401 ") and err.count("\n") == 1


async def test_an_unreachable_hub_is_one_line_not_a_traceback():
    from tests.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await hub_command("tasks", "--url", url, "--key", KEY)
    assert code == 1 and err == (
        f"hub: cannot reach the hub at {url} (is it running? --url or HUB_URL name another)\n"
    )


async def test_forward_refuses_a_channel_it_cannot_see_in_one_line(hub, tmp_path):
    code, _, err = await hub_command(
        "forward", "ch_000000000000000000000000", "--to", "http://127.0.0.1:9/hook",
        "--url", hub.url, "--key", KEY, "--state", str(tmp_path / "state.json"),
    )  # fmt: skip
    assert code == 1 and err.startswith("hub: 404 not_found: ") and err.count("\n") == 1
    assert not (tmp_path / "state.json").exists()


async def test_channel_delete_erases_it(hub, http):
    _, out, _ = await hub_command("channel", "create", "--url", hub.url, "--key", KEY)
    channel = orjson.loads(out)
    code, out, err = await hub_command("channel", "delete", channel["id"], "--url", hub.url,
                                       "--key", KEY)  # fmt: skip
    assert code == 0, err
    assert out == f"deleted {channel['id']}\n"
    assert (await http.post(channel["callback_url"], json={"late": True})).status_code == 410
    _, out, _ = await hub_command("channel", "list", "--url", hub.url, "--key", KEY)
    assert channel["id"] not in out
    code, _, err = await hub_command("channel", "delete", channel["id"], "--url", hub.url,
                                     "--key", KEY)  # fmt: skip
    assert code == 1 and err.startswith("hub: 404 ") and err.count("\n") == 1


async def test_submit_prints_each_retry_and_the_error_it_ends_with(hub, http, tmp_path):
    photo = tmp_path / "in.png"
    photo.write_bytes(make_png())
    faults = f"{hub.url}/sandbox/acedata/_sandbox/faults"
    for kind in ("429", "fail"):
        assert (await http.post(faults, json={"kind": kind})).status_code == 201
    code, out, err = await hub_command(
        "submit", "--url", hub.url, "--key", KEY, "--provider", "acedata", "--prompt", "p",
        "--image", str(photo), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 1, err
    lines = out.splitlines()
    [retry] = [line for line in lines if " attempt 1: " in line]
    assert "rate_limited: acedata: HTTP 429" in retry and "; next attempt at " in retry
    assert lines[-1].startswith("failed: provider_failed: acedata: ")


async def test_submit_takes_a_route_and_prints_each_move(hub, http, tmp_path):
    photo = tmp_path / "in.png"
    photo.write_bytes(make_png())
    faults = f"{hub.url}/sandbox/eachlabs/_sandbox/faults"
    assert (await http.post(faults, json={"kind": "500"})).status_code == 201
    code, out, err = await hub_command(
        "submit", "--url", hub.url, "--key", KEY, "--provider", "eachlabs,segmind",
        "--prompt", "p", "--image", str(photo), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    [moved] = [line for line in out.splitlines() if " -> " in line]
    assert "eachlabs -> segmind (unavailable): provider_unavailable: eachlabs: HTTP 500" in moved
    assert len(list((tmp_path / "out").iterdir())) == 1
