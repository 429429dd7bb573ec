from collections.abc import AsyncIterator

import pytest

from .helpers import Harness, running


@pytest.fixture
async def sb() -> AsyncIterator[Harness]:
    async with running() as harness:
        yield harness
