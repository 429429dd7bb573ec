"""A `hub` command run as a real process on a loopback port, for crash and restart tests."""

import contextlib
import os
import socket
import subprocess
import sys

import httpx

from tests.helpers import KEY, until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubProcess:
    def __init__(
        self,
        data_dir,
        port: int,
        *,
        extra: dict[str, str] | None = None,
        command: tuple[str, ...] = ("serve",),
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "HUB_DATA_DIR": str(data_dir),
            "HUB_API_KEYS": KEY,
            "HUB_SECRET": "process-test-secret",
            "HUB_HEARTBEAT_SECONDS": "0.3",
            "HUB_RATE_LIMIT_PER_KEY": "0",
            "HUB_RATE_LIMIT_PER_CALLBACK": "0",
            **(extra or {}),
        }
        self.log = data_dir / f"hub-{port}-{os.urandom(3).hex()}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", *command, "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, http: httpx.AsyncClient, path: str = "/healthz") -> None:
        async def up() -> bool:
            assert self.proc.poll() is None, self.output()
            with contextlib.suppress(httpx.TransportError):
                return (await http.get(self.url + path)).status_code == 200
            return False

        await until(up, timeout=20, every=0.05)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text()
