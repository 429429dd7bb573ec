"""How long a task takes end to end through each sandbox emulator at zero latency.

Starts `hub serve --sandbox` (HUB_SANDBOX_LATENCY=0) on a loopback port with a fresh data
dir, submits ROUNDS tasks per provider one after another, and times each from the POST to
the terminal event on its stream. Prints the median, min and max per provider.

    .venv/bin/python scripts/bench_tasks.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from io import BytesIO

import httpx
from PIL import Image

PROVIDERS = ("acedata", "eachlabs", "atlascloud", "segmind")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image() -> str:
    out = BytesIO()
    Image.new("RGB", (256, 256), (200, 40, 40)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def one(http: httpx.AsyncClient, url: str, headers: dict[str, str], provider: str) -> float:
    body = {
        "provider": provider,
        "input": {"prompt": "p", "images": [image()], "size": "1024x1024"},
    }
    started = time.perf_counter()
    created = (await http.post(f"{url}/v1/tasks", json=body, headers=headers)).json()
    async with http.stream("GET", created["stream_url"], headers=headers) as response:
        async for line in response.aiter_lines():
            if line in ("event: task.succeeded", "event: task.failed", "event: task.timed_out"):
                if line != "event: task.succeeded":
                    raise RuntimeError(f"{provider}: {line}")
                return time.perf_counter() - started
    raise RuntimeError("the stream ended early")


async def main(rounds: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "HUB_DATA_DIR": data,
            "HUB_API_KEYS": "bench",
            "HUB_SANDBOX_LATENCY": "0",
            # Polled providers: poll as soon and as often as the emulator can answer.
            "HUB_ATLASCLOUD_FIRST_POLL_AFTER": "0.05",
            "HUB_ATLASCLOUD_POLL_INTERVAL": "0.05",
        }
        cmd = [sys.executable, "-m", "hub", "serve", "--sandbox", "--port", str(port)]
        # A fixed command line of this interpreter: nothing in it comes from outside.
        proc = subprocess.Popen(  # noqa: ASYNC220, S603
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                for _ in range(200):
                    try:
                        if (await http.get(url + "/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
                headers = {"authorization": "Bearer bench"}
                header = f"{'provider':<12}{'median ms':>10}{'min ms':>9}{'max ms':>9}"
                print(f"{header}  ({rounds} tasks each)")
                for provider in PROVIDERS:
                    await one(http, url, headers, provider)  # warm-up
                    times = [await one(http, url, headers, provider) for _ in range(rounds)]
                    ms = [t * 1000 for t in times]
                    print(
                        f"{provider:<12}{statistics.median(ms):>10.0f}{min(ms):>9.0f}{max(ms):>9.0f}"
                    )
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9))
