"""A live hub on sandbox providers that finish at once, for the tests of
POST /v1/images/edits through the openai SDK. A module changes its settings by overriding
``sandbox_settings``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hub.config.settings import Settings
from tests.conftest import MakeSettings
from tests.helpers import FAST_SANDBOX, LiveHub, live_hub


@pytest.fixture
def sandbox_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(sandbox=True, extra_env=FAST_SANDBOX)


@pytest.fixture
async def hub(sandbox_settings: Settings) -> AsyncIterator[LiveHub]:
    async with live_hub(sandbox_settings) as live:
        yield live
