"""``hub serve`` as a process: the start-up warning when a real provider cannot reach the
hub, and the closed sandbox (issue 15, finding 5) as ``--sandbox`` runs it."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hub.providers.base import ProviderConfig
from hub.providers.config import public_url_warning
from tests.processes import HubProcess, free_port

WARNING = "is a loopback or private address, but"


def config(name: str, url: str) -> dict[str, ProviderConfig]:
    return {name: ProviderConfig(name, url, "k")}


@pytest.mark.parametrize(
    "public_url, provider_url, warned",
    [
        ("http://127.0.0.1:8000", "https://api.eachlabs.ai", True),
        ("http://10.0.0.5:8000", "https://api.eachlabs.ai", True),
        ("http://192.168.1.2", "https://api.segmind.com", True),
        ("http://localhost:8000", "https://api.atlascloud.ai", True),
        ("https://hub.example.com", "https://api.eachlabs.ai", False),
        # An emulator on this machine or network is no real provider.
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/sandbox/eachlabs", False),
        ("http://127.0.0.1:8000", "http://10.0.0.9:9000/eachlabs", False),
    ],
)
def test_the_warning_names_real_providers_only(public_url: str, provider_url: str, warned: bool):
    warning = public_url_warning(public_url, config("eachlabs", provider_url))
    assert (warning is not None) is warned
    if warning is not None:
        assert public_url in warning and "eachlabs is a real provider" in warning


async def test_serve_warns_once_at_start_when_a_real_provider_cannot_reach_it(tmp_path: Path):
    hub = HubProcess(tmp_path, free_port(), extra={"HUB_EACHLABS_API_KEY": "k"})
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            await hub.ready(http)
        lines = [line for line in hub.output().splitlines() if WARNING in line]
        assert len(lines) == 1, hub.output()
        assert f"HUB_PUBLIC_URL {hub.url} {WARNING} eachlabs is a real provider" in lines[0]
    finally:
        hub.kill()


async def test_serve_does_not_warn_with_a_public_url(tmp_path: Path):
    extra = {"HUB_EACHLABS_API_KEY": "k", "HUB_PUBLIC_URL": "https://hub.example.com"}
    hub = HubProcess(tmp_path, free_port(), extra=extra)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            await hub.ready(http)
        assert WARNING not in hub.output()
    finally:
        hub.kill()


async def test_serve_sandbox_is_closed_to_other_keys(tmp_path: Path):
    hub = HubProcess(tmp_path, free_port(), command=("serve", "--sandbox"))
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            await hub.ready(http)
            key_file = tmp_path / "sandbox-key"
            key = key_file.read_text().strip()
            assert key.startswith("sbx_") and stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert WARNING not in hub.output()  # the providers are the emulators
            tasks = f"{hub.url}/sandbox/acedata/openai/tasks"
            listing = {"action": "retrieve_batch", "limit": 100}
            # The finding: any non-empty key listed every tenant's tasks.
            for other in ("anything", "sandbox", key[:-1]):
                answer = await http.post(
                    tasks, json=listing, headers={"Authorization": f"Bearer {other}"}
                )
                assert answer.status_code == 401
            own = await http.post(tasks, json=listing, headers={"Authorization": f"Bearer {key}"})
            assert own.status_code == 200
            ledger = await http.get(f"{hub.url}/sandbox/acedata/_sandbox/ledger")
            assert (ledger.status_code, ledger.json()) == (200, {"jobs": []})
    finally:
        hub.kill()


def test_serve_sandbox_refuses_a_public_address_unless_meant(tmp_path: Path):
    command = [sys.executable, "-m", "hub", "serve", "--sandbox", "--host", "0.0.0.0"]
    env = {"HUB_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--sandbox-public" in done.stderr and "0.0.0.0" in done.stderr
    assert not (tmp_path / "sandbox-key").exists()  # refused before anything was written
