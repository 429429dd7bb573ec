"""The ``hub`` command's client side: ``channel create``, ``watch``, ``submit`` talk to a
running hub over HTTP (``--url``, ``--key``), through ``hub.client``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hub.enums import TaskStatus

if TYPE_CHECKING:
    from hub.client import AsyncClient, Event

DEFAULT_URL = "http://127.0.0.1:8000"
SPINNER = "|/-\\"


def add_commands(commands: Any) -> None:
    """Register the client commands on the ``hub`` parser's subcommands."""
    channel = commands.add_parser("channel", help="make a channel on a running hub")
    channel_commands = channel.add_subparsers(dest="action", required=True)
    create = channel_commands.add_parser("create", help="a new channel: its URLs, as JSON")
    _connection(create)
    create.add_argument("--label")
    create.add_argument("--ttl", type=int, help="lifetime in seconds")
    create.set_defaults(run=sync(channel_create))

    watch = commands.add_parser("watch", help="follow a channel's events, live")
    _connection(watch)
    watch.add_argument("channel_id")
    watch.add_argument("--from", dest="after", type=int, help="replay events after this id")
    watch.set_defaults(run=sync(watch_channel))

    submit = commands.add_parser("submit", help="edit images through a provider, and wait")
    _connection(submit)
    submit.add_argument("--provider", required=True)
    submit.add_argument("--prompt", required=True)
    submit.add_argument("--image", action="append", required=True, help="a file or URL")
    submit.add_argument("--size")
    submit.add_argument("--out", type=Path, default=Path("."), help="where to save images")
    submit.set_defaults(run=sync(submit_task))


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("HUB_URL", DEFAULT_URL))
    parser.add_argument("--key", help="the API key (default: HUB_API_KEY, or the data dir's)")


def sync(
    command: Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """A command run to its end on its own event loop, its errors as one line."""

    def run(args: argparse.Namespace) -> int:
        from hub.client import HubError

        try:
            return asyncio.run(command(args, sys.stdout))
        except HubError as exc:
            print(f"hub: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


def _client(args: argparse.Namespace) -> AsyncClient:
    from hub.client import AsyncClient
    from hub.config import datadir
    from hub.config.settings import Settings

    key = args.key or os.environ.get("HUB_API_KEY")
    if not key:
        path = Settings.from_env().data_dir / datadir.API_KEY_FILE
        key = path.read_text().strip() if path.exists() else ""
    return AsyncClient(args.url, key)


# -- over HTTP -----------------------------------------------------------------------------


async def channel_create(args: argparse.Namespace, out: TextIO) -> int:
    import orjson

    async with _client(args) as client:
        channel = await client.create_channel(args.label, args.ttl)
    out.write(orjson.dumps(channel, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def watch_channel(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client:
        out.write(f"watching {args.channel_id} (Ctrl-C to stop)\n")
        out.flush()
        async for event in client.events(channel_id=args.channel_id, last_event_id=args.after):
            out.write(describe(event) + "\n")
            out.flush()
    return 0


def describe(event: Event) -> str:
    """One readable line for an event."""
    import orjson

    data = event.data if isinstance(event.data, dict) else {}
    at = str(data.get("at", ""))[11:19]
    if event.type == "callback.received":
        body = orjson.dumps(data.get("body")).decode()
        if len(body) > 120:
            body = body[:117] + "..."
        ref = f" task {data['task_id']}" if data.get("task_id") else ""
        detail = f"{data.get('content_type') or '-'}{ref} {body}"
    elif event.type.startswith("task."):
        error = _error_text(data["error"]) if data.get("error") else ""
        detail = f"{data.get('task_id')} {data.get('provider', '')} {error}"
    else:
        detail = orjson.dumps(data).decode()[:120]
    return f"#{event.id} {at} {event.type} {detail}".rstrip()


async def submit_task(args: argparse.Namespace, out: TextIO) -> int:
    options = {"size": args.size} if args.size else {}
    started = time.monotonic()
    async with _client(args) as client:
        task = await client.submit(args.provider, args.prompt, args.image, **options)
        status = TaskStatus.QUEUED.value
        progress = _Progress(out, task["id"], started)
        waiting = asyncio.create_task(_follow(client, task["id"], progress))
        while not waiting.done():
            progress.show(status)
            await asyncio.wait({waiting}, timeout=0.2)
            status = progress.status
        done = await client.get(waiting.result())
        progress.finish(done["status"])
        if done["status"] != TaskStatus.SUCCEEDED:
            out.write(f"{done['status']}: {_error_text(done.get('error'))}\n")
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        for number, output in enumerate(done["outputs"], start=1):
            extension = output["content_type"].rpartition("/")[2] or "bin"
            path = args.out / f"{done['id']}-{number}.{extension}"
            path.write_bytes(await client.download(output["url"]))
            out.write(f"saved {path}\n")
    return 0


async def _follow(client: AsyncClient, task_id: str, progress: _Progress) -> str:
    async for event in client.events(task_id=task_id):
        progress.status = event.type.removeprefix("task.")
        if event.type == "task.retrying" and isinstance(event.data, dict):
            # Why it waits, and until when: a retry is never silent.
            data = event.data
            at = str(data.get("retry_at", ""))[11:19]
            progress.note(
                f"attempt {data.get('attempt')}: {_error_text(data.get('error'))};"
                f" next attempt at {at}"
            )
    return task_id


def _error_text(error: object) -> str:
    """A task's ``error`` ({"code", "message"}) as one line."""
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return str(error)


class _Progress:
    """A line that updates in place on a terminal; one line per change elsewhere."""

    def __init__(self, out: TextIO, task_id: str, started: float) -> None:
        self._out = out
        self._task_id = task_id
        self._started = started
        self._live = out.isatty()
        self._shown = ""
        self._turn = 0
        self.status = TaskStatus.QUEUED.value

    def show(self, status: str) -> None:
        elapsed = time.monotonic() - self._started
        if self._live:
            self._turn += 1
            spin = SPINNER[self._turn % len(SPINNER)]
            self._out.write(f"\r{spin} {self._task_id} {status} {elapsed:5.1f}s")
            self._out.flush()
        elif status != self._shown:
            self._out.write(f"{self._task_id} {status} at {elapsed:.1f}s\n")
            self._out.flush()
        self._shown = status

    def note(self, line: str) -> None:
        """A line of its own, above the progress line."""
        prefix = "\r\033[K" if self._live else ""
        self._out.write(f"{prefix}{self._task_id} {line}\n")
        self._out.flush()
        self._shown = ""

    def finish(self, status: str) -> None:
        elapsed = time.monotonic() - self._started
        prefix = "\r" if self._live else ""
        self._out.write(f"{prefix}{self._task_id} {status} in {elapsed:.1f}s\n")
