"""The dashboard at ``/``, driven in real headless Chromium against a live hub: signing in
(and a wrong key), a channel made in the page and a callback to it shown live, tasks
submitted through the API followed to their end with the image shown, a task card's
prompt, input image, route and Cancel (and a cancel the hub refuses), reload, sign out.

Needs Debian's ``chromium`` and Playwright's Python package (no browser download: Playwright
drives the system Chromium). Without them the tests are skipped with the reason, unless
``HUB_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MakeSettings
from tests.helpers import AUTH, KEY, LiveHub, data_url, live_hub, make_png, until

# Without it the fixture below skips (or fails) with the reason.
with contextlib.suppress(ImportError):
    from playwright.async_api import (
        Browser,
        ConsoleMessage,
        Locator,
        Page,
        Route,
        async_playwright,
        expect,
    )

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path("/tmp/dashboard.png")
# The emulated jobs finish at once; AceData's result comes by callback, not by polling.
FAST = (
    ("HUB_SANDBOX_LATENCY", "0"),
    ("HUB_SANDBOX_CALLBACK_RETRY_DELAY", "0.05"),
    ("HUB_ACEDATA_FIRST_POLL_AFTER", "5"),
)
# The page lists every few seconds; a new task shows up on the next round.
SOON = 15_000
# Where app.js keeps the key: this tab only, gone with the tab or on sign-out.
KEY_STORAGE = "hub.apiKey"


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright's Python package is not installed (pip install playwright)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (HUB_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def hub(make_settings: MakeSettings) -> AsyncIterator[LiveHub]:
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as live:
        yield live


@pytest.fixture
async def page(browser: Browser, hub: LiveHub) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    problems: list[str] = []
    # A CSP violation (an inline style or script) or an exception in app.js shows up here.
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        # Chromium logs every non-2xx fetch; the wrong-key test makes one on purpose, and
        # the refused cancel another.
        expected = ("401 (Unauthorized)", "409 (Conflict)")
        if message.type == "error" and not any(text in message.text for text in expected):
            problems.append(f"console error: {message.text}")

    opened.on("console", on_console)
    await opened.goto(hub.url + "/")
    try:
        yield opened
    finally:
        await context.close()
    assert problems == []


async def _sign_in(page: Page, key: str) -> None:
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def _storage(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        "key => ({session: sessionStorage.getItem(key), local: localStorage.length})",
        KEY_STORAGE,
    )
    return result


async def _submit(http: httpx.AsyncClient, hub: LiveHub, prompt: str = "make it blue") -> str:
    body = {
        "provider": "acedata",
        "input": {"prompt": prompt, "images": [data_url(make_png((96, 64)))]},
    }
    response = await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


async def _image_loaded(page: Page, image: Locator) -> None:
    handle = await image.element_handle(timeout=SOON)
    await page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=handle, timeout=SOON
    )


async def test_a_wrong_key_shows_the_hubs_error_and_is_not_kept(page: Page) -> None:
    await _sign_in(page, "not-a-key")
    await expect(page.get_by_role("alert").first).to_contain_text("a valid API key is required")
    await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    assert await _storage(page) == {"session": None, "local": 0}


async def test_the_dashboard_end_to_end(page: Page, hub: LiveHub, http: httpx.AsyncClient) -> None:
    await _sign_in(page, KEY)
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert await _storage(page) == {"session": KEY, "local": 0}
    assert KEY not in page.url

    # A channel made in the page; its callback URL is shown to copy.
    await page.get_by_label("Label").fill("inbox <i>one</i>")
    await page.get_by_role("button", name="Create channel").click()
    shown_url = page.locator("#created-callback-url")
    await expect(shown_url).to_have_value(re.compile("^" + re.escape(f"{hub.url}/callbacks/")))
    callback_url = await shown_url.input_value()
    channel_id = await page.locator("#created-channel-id").inner_text()
    channel = page.locator(f"li.channel[data-channel-id='{channel_id}']")
    await expect(channel.get_by_role("heading", level=3)).to_have_text("inbox <i>one</i>")
    await expect(channel.locator(".stream-state")).to_have_text("live", timeout=SOON)
    # What a channel does not have (a verifier, a task id path) is left out, not "null".
    await expect(channel.locator(".meta")).not_to_contain_text("null")

    # A callback to it appears live, headers and query and body, as text (never markup).
    response = await http.post(
        callback_url + "?source=dashboard-test&n=1",
        json={"task_id": "job-42", "status": "done", "note": "<b>not markup</b>"},
        headers={"x-test-header": "dashboard-42"},
    )
    assert response.status_code == 200, response.text
    delivery = channel.locator("li.delivery")
    await expect(delivery).to_have_count(1)
    await expect(delivery.locator("summary")).to_contain_text("application/json")
    await expect(delivery.locator("summary")).to_contain_text("job-42")
    body = delivery.locator("pre.body")
    await expect(body).to_be_visible()
    await expect(body).to_contain_text('"note": "<b>not markup</b>"')
    await expect(body.locator("b")).to_have_count(0)
    headers = delivery.locator("table.pairs").first
    await expect(headers.get_by_role("row", name="x-test-header")).to_contain_text("dashboard-42")
    query = delivery.locator("table.pairs").nth(1)
    await expect(query.get_by_role("row", name="source")).to_contain_text("dashboard-test")

    # A task submitted through the API appears, finishes, and its image is shown.
    task_id = await _submit(http, hub)
    task = page.locator(f"li.task[data-task-id='{task_id}']")
    await expect(task.locator(".status")).to_have_text("succeeded", timeout=SOON)
    image = task.locator(".outputs").get_by_role("img")
    await _image_loaded(page, image)
    assert (await image.get_attribute("src") or "").startswith("blob:")

    # A failing one shows the provider's error.
    fault = await http.post(f"{hub.url}/sandbox/acedata/_sandbox/faults", json={"kind": "fail"})
    assert fault.status_code < 300, fault.text
    failed_id = await _submit(http, hub)
    failed = page.locator(f"li.task[data-task-id='{failed_id}']")
    await expect(failed.locator(".status")).to_have_text("failed", timeout=SOON)
    await expect(failed.locator(".task-error")).not_to_be_empty()
    await expect(page.locator("li.task").first).to_have_attribute("data-task-id", failed_id)
    # A rate-limited one says why it waits: each retry, its reason, and the next try.
    fault = await http.post(f"{hub.url}/sandbox/acedata/_sandbox/faults", json={"kind": "429"})
    assert fault.status_code < 300, fault.text
    retried_id = await _submit(http, hub)
    retried = page.locator(f"li.task[data-task-id='{retried_id}']")
    # (Live, each attempt; listed after it ended, the last retry.)
    await expect(retried.locator(".retries li").first).to_contain_text(
        "rate_limited: acedata: HTTP 429", timeout=SOON
    )
    await expect(retried.locator(".status")).to_have_text("succeeded", timeout=SOON)
    await expect(retried.locator(".meta")).to_contain_text("billed $")
    # This month's spend, from GET /v1/usage (the test keys have no budget).
    spent = (await http.get(f"{hub.url}/v1/usage", headers=AUTH)).json()["budget"]["spent_usd"]
    await expect(page.locator("#usage-summary")).to_contain_text(
        f"${spent:.4f} spent · no budget", timeout=SOON
    )

    await shown_url.blur()
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # A reload keeps the session (and shows the same things again).
    await page.reload()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(task.locator(".status")).to_have_text("succeeded", timeout=SOON)
    await _image_loaded(page, task.locator(".outputs").get_by_role("img"))
    await expect(channel.locator("li.delivery")).to_have_count(1, timeout=SOON)
    assert await _storage(page) == {"session": KEY, "local": 0}

    # Signing out forgets the key and everything shown with it.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    await expect(page.locator("li.channel, li.task")).to_have_count(0)
    assert await _storage(page) == {"session": None, "local": 0}
    await page.reload()
    await expect(page.get_by_label("API key")).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()


async def test_a_task_card_shows_what_was_asked_and_cancels(
    page: Page, hub: LiveHub, http: httpx.AsyncClient
) -> None:
    # The job is accepted and never ends: the task stays submitted until canceled.
    fault = await http.post(f"{hub.url}/sandbox/acedata/_sandbox/faults", json={"kind": "stall"})
    assert fault.status_code < 300, fault.text
    prompt = "make it <b>blue</b> & shiny"
    task_id = await _submit(http, hub, prompt)
    await _sign_in(page, KEY)
    task = page.locator(f"li.task[data-task-id='{task_id}']")
    await expect(task.locator(".status")).to_have_text("submitted", timeout=SOON)

    # The prompt, as text (never markup), and the input image, fetched with the key.
    await expect(task.locator(".prompt q")).to_have_text(prompt)
    await expect(task.locator(".prompt b")).to_have_count(0)
    thumbnail = task.get_by_role("group", name="input images").get_by_role("img")
    await expect(thumbnail).to_have_attribute("alt", f"Input image 1 of 1 of task {task_id}")
    await _image_loaded(page, thumbnail)
    assert (await thumbnail.get_attribute("src") or "").startswith("blob:")
    await expect(task.locator(".input-image figcaption")).to_have_text("input 1 · 96\u00d764")
    # No route given: none shown.
    await expect(task.locator(".route")).to_be_hidden()

    # Cancel, while it runs: the card, and the API, say canceled.
    cancel = task.get_by_role("button", name="Cancel task")
    await expect(cancel).to_be_visible()
    await cancel.click()
    await expect(task.locator(".status")).to_have_text("canceled", timeout=SOON)
    await expect(task.get_by_role("status")).to_have_text("Task canceled.")
    await expect(cancel).to_be_hidden()
    shown = (await http.get(f"{hub.url}/v1/tasks/{task_id}", headers=AUTH)).json()
    assert shown["status"] == "canceled"
    await expect(task.locator(".task-error")).to_contain_text("canceled at the API key's request")


async def test_a_route_is_shown_and_a_refused_cancel_says_why(
    page: Page, hub: LiveHub, http: httpx.AsyncClient
) -> None:
    task_id = await _submit(http, hub)

    async def succeeded() -> bool:
        shown = await http.get(f"{hub.url}/v1/tasks/{task_id}", headers=AUTH)
        return bool(shown.json()["status"] == "succeeded")

    await until(succeeded, timeout=30)
    route = [
        {"provider": "atlascloud", "outcome": "failed", "billed": False, "reason": "<b>500</b>"},
        {"provider": "acedata", "outcome": "succeeded", "billed": True},
    ]

    # The list as a hub with routing shows it, and (so that Cancel is offered for a task
    # that has in fact ended) with the task still running and no stream to say otherwise.
    async def with_route(intercepted: Route) -> None:
        answer = await intercepted.fetch()
        listed = await answer.json()
        for item in listed["tasks"]:
            if item["id"] == task_id:
                item.update(status="submitted", route=route)
                item.pop("watch_url", None)
        await intercepted.fulfill(response=answer, json=listed)

    await page.route("**/v1/tasks", with_route)
    await _sign_in(page, KEY)
    task = page.locator(f"li.task[data-task-id='{task_id}']")
    await expect(task.locator(".status")).to_have_text("submitted", timeout=SOON)
    await expect(task.locator(".route-now")).to_have_text("Route · now at acedata")
    steps = task.get_by_role("list", name="providers tried").get_by_role("listitem")
    await expect(steps).to_have_text(
        ["atlascloud · failed · billed no · <b>500</b>", "acedata · succeeded · billed yes"]
    )
    await expect(task.locator(".route b")).to_have_count(0)

    # The hub refuses: the task had ended. The card says so, in the hub's words.
    await task.get_by_role("button", name="Cancel task").click()
    await expect(task.get_by_role("status")).to_have_text(
        f"Could not cancel: task {task_id} has already ended (succeeded)"
    )


async def test_a_channel_made_elsewhere_gets_a_url_after_a_reload_and_is_deleted(
    page: Page, hub: LiveHub, http: httpx.AsyncClient
) -> None:
    # Made with curl, not in this page; one delivery before the page ever opens.
    made = await http.post(f"{hub.url}/v1/channels", json={"label": "from curl"}, headers=AUTH)
    assert made.status_code == 201, made.text
    first = made.json()
    channel_id = first["id"]
    sent = await http.post(first["callback_url"] + "?n=0", json={"n": 0})
    assert sent.status_code == 200, sent.text
    await _sign_in(page, KEY)
    await page.reload()
    card = page.locator(f"li.channel[data-channel-id='{channel_id}']")
    # The newest deliveries come from the history route; the body is read when opened.
    older = card.locator("li.delivery")
    await expect(older).to_have_count(1, timeout=SOON)
    await expect(older.locator("pre.body")).to_contain_text('"n": 0')

    # A callback URL for it, minted after the reload.
    await card.get_by_role("button", name="New callback URL").click()
    shown = card.get_by_label("Callback URL")
    await expect(shown).to_have_value(re.compile("^" + re.escape(f"{hub.url}/callbacks/")))
    minted = await shown.input_value()
    assert minted != first["callback_url"]
    await expect(card.locator(".stream-state")).to_have_text("live", timeout=SOON)
    response = await http.post(minted, json={"n": 1}, headers={"x-from": "minted"})
    assert response.status_code == 200, response.text
    await expect(card.locator("li.delivery")).to_have_count(2)
    await expect(card.locator("li.delivery").first.locator("pre.body")).to_contain_text('"n": 1')
    # This page's own stream is one of its subscribers.
    await expect(card.locator(".presence")).to_have_text(" · 1 watching", timeout=SOON)

    # Deleted from the page: gone from the page, the API, and its URLs.
    await card.get_by_role("button", name="Delete channel").click()
    await card.get_by_role("button", name=re.compile("^Really delete")).click()
    await expect(card).to_have_count(0)
    assert (await http.get(f"{hub.url}/v1/channels/{channel_id}", headers=AUTH)).status_code == 404
    for url in (minted, first["callback_url"]):
        gone = await http.post(url, json={"n": 2})
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
    await page.reload()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.locator(f"li.channel[data-channel-id='{channel_id}']")).to_have_count(0)


SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>document.title = 'ran in the hub origin';</script></svg>"
)


async def test_a_stored_svg_cannot_run_in_the_hubs_origin(
    browser: Browser, hub: LiveHub, http: httpx.AsyncClient
) -> None:
    """Was: an image/svg+xml output holding <script>, opened from the dashboard's link in
    a tab, ran its script in the hub's origin. A blob of any type but the three images
    (one an older hub kept) is now a download, and every blob answer is a CSP sandbox."""
    from hub.blobs import records

    owner = hub.state.keys.require(AUTH["authorization"])
    svg = records.make(owner, SVG, "image/svg+xml")
    await hub.state.store.put_blob(svg)
    url = records.public_url(hub.state.signer, hub.url, svg.id, ttl=60)
    answer = await http.get(url)
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert answer.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert answer.headers["x-content-type-options"] == "nosniff"
    context = await browser.new_context(accept_downloads=True)
    try:
        tab = await context.new_page()
        await tab.goto(hub.url + "/healthz")
        async with tab.expect_download() as download:
            # A navigation that ends in a download leaves the page where it was.
            with contextlib.suppress(Exception):
                await tab.goto(url)
        assert (await download.value).suggested_filename == f"{svg.id}.bin"
        assert await tab.title() != "ran in the hub origin"
    finally:
        await context.close()
