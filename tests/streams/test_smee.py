"""A channel's watch_url with ?format=smee streams the way smee.io does, so the real
`smee-client` from npm forwards callbacks to a developer's machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.helpers import AUTH, live_hub, receiver, stream, until

SMEE_VERSION = "5.0.0"
CACHE = Path(__file__).resolve().parents[2] / ".cache" / f"smee-client-{SMEE_VERSION}"


def smee_client() -> Path:
    """The smee-client CLI, installed once from npm into .cache/ (git-ignored)."""
    cli = CACHE / "node_modules" / "smee-client" / "bin" / "smee.js"
    if cli.exists():
        return cli
    if shutil.which("node") is None or shutil.which("npm") is None:
        reason = "smee-client needs node and npm"
        if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (HUB_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund",
         f"smee-client@{SMEE_VERSION}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return cli


async def test_the_smee_format_is_smees(make_settings, http):
    async with live_hub(make_settings()) as hub:
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        url = channel["watch_url"] + "&format=smee"
        async with stream(http, url, {}) as sse:
            await sse.next()  # subscribed
            await http.post(
                channel["callback_url"] + "?x=1", json={"n": 1}, headers={"x-github-event": "push"}
            )
            (frame,) = await sse.events(1)
    assert frame.event is None  # unnamed: EventSource's "message"
    data = frame.json
    assert data["body"] == {"n": 1} and data["query"] == {"x": "1"}
    assert data["x-github-event"] == "push" and data["content-type"] == "application/json"
    assert isinstance(data["timestamp"], int)


@pytest.mark.npx
async def test_smee_client_forwards_callbacks_to_a_local_target(make_settings, http):
    cli = smee_client()
    async with live_hub(make_settings()) as hub, receiver() as target:
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        process = await asyncio.create_subprocess_exec(
            "node", str(cli), "-u", channel["watch_url"] + "&format=smee", "-t", target.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            async with asyncio.timeout(30):
                while b"Connected" not in await process.stdout.readline():
                    pass
            for n in range(3):
                sent = await http.post(
                    channel["callback_url"] + f"?n={n}", json={"n": n},
                    headers={"x-hub-test": f"h{n}"},
                )  # fmt: skip
                assert sent.status_code == 200
            await until(lambda: len(target.received) == 3, timeout=30)
        finally:
            process.terminate()
            await process.wait()
    for n, request in enumerate(target.received):
        assert orjson.loads(request.body) == {"n": n}
        assert request.headers["x-hub-test"] == f"h{n}"
