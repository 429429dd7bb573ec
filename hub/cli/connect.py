"""What every client command shares: ``--url`` and ``--key``, finding the key, and running a
command to its end with any failure shown as one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hub.config.env import SettingsError

if TYPE_CHECKING:
    from hub.client import AsyncClient

DEFAULT_URL = "http://127.0.0.1:8000"


class CommandError(Exception):
    """A failure the user can fix, said in one line (``hub: <message>``)."""


def add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("HUB_URL", DEFAULT_URL))
    parser.add_argument("--key", help="the API key (default: HUB_API_KEY, or the data dir's)")


def sync(
    command: Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """A command run to its end on its own event loop, its errors as one line."""

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args, sys.stdout))
        except KeyboardInterrupt:
            return 130
        except SettingsError:
            raise  # the operator's variable: ``hub.cli.main`` names it, exit 2
        except Exception as exc:
            print(f"hub: {describe_error(exc, getattr(args, 'url', None))}", file=sys.stderr)
            return 1

    return run


def describe_error(exc: Exception, url: str | None) -> str:
    """One line for whatever stopped a command."""
    # Imported here, once something failed: building the parser stays light.
    import httpx

    from hub.client import HubError

    if isinstance(exc, CommandError | HubError):
        return str(exc)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach the hub at {url} (is it running? --url or HUB_URL name another)"
    if isinstance(exc, httpx.TransportError):
        return f"lost the hub at {url}: {type(exc).__name__} {exc}".rstrip()
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read {exc.filename}: {exc.strerror}"
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def api_key(args: argparse.Namespace) -> str:
    """``--key``, else ``HUB_API_KEY``, else the key the hub generated in its data dir."""
    from hub.config import datadir
    from hub.config.settings import Settings

    key = args.key or os.environ.get("HUB_API_KEY")
    if key:
        return str(key)
    path = Settings.from_env().data_dir / datadir.API_KEY_FILE
    try:
        found = Path(path).read_text().strip()
    except FileNotFoundError:
        found = ""
    if not found:
        raise CommandError(
            f"no API key: pass --key, set HUB_API_KEY, or run where the hub keeps {path}"
            " (HUB_DATA_DIR names its data dir)"
        )
    return found


def client_for(args: argparse.Namespace, *, read_timeout: float | None = None) -> AsyncClient:
    from hub.client import AsyncClient

    return AsyncClient(args.url, api_key(args), read_timeout=read_timeout)
