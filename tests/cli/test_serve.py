"""``hub serve`` and ``hub sandbox`` as real processes, refusing bad settings at start."""

import os
import subprocess
import sys

import pytest

BAD = [
    ({"HUB_HEARTBEAT_SECONDS": "0"}, (), "must be greater than 0 (seconds, e.g. 15 or 2m)"),
    ({"HUB_SUBSCRIBER_QUEUE_SIZE": "-1"}, (), "must be a whole number, at least 1"),
    ({"HUB_TASK_MAX_ATTEMPTS": "0"}, (), "must be a whole number, at least 1"),
    (
        {"HUB_EACHLABS_RATE_PER_MINUTE": "abc"},
        (),
        "must be a whole number, at least 0 (0 = no limit)",
    ),
    (
        {"HUB_SANDBOX_LATENCY": "-1"},
        ("--sandbox",),
        "must be at least 0 (seconds, e.g. 15 or 2m)",
    ),
    ({}, ("--port", "70000"), "must be a whole number from 1 to 65535"),
]


def run_hub(tmp_path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # Only the test's own HUB_* variables, whatever the environment running the tests holds.
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k != "PORT"}
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env={**base, "HUB_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.process
@pytest.mark.parametrize(("env", "args", "allowed"), BAD)
def test_serve_stops_at_start_with_one_line_naming_the_variable(tmp_path, env, args, allowed):
    done = run_hub(tmp_path, env, "serve", *args)
    name, value = next(iter(env.items())) if env else ("HUB_PORT", "70000")
    shown = repr(value) if env else value  # --port is an int by the time it is checked
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"hub: {name}={shown}: {allowed}\n"
    assert done.stdout == ""


@pytest.mark.process
def test_the_sandbox_alone_stops_at_start_with_one_line(tmp_path):
    done = run_hub(tmp_path, {"HUB_SANDBOX_EACHLABS_AUTH": "token"}, "sandbox")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "hub: HUB_SANDBOX_EACHLABS_AUTH='token': must be one of both, x-api-key, bearer\n"
    )
