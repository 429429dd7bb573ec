import pytest

from hub.cli.main import main


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


async def test_the_shutdown_signal_ends_streams_from_the_loop_not_inside_the_handler(
    make_settings,
):
    """A signal handler interrupts whatever bytecode was running: it must not end streams
    itself (that re-entered a subscriber being woken, and crashed it), only ask the loop."""
    import asyncio
    import signal

    from hub.web.server import build_server

    server = build_server(make_settings())
    server._loop = asyncio.get_running_loop()
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and not server.hub_state.shutting_down
    await asyncio.sleep(0)
    assert server.hub_state.shutting_down


def test_the_sandbox_refuses_bad_settings_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("HUB_SANDBOX_LATENCY", "-1")
    assert main(["sandbox"]) == 2
    assert capsys.readouterr().err == (
        "hub: HUB_SANDBOX_LATENCY='-1': must be at least 0 (seconds, e.g. 15 or 2m)\n"
    )


def test_every_command_refuses_bad_settings_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("HUB_HEARTBEAT_SECONDS", "0")
    assert main(["keys", "list"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
