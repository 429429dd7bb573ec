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


def test_version(capsys):
    from hub import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"hub {__version__}\n"


@pytest.mark.parametrize("action", [["create"], ["list"], ["revoke", "key_0"]])
def test_keys_refuse_a_store_nobody_named(tmp_path, monkeypatch, capsys, action):
    """Run from a directory that holds no hub, `hub keys` would make an empty store there."""
    monkeypatch.delenv("HUB_DATA_DIR")
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["keys", *action]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hub: no hub store in ")
    assert "HUB_DATA_DIR" in err and "--data-dir" in err
    assert list(tmp_path.iterdir()) == []


def test_keys_use_the_data_dir_they_are_given(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HUB_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert main(["keys", "--data-dir", "elsewhere", "create", "--label", "x"]) == 0
    assert (tmp_path / "elsewhere" / "hub.db").exists()
    assert main(["keys", "--data-dir", "elsewhere", "list"]) == 0
    assert "  active  " in capsys.readouterr().out


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err


def test_no_key_is_one_line_naming_where_a_key_comes_from(monkeypatch, capsys):
    monkeypatch.delenv("HUB_API_KEY", raising=False)
    assert main(["channel", "list"]) == 1
    err = one_line_error(capsys)
    assert "--key" in err and "HUB_API_KEY" in err and "api-key" in err


@pytest.mark.parametrize(
    "command",
    [["channel", "list"], ["channel", "delete", "ch_x"], ["tasks"], ["watch", "ch_x"],
     ["channel", "create"]],
)  # fmt: skip
def test_an_unreachable_hub_is_one_line(capsys, command):
    from tests.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert main([*command, "--url", url, "--key", "k"]) == 1
    assert one_line_error(capsys) == (
        f"hub: cannot reach the hub at {url} (is it running? --url or HUB_URL name another)\n"
    )


def test_a_missing_image_is_one_line_and_nothing_is_sent(tmp_path, capsys):
    from tests.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: it must not get that far
    args = ["submit", "--url", url, "--key", "k", "--provider", "acedata", "--prompt", "p"]
    assert main([*args, "--image", str(tmp_path / "nope.png")]) == 1
    assert (
        one_line_error(capsys) == f"hub: cannot read image {tmp_path / 'nope.png'}: no such file\n"
    )
