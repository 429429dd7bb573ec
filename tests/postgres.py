"""A fresh PostgreSQL database for each test that needs one, dropped afterwards.

The server is ``HUB_TEST_POSTGRES_URL`` (default: the local one, trust auth). Without a
reachable server the test is skipped with the reason, unless ``HUB_REQUIRE_SERVICES=1``
(as in CI), where it fails instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

SERVER_URL = os.environ.get(
    "HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str) -> str:
    parts = urlsplit(SERVER_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin() -> asyncpg.Connection:
    try:
        connection: asyncpg.Connection = await asyncpg.connect(SERVER_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"no PostgreSQL at {urlsplit(SERVER_URL).netloc}: {exc}"
        if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (HUB_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return connection


async def fresh_database() -> AsyncIterator[str]:
    """Yield the URL of a new, empty database; drop it (and its sessions) afterwards."""
    name = f"hub_test_{secrets.token_hex(6)}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield database_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
