from pathlib import Path

import pytest

from hub.config import datadir
from hub.config.settings import Secret, Settings, SettingsError


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
