"""What tasks cost and budgets that hold, through the real app on either store: the
estimate made before anything is sent, what was billed once the task ended, the key's
usage by provider and day, the spend metric, and budgets that racing submissions cannot
overshoot."""

import asyncio
import time

import httpx
import pytest
from asgi_lifespan import LifespanManager

from hub.access.keys import key_hash, tenant
from hub.config.env import SettingsError
from hub.store.base import ApiKey
from hub.tasks.pricing import Prices, parse
from hub.web.app import create_app
from tests.helpers import AUTH, OTHER_AUTH, data_url, live_hub, make_png, until

FAST = (
    ("HUB_SANDBOX_LATENCY", "0"),
    ("HUB_ATLASCLOUD_FIRST_POLL_AFTER", "0.05"),
    ("HUB_ATLASCLOUD_POLL_INTERVAL", "0.05"),
)
# Segmind configured at an address that refuses connections: nothing is ever billed.
DOWN = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_URL", "http://127.0.0.1:9"))


def body(provider="segmind", **options):
    return {
        "provider": provider,
        "input": {"prompt": "make it blue", "images": [data_url(make_png())], **options},
    }


@pytest.fixture
async def sandboxed(make_settings):
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as hub:
        yield hub


async def task_when_ended(http, base, task_id):
    async def ended():
        record = (await http.get(f"{base}/v1/tasks/{task_id}", headers=AUTH)).json()
        return record["status"] not in ("queued", "submitted")

    await until(ended, timeout=30)
    return (await http.get(f"{base}/v1/tasks/{task_id}", headers=AUTH)).json()


# -- the price table ---------------------------------------------------------------------


def test_the_estimate_follows_quality_size_and_n():
    prices = Prices.from_env({}, ["atlascloud", "segmind"])
    assert prices.estimate("atlascloud", {"quality": "low", "size": "1024x1024"}) == 11_000
    assert prices.estimate("atlascloud", {"quality": "medium", "size": "1536x1024"}) == 63_000
    assert (
        prices.estimate("atlascloud", {"quality": "high", "size": "1024x1024", "n": 3}) == 501_000
    )
    # auto (or nothing) is priced at the dearest the provider may pick.
    assert prices.estimate("atlascloud", {}) == 250_000
    assert prices.estimate("segmind", {"quality": "low", "size": "1024x1024"}) == 140_000


def test_prices_are_overridden_per_provider():
    env = {
        "HUB_SEGMIND_PRICES": "0.2",
        "HUB_ATLASCLOUD_PRICES": "low:0.01/0.02,high:0.3",
        "HUB_EACHLABS_PRICES": '{"medium": [0.05, 0.07]}',
    }
    prices = Prices.from_env(env, ["atlascloud", "eachlabs", "segmind"])
    assert prices.estimate("segmind", {}) == 200_000
    assert prices.estimate("atlascloud", {"quality": "low", "size": "1024x1536"}) == 20_000
    assert prices.estimate("atlascloud", {"quality": "high", "size": "1024x1024"}) == 300_000
    # A tier left out keeps its default.
    assert prices.estimate("atlascloud", {"quality": "medium", "size": "1024x1024"}) == 42_000
    assert prices.estimate("eachlabs", {"quality": "medium", "size": "1536x1024"}) == 70_000


@pytest.mark.parametrize("raw", ["cheap", "ultra:0.1", "low:-1", "low:0.1/x", "[1]", "nan"])
def test_a_price_table_that_cannot_be_read_names_its_variable(raw):
    with pytest.raises(SettingsError, match="HUB_SEGMIND_PRICES"):
        parse("HUB_SEGMIND_PRICES", raw)


async def test_a_bad_price_table_stops_the_hub_at_start(make_settings):
    import threading

    before = {t for t in threading.enumerate() if not t.daemon}
    app = create_app(make_settings(extra_env=(*DOWN, ("HUB_SEGMIND_PRICES", "free"))))
    with pytest.raises(SettingsError, match="HUB_SEGMIND_PRICES"):
        async with LifespanManager(app):
            pass
    # What it opened is closed: a store's writer thread left behind kept the process
    # (hub serve, and this test run) from ever exiting.
    assert {t for t in threading.enumerate() if not t.daemon} == before


# -- cost on tasks, through the sandbox --------------------------------------------------


async def test_a_task_shows_its_estimate_then_what_it_was_billed(sandboxed, http):
    options = {"quality": "low", "size": "1024x1024"}
    created = await http.post(
        f"{sandboxed.url}/v1/tasks", json=body("atlascloud", **options), headers=AUTH
    )
    assert created.status_code == 202, created.text
    task = await task_when_ended(http, sandboxed.url, created.json()["id"])
    assert task["status"] == "succeeded"
    assert task["cost"] == {"estimated_usd": 0.011, "billed_usd": 0.011, "currency": "USD"}


async def test_a_task_never_accepted_is_billed_nothing(make_settings):
    settings = make_settings(extra_env=DOWN, task_max_attempts=1)
    async with live_hub(settings) as hub, httpx.AsyncClient(timeout=30) as http:
        created = await http.post(f"{hub.url}/v1/tasks", json=body(), headers=AUTH)
        assert created.status_code == 202, created.text
        task = await task_when_ended(http, hub.url, created.json()["id"])
        assert task["status"] == "failed"
        assert task["cost"] == {"estimated_usd": 0.14, "billed_usd": 0.0, "currency": "USD"}
        usage = (await http.get(f"{hub.url}/v1/usage", headers=AUTH)).json()
        assert usage["billed_usd"] == 0.0 and usage["reserved_usd"] == 0.0
        assert usage["budget"]["spent_usd"] == 0.0


async def test_usage_sums_by_provider_and_day_for_the_key_alone(sandboxed, http):
    base = sandboxed.url
    ids = []
    for provider, options in (
        ("atlascloud", {"quality": "low", "size": "1024x1024"}),
        ("atlascloud", {"quality": "medium", "size": "1024x1536"}),
        ("segmind", {}),
    ):
        created = await http.post(f"{base}/v1/tasks", json=body(provider, **options), headers=AUTH)
        ids.append(created.json()["id"])
    for task_id in ids:
        assert (await task_when_ended(http, base, task_id))["status"] == "succeeded"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    usage = (await http.get(f"{base}/v1/usage?from={today}&to={today}", headers=AUTH)).json()
    assert usage["from"] == today and usage["to"] == today and usage["currency"] == "USD"
    assert usage["tasks"] == 3 and usage["billed_usd"] == pytest.approx(0.214)
    assert usage["by_provider"] == [
        {"provider": "atlascloud", "tasks": 2, "billed_usd": 0.074, "reserved_usd": 0.0},
        {"provider": "segmind", "tasks": 1, "billed_usd": 0.14, "reserved_usd": 0.0},
    ]
    assert usage["by_day"] == [
        {"date": today, "tasks": 3, "billed_usd": pytest.approx(0.214), "reserved_usd": 0.0}
    ]
    assert usage["budget"]["monthly_usd"] is None and usage["budget"]["remaining_usd"] is None
    other = (await http.get(f"{base}/v1/usage", headers=OTHER_AUTH)).json()
    assert other["tasks"] == 0 and other["by_provider"] == []
    metrics = (await http.get(f"{base}/metrics")).text
    assert 'hub_spend_usd_total{provider="atlascloud"} 0.074' in metrics
    assert 'hub_spend_usd_total{provider="segmind"} 0.14' in metrics


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=yesterday", "from"),
        ("from=2026-13-01", "from"),
        ("to=2026-12-1", "to"),
        ("from=2026-12-02&to=2026-12-01", "to"),
        ("from=2024-01-01&to=2026-01-01", "to"),
    ],
)
async def test_usage_dates_are_checked_naming_the_field(client, query, field):
    response = await client.get(f"/v1/usage?{query}", headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


# -- budgets -----------------------------------------------------------------------------


async def test_racing_submissions_cannot_overshoot_a_budget(make_settings):
    # Worth five tasks exactly ($0.14 each): no worker, so every accepted task stays
    # queued with its estimate reserved.
    settings = make_settings(extra_env=DOWN, budget_usd=0.70, worker_concurrency=0)
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            answers = await asyncio.gather(
                *(client.post("/v1/tasks", json=body(), headers=AUTH) for _ in range(20))
            )
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [202] * 5 + [402] * 15
            refused = next(answer for answer in answers if answer.status_code == 402)
            error = refused.json()["error"]
            assert error["code"] == "budget_exceeded"
            assert "$0.0000 remains" in error["message"]
            tasks = (await client.get("/v1/tasks", headers=AUTH)).json()["tasks"]
            assert len(tasks) == 5
            usage = (await client.get("/v1/usage", headers=AUTH)).json()
            assert usage["budget"] == {
                "month": time.strftime("%Y-%m", time.gmtime()),
                "monthly_usd": 0.7, "spent_usd": 0.7, "remaining_usd": 0.0,
            }  # fmt: skip
            assert usage["reserved_usd"] == 0.7 and usage["billed_usd"] == 0.0
            # The other key has a budget of its own, untouched by this one's.
            other = await client.post("/v1/tasks", json=body(), headers=OTHER_AUTH)
            assert other.status_code == 202


async def test_a_task_that_ends_unbilled_gives_its_reservation_back(make_settings):
    settings = make_settings(extra_env=DOWN, budget_usd=0.14, task_max_attempts=1)
    async with live_hub(settings) as hub, httpx.AsyncClient(timeout=30) as http:
        first = await http.post(f"{hub.url}/v1/tasks", json=body(), headers=AUTH)
        assert first.status_code == 202
        # While it runs its estimate is held: no room for a second.
        task = await task_when_ended(http, hub.url, first.json()["id"])
        assert task["status"] == "failed" and task["cost"]["billed_usd"] == 0.0
        again = await http.post(f"{hub.url}/v1/tasks", json=body(), headers=AUTH)
        assert again.status_code == 202, again.text


async def test_a_made_keys_own_budget(client, state):
    key = "hub_made_key_for_budget"
    digest = key_hash(key)
    await state.store.add_api_key(ApiKey("key_budget1", tenant(digest), digest, None, time.time()))
    assert await state.store.set_budget("key_budget1", 140_000)
    assert not await state.store.set_budget("key_nosuch", 140_000)
    await state._load_keys()
    auth = {"authorization": f"Bearer {key}"}
    # No worker reaches the provider in time to matter: the first stays reserved.
    first = await client.post("/v1/tasks", json=body("segmind"), headers=auth)
    second = await client.post("/v1/tasks", json=body("segmind"), headers=auth)
    assert (first.status_code, second.status_code) == (202, 402), second.text
    assert (await client.get("/v1/usage", headers=auth)).json()["budget"]["monthly_usd"] == 0.14
    # Raised, it has room again; cleared, it has no budget at all.
    assert await state.store.set_budget("key_budget1", 280_000)
    assert (await client.post("/v1/tasks", json=body("segmind"), headers=auth)).status_code == 202
    assert await state.store.set_budget("key_budget1", None)
    assert (await client.post("/v1/tasks", json=body("segmind"), headers=auth)).status_code == 202


@pytest.fixture
def settings(make_settings):
    return make_settings(extra_env=DOWN, worker_concurrency=0)


async def test_replicas_racing_for_one_budget_cannot_overshoot_it(make_settings, pg_url):
    """Two hub processes' worth of apps on one PostgreSQL database, ten submissions each
    at once, against a budget worth five tasks: five are made, fifteen refused."""
    settings = make_settings(
        database_url=pg_url, extra_env=DOWN, budget_usd=0.70, worker_concurrency=0
    )
    first, second = create_app(settings), create_app(settings)
    async with LifespanManager(first) as one, LifespanManager(second) as two:
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=m.app), base_url="http://hub.test")
            for m in (one, two)
        ]
        try:
            answers = await asyncio.gather(
                *(
                    c.post("/v1/tasks", json=body(), headers=AUTH)
                    for c in clients
                    for _ in range(10)
                )
            )
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [202] * 5 + [402] * 15
            tasks = (await clients[1].get("/v1/tasks", headers=AUTH)).json()["tasks"]
            assert len(tasks) == 5
        finally:
            for c in clients:
                await c.aclose()


async def test_the_edits_route_refuses_over_budget_in_openais_shape(make_settings):
    settings = make_settings(extra_env=DOWN, budget_usd=0.10, worker_concurrency=0)
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            response = await client.post(
                "/v1/images/edits",
                data={"prompt": "make it blue", "provider": "segmind"},
                files={"image": ("in.png", make_png(), "image/png")},
                headers=AUTH,
            )
            assert response.status_code == 402, response.text
            error = response.json()["error"]
            assert error["code"] == "budget_exceeded" and error["type"] == "invalid_request_error"
            assert "$0.1000 remains" in error["message"]
            assert (await client.get("/v1/tasks", headers=AUTH)).json()["tasks"] == []


async def test_a_task_refused_over_budget_leaves_no_webhook_behind(make_settings):
    settings = make_settings(extra_env=DOWN, budget_usd=0.10, worker_concurrency=0)
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            asked = {**body(), "webhook_urls": ["https://example.com/hook"]}
            response = await client.post("/v1/tasks", json=asked, headers=AUTH)
            assert response.status_code == 402, response.text
            assert (await client.get("/v1/webhooks", headers=AUTH)).json()["webhooks"] == []
