"""``hub serve`` (the hub on uvicorn) and ``hub sandbox`` (the providers' emulators alone)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import logging
import os
import sys
from typing import Any

from hub import logs
from hub.config import datadir
from hub.config.env import SettingsError
from hub.config.settings import Settings


def add_commands(commands: Any) -> None:
    serve_parser = commands.add_parser("serve", help="run the hub")
    serve_parser.add_argument("--host", help="address to bind (HUB_HOST, default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to bind (HUB_PORT, default 8000)")
    serve_parser.add_argument(
        "--sandbox", action="store_true", help="run the providers' emulators in-process"
    )
    serve_parser.add_argument(
        "--sandbox-public",
        action="store_true",
        help="allow --sandbox on an address other than loopback (the emulators are a demo)",
    )
    serve_parser.set_defaults(run=serve)
    sandbox_parser = commands.add_parser("sandbox", help="run the providers' emulators alone")
    sandbox_parser.add_argument("--host", default="127.0.0.1")
    sandbox_parser.add_argument("--port", type=int, default=9000)
    sandbox_parser.set_defaults(run=sandbox)


def serve(args: argparse.Namespace) -> int:
    from hub.web.server import build_server

    # Everything the hub writes (its database, secrets, blobs) is for it alone.
    os.umask(0o077)
    try:
        settings = _settings(args)
        _check_sandbox_host(settings, getattr(args, "sandbox_public", False))
        settings, new_key = datadir.prepare(settings)
        server = build_server(settings)
    except (SettingsError, ValueError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format)
    _warn_public_url(settings)
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
    if server.hub_state.failed is not None:
        print("hub: stopped: the store failed (see the log above)", file=sys.stderr)
        return 1
    return 0


def _warn_public_url(settings: Settings) -> None:
    from hub.providers.config import provider_configs, public_url_warning

    warning = public_url_warning(settings.public_url, provider_configs(settings))
    if warning is not None:
        logging.getLogger("hub.serve").warning(warning)


def _check_sandbox_host(settings: Settings, meant: bool) -> None:
    """The sandbox is a demo with fake money: on a reachable address it is refused unless
    ``--sandbox-public`` says that is meant."""
    if settings.sandbox and not meant and not is_loopback_host(settings.host):
        raise ValueError(
            f"--sandbox on {settings.host!r} would serve the emulators beyond this machine;"
            " bind to 127.0.0.1 (or ::1), or add --sandbox-public if that is meant"
        )


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    import uvicorn

    from hub.sandbox.app import SandboxSettings, create_sandbox_app
    from hub.web.server import GRACEFUL_SHUTDOWN_SECONDS

    settings = SandboxSettings.from_env(os.environ)
    logs.configure(os.environ.get("HUB_LOG_FORMAT", "text"))
    print(
        f"hub sandbox: http://{args.host}:{args.port}/<acedata|eachlabs|atlascloud|segmind>",
        flush=True,
    )
    if settings.api_key is None:
        # Closed by default: only the holder of this key can submit, read or feed jobs.
        settings = dataclasses.replace(settings, api_key=datadir.new_sandbox_key())
        print(
            f"hub sandbox: key (set HUB_SANDBOX_KEY to choose it; give it to the hub as"
            f" HUB_<PROVIDER>_API_KEY): {settings.api_key}",
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
