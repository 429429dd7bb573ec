"""The hub on uvicorn: a server that ends the hub's streams before it waits for open
connections, so a shutdown is not held up by SSE clients that never hang up."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn

from hub.config.settings import Settings
from hub.web.app import create_app
from hub.web.protocol import Bounds, protocol
from hub.web.state import HubState

GRACEFUL_SHUTDOWN_SECONDS = 10


class Server(uvicorn.Server):
    """uvicorn waits for open connections before running the lifespan's shutdown, and SSE
    streams never finish by themselves: so on the signal, end them first."""

    def __init__(self, config: uvicorn.Config, state: HubState) -> None:
        super().__init__(config)
        self.hub_state = state
        state.on_exit(self._exit_now)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def _exit_now(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between any two bytecodes of whatever the loop was doing;
        # ending streams right here could re-enter the very code it interrupted (seen:
        # a waiter woken twice). The loop does it, as its next callback.
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self.hub_state.begin_shutdown)
        else:
            self.hub_state.begin_shutdown()
        super().handle_exit(sig, frame)


def build_server(settings: Settings, *, log_level: str = "info") -> Server:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http=protocol(
            Bounds(
                max_header_bytes=settings.max_header_bytes,
                max_headers=settings.max_headers,
                header_timeout=settings.header_timeout_seconds,
                max_connections=settings.max_connections,
            )
        ),
        lifespan="on",
        # The access log would print callback URLs, whose path is a credential.
        access_log=False,
        log_level=log_level,
        # hub.logs configures logging (one format, request ids), not uvicorn's own config.
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    return Server(config, app.state.hub)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
