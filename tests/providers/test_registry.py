import httpx

from hub.providers import DEFAULT_LIMITS, DEFAULT_POLLING, DEFAULT_TIMEOUTS, DEFAULT_URLS, PROVIDERS
from hub.providers.base import ProviderConfig

from .helpers import KEY

NAMES = {"acedata", "eachlabs", "atlascloud", "segmind"}


async def test_every_factory_builds_its_provider():
    assert set(PROVIDERS) == NAMES
    async with httpx.AsyncClient() as client:
        for name, factory in PROVIDERS.items():
            provider = factory(ProviderConfig(name, DEFAULT_URLS[name], KEY), client)
            assert provider.name == name
            assert provider.supports_callback == (name != "segmind")


def test_defaults():
    assert DEFAULT_URLS == {
        "acedata": "https://api.acedata.cloud",
        "eachlabs": "https://api.eachlabs.ai",
        "atlascloud": "https://api.atlascloud.ai",
        "segmind": "https://api.segmind.com",
    }
    assert DEFAULT_LIMITS == {
        "acedata": (0, 0),
        "eachlabs": (60, 10),
        "atlascloud": (0, 0),
        "segmind": (5, 0),
    }
    assert set(DEFAULT_POLLING) == set(DEFAULT_TIMEOUTS) == NAMES
    # Callback-first providers are polled late; AtlasCloud is polled from the start.
    assert (
        DEFAULT_POLLING["acedata"][0]
        > DEFAULT_POLLING["eachlabs"][0]
        > DEFAULT_POLLING["atlascloud"][0]
    )
    assert DEFAULT_TIMEOUTS["segmind"] > 60.0  # its synchronous answer takes about a minute


def test_segmind_defaults_to_the_free_plan_except_in_the_sandbox():
    from hub.config.settings import Settings
    from hub.providers.config import provider_configs

    real = provider_configs(Settings(extra_env=(("HUB_SEGMIND_API_KEY", "k"),)))
    assert real["segmind"].requests_per_minute == 5
    pro = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_RATE_PER_MINUTE", "50"))
    assert provider_configs(Settings(extra_env=pro))["segmind"].requests_per_minute == 50
    sandbox = provider_configs(Settings(sandbox=True))
    assert sandbox["segmind"].requests_per_minute == 0
    assert sandbox["eachlabs"].concurrency == 10
