from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from hub.config.env import Secret
from hub.config.settings import Settings
from hub.web.app import create_app
from hub.web.state import HubState
from tests.helpers import KEY, OTHER_KEY, LiveHub, live_hub
from tests.postgres import fresh_database

MakeSettings = Callable[..., Settings]

# CI must not turn red on a draw no one can replay: there the property tests run the same
# examples every time. Run locally, they keep exploring (and fixed @example()s keep what
# they found).
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
    hypothesis.settings.load_profile("ci")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser, npx and process tests are slow ones: ``-m "not slow"`` leaves them out."""
    for item in items:
        if any(item.get_closest_marker(name) for name in ("browser", "npx", "process")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """The default store for app tests: SQLite in the data directory, or with
    ``HUB_TEST_DATABASE=postgres`` a fresh PostgreSQL database (the whole suite can run
    against either)."""
    if os.environ.get("HUB_TEST_DATABASE") != "postgres":
        yield ""
        return
    async for url in fresh_database():
        yield url


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> MakeSettings:
    def make(**changes: Any) -> Settings:
        base = Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            secret_keys=(Secret("test-secret"),),
            api_keys=(Secret(KEY), Secret(OTHER_KEY)),
            public_url="http://hub.test",
            sqlite_synchronous="NORMAL",
            # Floods are part of many tests; the limits have tests of their own.
            rate_limit_per_key=0,
            rate_limit_per_callback=0,
        )
        return base.replace(**changes)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> Starlette:
    return create_app(settings)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, lifespan run, requests through ASGITransport."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
            yield c


@pytest.fixture
def state(app: Starlette, client: httpx.AsyncClient) -> HubState:
    hub_state: HubState = app.state.hub
    return hub_state


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveHub]:
    async with live_hub(settings) as hub:
        yield hub


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain client for talking to a live hub over loopback."""
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test alone (see tests/postgres.py)."""
    async for url in fresh_database():
        yield url
