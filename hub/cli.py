"""The ``hub`` command: ``hub serve`` runs the hub on uvicorn; the client commands
(``channel``, ``watch``, ``submit``, ``keys``) are in ``hub.commands``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from hub import datadir, logs
from hub.app import create_app
from hub.commands import add_commands
from hub.settings import Settings, SettingsError
from hub.state import HubState

GRACEFUL_SHUTDOWN_SECONDS = 10


class Server(uvicorn.Server):
    """uvicorn waits for open connections before running the lifespan's shutdown, and SSE
    streams never finish by themselves: so on the signal, end them first."""

    def __init__(self, config: uvicorn.Config, state: HubState) -> None:
        super().__init__(config)
        self.hub_state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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
        http="httptools" if _has("httptools") else "h11",
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


def serve(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        settings, new_key = datadir.prepare(settings)
        server = build_server(settings)
    except (SettingsError, ValueError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    if settings.log_format not in ("text", "json"):
        print(
            f"hub: HUB_LOG_FORMAT: use text or json, not {settings.log_format!r}", file=sys.stderr
        )
        return 2
    logs.configure(settings.log_format)
    print(f"hub: listening on http://{settings.host}:{settings.port}"
          f" (public URL {settings.public_url})", flush=True)  # fmt: skip
    print(f"hub: data in {settings.data_dir.resolve()}", flush=True)
    if new_key is not None:
        print(
            f"hub: generated API key (kept in {settings.data_dir}/api-key): {new_key}", flush=True
        )
    elif (settings.data_dir / datadir.API_KEY_FILE).exists():
        print(f"hub: API key in {settings.data_dir / datadir.API_KEY_FILE}", flush=True)
    _tune_gc()
    server.run()
    return 0


def _tune_gc() -> None:
    """The collector's full passes walk every object; with thousands of open streams each
    pass stalls delivery for hundreds of milliseconds (measured: one event to 10,000 idle
    subscribers took 0.5 s without collections, 1 to 1.4 s with them). What exists at start
    lives as long as the process: freeze it out of the passes, and let young objects pile
    up longer before a pass. Reference counting still frees nearly everything at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if args.host:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if args.sandbox:
        changes["sandbox"] = True
    if changes and not os.environ.get("HUB_PUBLIC_URL"):
        changes["public_url"] = ""  # recomputed from the new host and port
    return settings.replace(**changes)


def sandbox(args: argparse.Namespace) -> int:
    """The providers' emulators alone, each under /<provider>."""
    from hub.sandbox.app import SandboxSettings, create_sandbox_app

    settings = SandboxSettings.from_env(os.environ)
    logs.configure(os.environ.get("HUB_LOG_FORMAT", "text"))
    print(
        f"hub sandbox: http://{args.host}:{args.port}/<acedata|eachlabs|atlascloud|segmind>",
        flush=True,
    )
    uvicorn.run(
        create_sandbox_app(settings),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub", description="The hub: callbacks in, SSE out.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the hub")
    serve_parser.add_argument("--host", help="address to bind (HUB_HOST, default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to bind (HUB_PORT, default 8000)")
    serve_parser.add_argument(
        "--sandbox", action="store_true", help="run the providers' emulators in-process"
    )
    serve_parser.set_defaults(run=serve)
    sandbox_parser = commands.add_parser("sandbox", help="run the providers' emulators alone")
    sandbox_parser.add_argument("--host", default="127.0.0.1")
    sandbox_parser.add_argument("--port", type=int, default=9000)
    sandbox_parser.set_defaults(run=sandbox)
    add_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
