"""The figures of issue 15's findings, measured against `hub serve` processes on loopback:
one line per finding, what the issue measured before and what this hub does now.

    .venv/bin/python scripts/chaos_figures.py

Not part of CI (the regression tests hold the bounds); this prints the numbers behind
them. It connects nowhere but loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.net.addresses import is_public
from tests.access.test_tokens import variants
from tests.helpers import AUTH, KEY, OTHER_AUTH, OTHER_KEY, receiver, until
from tests.net.test_bounded import task_with_a_bomb_image
from tests.processes import HubProcess, free_port, running
from tests.web.test_protocol import huge_headers_at_once
from tests.webhooks.test_dispatcher import slow_failing_receiver


def line(number: int, what: str, before: str, after: str) -> None:
    print(f"{number:>2}. {what}\n    before (issue 15): {before}\n    after:  {after}", flush=True)


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


async def main(root: Path) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5)) as http:
        await with_sandbox(http, root / "sandbox")
        await header_flood(http, root / "headers")
        await starvation(http, root / "starvation")
    line(7, "SSRF forms refused (64:ff9b::a00:1, 64:ff9b:1::a00:1, ::7f00:1,"
         " ::ffff:0:a00:1, 2002:a00:1::, fec0::1)", "6 of 6 let through",
         f"{sum(not is_public(ipaddress.ip_address(a)) for a in SSRF)} of"
         f" {len(SSRF)} refused")  # fmt: skip


SSRF = ["64:ff9b::a00:1", "64:ff9b:1::a00:1", "::7f00:1", "::ffff:0:a00:1", "2002:a00:1::",
        "fec0::1"]  # fmt: skip


async def with_sandbox(http: httpx.AsyncClient, data: Path) -> None:
    extra = {
        "HUB_RATE_LIMIT_PER_CALLBACK": "20",
        "HUB_QUOTA_CHANNELS": "3",
        "HUB_METRICS_TOKEN": "figures-token",
    }
    # A data dir the hub makes itself (its log beside it), as on a first start.
    hub = HubProcess(
        data, free_port(), command=("serve", "--sandbox"), extra=extra, log_dir=data.parent
    )
    with running(hub):
        await hub.ready(http)
        # 1. A gzip-of-gzip image URL.
        before = hub.memory()
        answer = await task_with_a_bomb_image(http, hub.url)
        after = hub.memory()
        line(1, "gzip-of-gzip image URL (1 GiB decoded): answer, RSS growth",
             "500 (MemoryError), 61 -> 1,088 MiB",
             f"{answer.status_code} {answer.json()['error']['field']},"
             f" {mib(before.rss)} -> peak {mib(after.peak)}")  # fmt: skip

        # 2. Bad URLs given.
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        hook = await http.post(
            f"{hub.url}/v1/webhooks",
            json={"url": "http://127.0.0.1:99999/", "channel_id": channel["id"]},
            headers=AUTH,
        )
        image = await http.post(
            f"{hub.url}/v1/tasks",
            headers=AUTH,
            json={"provider": "segmind",
                  "input": {"prompt": "p", "images": ["http://images.example:8 0/a.png"]}},
        )  # fmt: skip
        from tests.behaviour.test_url_checks import PNG, form

        body, headers = form(
            ("image", "a.png", PNG), ("prompt", None, b"p"), ("provider", None, b"segmind"),
            ("callback_url", None, b"http://hooks.example:70000/"),
        )  # fmt: skip
        edits = await http.post(f"{hub.url}/v1/images/edits", content=body, headers=headers)
        line(2, "webhook :99999 / image URL with a space in its port / edits callback_url"
             " :70000", "201 / 500 / accepted (fails when sent)",
             f"{hook.status_code} / {image.status_code} / {edits.status_code}")  # fmt: skip

        # 4. Rewritten token spellings, and the token itself, 300 each.
        base, _, token = channel["callback_url"].rpartition("/")
        spelled = Counter(
            [(await http.post(f"{base}/{v}", json={"n": n})).status_code
             for n, v in enumerate(variants(token, 300))]
        )  # fmt: skip
        await asyncio.sleep(2)  # the bucket refills
        same = Counter(
            [(await http.post(f"{base}/{token}", json={"m": n})).status_code for n in range(300)]
        )
        line(4, "300 rewritten spellings of one callback token; the token itself x300"
             " (20/s per URL)", "300 x 200; 63 x 200 + 237 x 429",
             f"{dict(spelled)}; {dict(same)}")  # fmt: skip

        # 9. Unicode digits on the edits route.
        answers = []
        for name in ("n", "output_compression"):
            body, headers = form(
                ("image", "a.png", PNG), ("prompt", None, b"p"), ("provider", None, b"segmind"),
                (name, None, "²".encode()),
            )  # fmt: skip
            got = await http.post(f"{hub.url}/v1/images/edits", content=body, headers=headers)
            answers.append(f"{name}=² {got.status_code} param={got.json()['error']['param']}")
        line(9, "n=² / output_compression=² on /v1/images/edits", "500 / 500", ", ".join(answers))

        # 10. Files.
        db_mode = stat.S_IMODE(os.stat(data / "hub.db").st_mode)
        dir_mode = stat.S_IMODE(os.stat(data).st_mode)
        line(10, "hub.db mode / data dir mode", "0644 / 0755", f"{db_mode:04o} / {dir_mode:04o}")

        # 13. Quotas and /metrics.
        made = [(await http.post(f"{hub.url}/v1/channels", headers=AUTH)).status_code
                for _ in range(3)]  # fmt: skip
        metrics = await http.get(f"{hub.url}/metrics")
        with_token = await http.get(
            f"{hub.url}/metrics", headers={"authorization": "Bearer figures-token"}
        )
        line(13, "channels 2-4 of one key with HUB_QUOTA_CHANNELS=3; /metrics without and"
             " with HUB_METRICS_TOKEN", "all 201; /metrics 200 to anyone",
             f"{made}; {metrics.status_code} / {with_token.status_code}")  # fmt: skip


async def header_flood(http: httpx.AsyncClient, data: Path) -> None:
    hub = HubProcess(data, free_port())
    with running(hub):
        await hub.ready(http)
        before = hub.memory()
        statuses = await huge_headers_at_once(hub.port, 8)
        after = hub.memory()
        line(6, "eight 64 MiB request headers at once: answers, RSS",
             "200 each, 603 MiB", f"{Counter(statuses)}, {mib(before.rss)} -> peak"
             f" {mib(after.peak)}")  # fmt: skip


async def starvation(http: httpx.AsyncClient, data: Path) -> None:
    """Tenant A: 40 endpoints on a receiver that holds each POST 0.5 s then fails, 20
    events (800 deliveries). Tenant B: one webhook; its delay."""
    extra = {"HUB_API_KEYS": f"{KEY},{OTHER_KEY}", "HUB_ALLOW_LOOPBACK_URLS": "1"}
    hub = HubProcess(data, free_port(), extra=extra)
    with running(hub):
        await hub.ready(http)
        async with slow_failing_receiver(0.5) as (bad, hits), receiver() as good:
            channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
            for n in range(40):
                await http.post(
                    f"{hub.url}/v1/webhooks",
                    json={"url": f"{bad}/hook-{n}", "channel_id": channel["id"]},
                    headers=AUTH,
                )
            for n in range(20):
                await http.post(channel["callback_url"], json={"n": n})
            await until(lambda: len(hits) > 0, timeout=10)
            other = (await http.post(f"{hub.url}/v1/channels", headers=OTHER_AUTH)).json()
            await http.post(
                f"{hub.url}/v1/webhooks",
                json={"url": good.url, "channel_id": other["id"]},
                headers=OTHER_AUTH,
            )
            started = time.perf_counter()
            await http.post(other["callback_url"], json={"b": 1})
            await until(lambda: len(good.received) == 1, timeout=60)
            delay = time.perf_counter() - started
        line(2, "another tenant's webhook behind 40 failing endpoints x 20 events"
             " (issue: 40 x 150)", "0.02 s -> 21.8 s", f"{delay:.2f} s")  # fmt: skip


if __name__ == "__main__":
    root = Path(tempfile.mkdtemp(prefix="hub-figures-"))
    for name in ("headers", "starvation"):
        (root / name).mkdir()
    asyncio.run(main(root))
