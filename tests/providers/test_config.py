import pytest

from hub.config.env import SettingsError
from hub.config.settings import Settings
from hub.providers import DEFAULT_POLLING, DEFAULT_TIMEOUTS
from hub.providers.config import SANDBOX_KEY, ProviderSettings, provider_configs


def configs(env: dict[str, str], **changes: object):
    return provider_configs(Settings.from_env(env).replace(**changes))


def test_only_providers_with_a_key_are_configured_with_their_own_defaults():
    eachlabs = configs({"HUB_EACHLABS_API_KEY": "k"})["eachlabs"]
    assert list(configs({"HUB_EACHLABS_API_KEY": "k"})) == ["eachlabs"]
    assert eachlabs.base_url == "https://api.eachlabs.ai"
    assert (eachlabs.requests_per_minute, eachlabs.concurrency) == (60, 10)
    assert (eachlabs.first_poll_after, eachlabs.poll_interval) == DEFAULT_POLLING["eachlabs"]
    assert eachlabs.request_timeout == DEFAULT_TIMEOUTS["eachlabs"]
    assert configs({}) == {}


def test_variables_override_the_defaults_and_take_durations():
    segmind = configs(
        {
            "HUB_SEGMIND_API_KEY": "k",
            "HUB_SEGMIND_URL": "http://127.0.0.1:9/",
            "HUB_SEGMIND_RATE_PER_MINUTE": "0",
            "HUB_SEGMIND_CONCURRENCY": "2",
            "HUB_SEGMIND_FIRST_POLL_AFTER": "0",
            "HUB_SEGMIND_POLL_INTERVAL": "0.5",
            "HUB_SEGMIND_REQUEST_TIMEOUT": "2m",
        }
    )["segmind"]
    assert segmind.base_url == "http://127.0.0.1:9"
    assert (segmind.requests_per_minute, segmind.concurrency) == (0, 2)
    assert (segmind.first_poll_after, segmind.poll_interval, segmind.request_timeout) == (
        0.0,
        0.5,
        120.0,
    )


def test_the_sandbox_configures_every_provider_on_the_hub_itself():
    found = configs({"HUB_PUBLIC_URL": "http://hub.test"}, sandbox=True)
    assert set(found) == {"acedata", "eachlabs", "atlascloud", "segmind"}
    assert found["acedata"].base_url == "http://hub.test/sandbox/acedata"
    assert found["acedata"].api_key == SANDBOX_KEY


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("HUB_EACHLABS_RATE_PER_MINUTE", "abc", "a whole number, at least 0 (0 = no limit)"),
        ("HUB_EACHLABS_CONCURRENCY", "-1", "a whole number, at least 0 (0 = no limit)"),
        ("HUB_ACEDATA_FIRST_POLL_AFTER", "-1", "at least 0 (seconds, e.g. 15 or 2m)"),
        ("HUB_SEGMIND_POLL_INTERVAL", "0", "greater than 0 (seconds, e.g. 15 or 2m)"),
        ("HUB_ATLASCLOUD_REQUEST_TIMEOUT", "soon", "greater than 0 (seconds, e.g. 15 or 2m)"),
        ("HUB_ATLASCLOUD_URL", "api.atlascloud.ai", "an http:// or https:// URL"),
    ],
)
def test_a_bad_value_is_refused_even_for_a_provider_without_a_key(name, value, allowed):
    with pytest.raises(SettingsError) as refused:
        configs({name: value})
    assert str(refused.value) == f"{name}={value!r}: must be {allowed}"


def test_the_api_key_is_a_secret():
    assert "sekret" not in repr(ProviderSettings(api_key="sekret"))
    assert "sekret" not in repr(configs({"HUB_SEGMIND_API_KEY": "sekret"}))


def test_the_default_provider_must_be_configured():
    env = {"HUB_SEGMIND_API_KEY": "k"}
    assert configs({**env, "HUB_DEFAULT_PROVIDER": "segmind"})
    with pytest.raises(SettingsError) as refused:
        configs({**env, "HUB_DEFAULT_PROVIDER": "eachlabs"})
    assert str(refused.value) == (
        "HUB_DEFAULT_PROVIDER='eachlabs': must be a configured provider, or several"
        " comma-separated (segmind)"
    )
    with pytest.raises(SettingsError, match="none is configured"):
        configs({"HUB_DEFAULT_PROVIDER": "segmind"})


def test_the_default_provider_may_be_a_route_with_one_configured():
    env = {"HUB_SEGMIND_API_KEY": "k"}
    # The ones not configured are skipped when a task gets to them.
    assert configs({**env, "HUB_DEFAULT_PROVIDER": "eachlabs, segmind"})
    for route in ("segmind,dalle", "segmind,segmind"):
        with pytest.raises(SettingsError) as refused:
            configs({**env, "HUB_DEFAULT_PROVIDER": route})
        assert str(refused.value).startswith(f"HUB_DEFAULT_PROVIDER='{route}': must be providers")
