"""The ``hub`` command's client side: ``channel``, ``watch``, ``submit``, ``tasks`` talk to a
running hub over HTTP (``--url``, ``--key``), through ``hub.client``."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hub.cli.connect import CommandError, client_for, sync
from hub.cli.connect import add_connection as _connection
from hub.enums import ACTIVE, TaskStatus

if TYPE_CHECKING:
    from hub.client import AsyncClient, Event

SPINNER = "|/-\\"


def add_commands(commands: Any) -> None:
    """Register the client commands on the ``hub`` parser's subcommands."""
    channel = commands.add_parser("channel", help="the channels on a running hub")
    channel_commands = channel.add_subparsers(dest="action", required=True)
    create = channel_commands.add_parser("create", help="a new channel: its URLs, as JSON")
    _connection(create)
    create.add_argument("--label")
    create.add_argument("--ttl", type=int, help="lifetime in seconds")
    create.set_defaults(run=sync(channel_create))
    listing = channel_commands.add_parser("list", help="the key's channels, newest first")
    _connection(listing)
    listing.set_defaults(run=sync(channel_list))
    delete = channel_commands.add_parser(
        "delete", help="erase a channel, its deliveries and events; its URLs stop working"
    )
    _connection(delete)
    delete.add_argument("channel_id")
    delete.set_defaults(run=sync(channel_delete))

    watch = commands.add_parser("watch", help="follow a channel's events, live")
    _connection(watch)
    watch.add_argument("channel_id")
    watch.add_argument("--from", dest="after", type=int, help="replay events after this id")
    watch.set_defaults(run=sync(watch_channel))

    submit = commands.add_parser("submit", help="edit images through a provider, and wait")
    _connection(submit)
    submit.add_argument(
        "--provider",
        required=True,
        help="a provider, or several comma-separated to try in order (a,b): the task moves"
        " on only when one certainly did not bill it",
    )
    submit.add_argument("--prompt", required=True)
    submit.add_argument("--image", action="append", required=True, help="a file or URL")
    submit.add_argument("--size")
    submit.add_argument("--out", type=Path, default=Path("."), help="where to save images")
    submit.add_argument(
        "--idempotency-key",
        help="send this Idempotency-Key (default: a new one): the same key and inputs again"
        " within 24 h give the same task, not a new one",
    )
    submit.set_defaults(run=sync(submit_task))

    tasks = commands.add_parser("tasks", help="the key's tasks, newest first")
    _connection(tasks)
    tasks.set_defaults(run=sync(task_list))


# -- over HTTP -----------------------------------------------------------------------------


async def channel_create(args: argparse.Namespace, out: TextIO) -> int:
    import orjson

    async with client_for(args) as client:
        channel = await client.create_channel(args.label, args.ttl)
    out.write(orjson.dumps(channel, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def channel_list(args: argparse.Namespace, out: TextIO) -> int:
    async with client_for(args) as client:
        channels = await client.list_channels()
    for channel in channels:
        made = _when(channel.get("created_at"))
        expires = _when(channel.get("expires_at"))
        out.write(f"{channel['id']}  {made}  expires {expires}  {channel.get('label') or ''}\n")
    if not channels:
        out.write("no channels (make one with `hub channel create`)\n")
    return 0


async def channel_delete(args: argparse.Namespace, out: TextIO) -> int:
    async with client_for(args) as client:
        await client.delete_channel(args.channel_id)
    out.write(f"deleted {args.channel_id}\n")
    return 0


async def task_list(args: argparse.Namespace, out: TextIO) -> int:
    async with client_for(args) as client:
        tasks = await client.list_tasks()
    for task in tasks:
        made = _when(task.get("created_at"))
        cost = task.get("cost") or {}
        # What it was billed once it ended, what it is expected to cost while it runs.
        figure = (
            cost.get("billed_usd") if task["status"] not in ACTIVE else cost.get("estimated_usd")
        )
        shown = f"${figure:.4f}" if isinstance(figure, int | float) else "-"
        out.write(
            f"{task['id']}  {task['status']:<9}  {task['provider']:<10}  {shown:>9}  {made}\n"
        )
    if not tasks:
        out.write("no tasks (start one with `hub submit`)\n")
    return 0


def _when(timestamp: object) -> str:
    """An RFC 3339 timestamp to the minute, as the other listings show time."""
    text = str(timestamp or "")
    return text[:16].replace("T", " ") if text else "-"


async def watch_channel(args: argparse.Namespace, out: TextIO) -> int:
    async with client_for(args) as client:
        # Asked first: an unknown channel or an unreachable hub is said at once, where the
        # stream itself would keep reconnecting.
        await client.get_channel(args.channel_id)
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
    _check_images(args.image)
    options = {"size": args.size} if args.size else {}
    started = time.monotonic()
    async with client_for(args) as client:
        route = [name.strip() for name in args.provider.split(",") if name.strip()]
        task = await client.submit(
            route[0] if len(route) == 1 else route, args.prompt, args.image,
            idempotency_key=args.idempotency_key, **options,
        )  # fmt: skip
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


def _check_images(images: list[str]) -> None:
    """A local image that cannot be read is said before anything is sent."""
    for image in images:
        if image.startswith(("http://", "https://", "data:", "blob_")):
            continue
        path = Path(image)
        if not path.is_file():
            raise CommandError(f"cannot read image {image}: no such file")
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise CommandError(f"cannot read image {image}: {exc.strerror}") from None


async def _follow(client: AsyncClient, task_id: str, progress: _Progress) -> str:
    async for event in client.events(task_id=task_id):
        if event.type == "task.rerouted" and isinstance(event.data, dict):
            data = event.data
            progress.note(
                f"{data.get('from')} -> {data.get('to')} ({data.get('reason')}):"
                f" {_error_text(data.get('error'))}"
            )
            continue
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
