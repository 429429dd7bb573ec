"""`hub keys create|update --budget-usd` and `hub usage`, run as real processes against a
live hub and its store."""

from __future__ import annotations

import time

import pytest

from hub.cli.money import render
from tests.cli.test_commands import hub_command
from tests.helpers import data_url, live_hub, make_png, until

FAST = (("HUB_SANDBOX_LATENCY", "0"),)


def body():
    return {"provider": "segmind", "input": {"prompt": "p", "images": [data_url(make_png())]}}


@pytest.mark.process
async def test_a_budget_set_from_the_command_line_holds_and_usage_prints_the_month(
    make_settings, http
):
    settings = make_settings(sandbox=True, extra_env=FAST)
    env = {"HUB_DATA_DIR": str(settings.data_dir), "HUB_DATABASE_URL": settings.database_url}
    async with live_hub(settings) as hub:
        code, out, err = await hub_command("keys", "create", "--budget-usd", "0.2", env=env)
        assert code == 0, err
        key_id, key = out.split()[:2]
        auth = {"authorization": f"Bearer {key}"}

        async def known() -> bool:
            return (await http.get(f"{hub.url}/v1/usage", headers=auth)).status_code == 200

        await until(known, timeout=10, every=0.2)
        first = await http.post(f"{hub.url}/v1/tasks", json=body(), headers=auth)
        assert first.status_code == 202, first.text
        second = await http.post(f"{hub.url}/v1/tasks", json=body(), headers=auth)
        assert second.status_code == 402 and second.json()["error"]["code"] == "budget_exceeded"
        assert "$0.0600 remains" in second.json()["error"]["message"]

        code, out, _ = await hub_command("keys", "list", env=env)
        assert f"{key_id}  active" in out and "$0.20/month" in out
        code, out, _ = await hub_command("keys", "update", key_id, "--budget-usd", "50", env=env)
        assert code == 0 and "$50.00 a month" in out
        third = await http.post(f"{hub.url}/v1/tasks", json=body(), headers=auth)
        assert third.status_code == 202, third.text
        assert (await hub_command("keys", "update", "key_nosuch", "--budget-usd", "1", env=env))[
            0
        ] == 1

        # hub cancel: the task ends canceled (or it had already ended: 409).
        code, out, err = await hub_command(
            "cancel", third.json()["id"], "--url", hub.url, "--key", key
        )
        assert (code == 0 and " canceled (billed $" in out) or (code == 1 and "409" in err)
        code, out, err = await hub_command("usage", "--url", hub.url, "--key", key)
        assert code == 0, err
        month = time.strftime("%Y-%m", time.gmtime())
        assert "2 tasks" in out and "segmind" in out
        # Two tasks at $0.14, the third $0.14 too unless it was canceled before it was sent.
        spent = (await http.get(f"{hub.url}/v1/usage", headers=auth)).json()["budget"]["spent_usd"]
        assert spent in (0.14, 0.28)
        assert f"{month}: ${spent:.4f} of $50.00 budget, ${50 - spent:.4f} left" in out


def test_usage_renders_without_a_budget():
    report = {
        "from": "2026-12-01", "to": "2026-12-02", "tasks": 1, "billed_usd": 0.14,
        "reserved_usd": 0.0,
        "by_provider": [{"provider": "segmind", "tasks": 1, "billed_usd": 0.14, "reserved_usd": 0}],
        "by_day": [{"date": "2026-12-02", "tasks": 1, "billed_usd": 0.14, "reserved_usd": 0}],
        "budget": {"month": "2026-12", "monthly_usd": None, "spent_usd": 0.14,
                   "remaining_usd": None},
    }  # fmt: skip
    text = render(report)
    assert "2026-12-01 to 2026-12-02: 1 tasks" in text
    assert "segmind" in text and "2026-12: $0.1400, no budget" in text
