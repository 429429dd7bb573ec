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


def _loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    import subprocess
    import sys

    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


HEAVY = {"hub.web", "hub.sandbox", "hub.store", "starlette", "uvicorn", "httpx", "PIL", "asyncpg"}


def test_help_loads_no_server_client_or_store():
    code = (
        "from hub.cli.main import main\n"
        "try:\n    main(['keys', 'list', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) & HEAVY == set()


def test_the_sandbox_is_loaded_only_when_asked_for(tmp_path):
    code = (
        "from pathlib import Path\n"
        "from hub.config.settings import Secret, Settings\n"
        "from hub.web.app import create_app\n"
        f"create_app(Settings(data_dir=Path({str(tmp_path)!r}), secret_keys=(Secret('s'),)))"
    )
    loaded = _loaded_after(code)
    assert "hub.web.app" in loaded and "hub.sandbox" not in loaded
    with_sandbox = code.replace("secret_keys=", "sandbox=True, secret_keys=")
    assert "hub.sandbox.app" in _loaded_after(with_sandbox)


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
