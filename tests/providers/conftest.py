from collections.abc import AsyncIterator

import pytest

from .helpers import Env, sandbox_env


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with sandbox_env() as environment:
        yield environment
