import pytest

from hub.cli import main


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HUB_PORT", "eighty"),
        ("HUB_EACHLABS_RATE_PER_MINUTE", "lots"),
        ("HUB_SEGMIND_POLL_INTERVAL", "-1"),
    ],
)
def test_serve_refuses_bad_settings_naming_the_variable(monkeypatch, capsys, name, value):
    monkeypatch.setenv(name, value)
    assert main(["serve", "--sandbox"]) == 2
    assert name in capsys.readouterr().err


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
