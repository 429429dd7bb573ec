from pathlib import Path

import pytest

from hub.config import datadir
from hub.config.env import Secret, SettingsError
from hub.config.settings import Settings


def test_defaults():
    s = Settings.from_env({})
    assert s.data_dir == Path("hub-data")
    assert s.database_url == "sqlite:///hub-data/hub.db"
    assert (s.host, s.port, s.public_url) == ("127.0.0.1", 8000, "http://127.0.0.1:8000")
    assert s.max_callback_bytes == 32 * 1024 * 1024
    assert s.retention_seconds == 7 * 86400


def test_environment_overrides_and_short_names():
    s = Settings.from_env(
        {
            "HUB_SECRET": "new, old",
            "HUB_API_KEYS": "a,b,,",
            "HUB_PORT": "9000",
            "HUB_RETENTION": "2d",
            "HUB_HEARTBEAT_SECONDS": "0.5",
            "HUB_PUBLIC_URL": "https://hub.example/",
            "HUB_SANDBOX": "yes",
        }
    )
    assert [k.reveal() for k in s.secret_keys] == ["new", "old"]
    assert [k.reveal() for k in s.api_keys] == ["a", "b"]
    assert s.port == 9000
    assert s.retention_seconds == 2 * 86400
    assert s.heartbeat_seconds == 0.5
    assert s.public_url == "https://hub.example"
    assert s.sandbox is True


@pytest.mark.parametrize(
    ("name", "value"), [("HUB_PORT", "eighty"), ("HUB_SANDBOX", "maybe"), ("HUB_RETENTION", "7w")]
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_secrets_never_show_in_repr():
    s = Settings.from_env({"HUB_SECRET": "hunter2", "HUB_API_KEYS": "key-abc"})
    assert "hunter2" not in repr(s)
    assert "key-abc" not in repr(s)
    assert "hunter2" not in str(s.secret_keys[0])
    assert Secret("a") == Secret("a") != Secret("b")


def test_unsupported_database_url_is_refused_without_showing_it():
    settings = Settings(database_url="mysql://user:hunter2@db/x")
    with pytest.raises(SettingsError, match="HUB_DATABASE_URL") as refused:
        _ = settings.sqlite_path
    assert "hunter2" not in str(refused.value)
    assert "hunter2" not in repr(settings)


def test_a_postgresql_url_selects_the_replica_store():
    assert Settings(database_url="postgresql://db/hub").postgres
    assert Settings(database_url="postgres://db/hub").postgres
    assert not Settings().postgres


def test_data_dir_generates_secret_and_key_once(tmp_path):
    settings = Settings(data_dir=tmp_path / "d")
    first, key = datadir.prepare(settings)
    assert key is not None and key.startswith("hub_")
    assert (tmp_path / "d" / "api-key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d" / "secret").stat().st_mode & 0o777 == 0o600
    again, key_again = datadir.prepare(settings)
    assert key_again is None  # shown once, read back afterwards
    assert again.api_keys == first.api_keys == (Secret(key),)
    assert again.secret_keys == first.secret_keys


def test_configured_keys_are_used_as_given(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "d", api_keys=(Secret("mine"),), secret_keys=(Secret("s"),)
    )
    prepared, key = datadir.prepare(settings)
    assert key is None and prepared == settings
    assert not (tmp_path / "d" / "api-key").exists()


def test_the_subscriber_queue_is_bounded_in_bytes_too():
    settings = Settings.from_env({"HUB_SUBSCRIBER_QUEUE_BYTES": "1048576"})
    assert settings.subscriber_queue_bytes == 1 << 20
    from hub.web.state import HubState

    broker = HubState(settings.replace(secret_keys=(Secret("s"),))).broker
    assert broker._queue_bytes == 1 << 20


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("HUB_HEARTBEAT_SECONDS", "0", "greater than 0 (seconds, e.g. 15 or 2m)"),
        ("HUB_SUBSCRIBER_QUEUE_SIZE", "-1", "a whole number, at least 1"),
        ("HUB_TASK_MAX_ATTEMPTS", "0", "a whole number, at least 1"),
        ("HUB_PORT", "0", "a whole number from 1 to 65535"),
        ("HUB_PORT", "65536", "a whole number from 1 to 65535"),
        ("HUB_SQLITE_SYNCHRONOUS", "fast", "one of OFF, NORMAL, FULL, EXTRA"),
        ("HUB_LOG_FORMAT", "xml", "one of text, json"),
        ("HUB_RATE_LIMIT_PER_KEY", "-1", "a number, at least 0 (0 = off)"),
        ("HUB_RATE_LIMIT_PER_CALLBACK", "1m", "a number, at least 0 (0 = off)"),
        ("HUB_PUBLIC_URL", "hub.example.com", "an http:// or https:// URL"),
        ("HUB_RETENTION", "0", "greater than 0 (whole seconds, e.g. 15 or 2m)"),
        ("HUB_WEBHOOK_RETRY_SECONDS", "0", "greater than 0 (seconds, e.g. 15 or 2m)"),
        (
            "HUB_WORKER_CONCURRENCY",
            "-1",
            "a whole number, at least 0 (0 = this process works no tasks)",
        ),
        ("PORT", "http", "a whole number from 1 to 65535"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_value_and_what_is_allowed(
    name, value, allowed
):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value) == f"{name}={value!r}: must be {allowed}"


def test_settings_made_in_code_meet_the_same_bounds():
    with pytest.raises(SettingsError, match="HUB_HEARTBEAT_SECONDS=0:"):
        Settings(heartbeat_seconds=0)
    with pytest.raises(SettingsError, match="HUB_PORT=70000:"):
        Settings().replace(port=70000)
    with pytest.raises(SettingsError, match="HUB_LOG_FORMAT='xml':"):
        Settings(log_format="xml")


def test_a_channel_ttl_longer_than_the_longest_allowed_is_refused():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"HUB_CHANNEL_TTL_SECONDS": "400d"})
    assert str(refused.value) == (
        "HUB_CHANNEL_TTL_SECONDS=34560000: must be at most HUB_MAX_TTL_SECONDS (31536000)"
    )


def test_choices_are_read_in_any_case():
    settings = Settings.from_env({"HUB_SQLITE_SYNCHRONOUS": "normal", "HUB_LOG_FORMAT": "JSON"})
    assert (settings.sqlite_synchronous, settings.log_format) == ("NORMAL", "json")


def test_port_falls_back_to_the_platforms_variable():
    assert Settings.from_env({"PORT": "8080"}).port == 8080
    assert Settings.from_env({"PORT": "8080", "HUB_PORT": "9000"}).port == 9000


def test_other_hub_variables_are_passed_on_for_the_providers_and_the_sandbox():
    settings = Settings.from_env(
        {"HUB_SECRET": "s", "HUB_PORT": "1", "HUB_EACHLABS_API_KEY": "k", "HOME": "/root"}
    )
    assert settings.extra_env == (("HUB_EACHLABS_API_KEY", "k"),)
    assert "'k'" not in repr(settings)


def test_an_ipv6_host_is_bracketed_in_the_public_url():
    assert Settings(host="::1", port=9000).public_url == "http://[::1]:9000"
