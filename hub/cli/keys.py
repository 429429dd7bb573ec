"""``hub keys``: API keys kept in the hub's store (made, listed, revoked), for every
replica to see."""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hub.cli.connect import CommandError, sync

if TYPE_CHECKING:
    from hub.config.settings import Settings
    from hub.store.base import Store


def add_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="API keys kept in the hub's store")
    keys.add_argument(
        "--data-dir", type=Path, help="the hub's data dir (HUB_DATA_DIR, default ./hub-data)"
    )
    key_commands = keys.add_subparsers(dest="action", required=True)
    key_create = key_commands.add_parser("create", help="a new key, shown once")
    key_create.add_argument("--label")
    key_create.set_defaults(run=sync(keys_create))
    key_commands.add_parser("list", help="every key made here").set_defaults(run=sync(keys_list))
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=sync(keys_revoke))


def _settings(args: argparse.Namespace) -> Settings:
    """The running hub's settings, refusing a store nobody named: run from elsewhere,
    ``hub keys`` would otherwise make a new, empty one there, which no hub reads."""
    from hub.config.settings import Settings

    settings = Settings.from_env()
    if args.data_dir is not None:
        settings = settings.replace(data_dir=args.data_dir)
        if not os.environ.get("HUB_DATABASE_URL"):
            settings = settings.replace(database_url="")  # recomputed from the data dir
        return settings
    named = os.environ.get("HUB_DATA_DIR") or os.environ.get("HUB_DATABASE_URL")
    if not named and not (settings.data_dir / "hub.db").exists():
        raise CommandError(
            f"no hub store in {settings.data_dir.resolve()}: run where the hub keeps its"
            " data, or name it with --data-dir or HUB_DATA_DIR (or HUB_DATABASE_URL)"
        )
    return settings


async def _open_store(settings: Settings) -> Store:
    from hub.store import open_store

    # NORMAL: this short-lived process must not touch the running server's durability mark
    # (the store's writer only keeps it under FULL).
    store = open_store(settings.replace(sqlite_synchronous="NORMAL"), lambda events: None)
    await store.open()
    return store


async def keys_create(args: argparse.Namespace, out: TextIO) -> int:
    from hub.access.keys import tenant
    from hub.store.base import ApiKey

    key = "hub_" + secrets.token_urlsafe(24)
    digest = hashlib.sha256(key.encode()).digest()
    record = ApiKey("key_" + secrets.token_hex(6), tenant(digest), digest, args.label, time.time())
    store = await _open_store(_settings(args))
    try:
        await store.add_api_key(record)
    finally:
        await store.close()
    out.write(f"{record.id}  {key}\n(the key is shown only now; the hub keeps its hash)\n")
    return 0


async def keys_list(args: argparse.Namespace, out: TextIO) -> int:
    store = await _open_store(_settings(args))
    try:
        keys = await store.list_api_keys()
    finally:
        await store.close()
    for key in keys:
        made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
        state = "revoked" if key.revoked_at is not None else "active"
        out.write(f"{key.id}  {state:<7}  {made}  {key.label or ''}\n")
    if not keys:
        out.write("no keys made with `hub keys create` (keys from HUB_API_KEYS are not listed)\n")
    return 0


async def keys_revoke(args: argparse.Namespace, out: TextIO) -> int:
    store = await _open_store(_settings(args))
    try:
        revoked = await store.revoke_api_key(args.key_id, time.time())
    finally:
        await store.close()
    if not revoked:
        out.write(f"no active key {args.key_id}\n")
        return 1
    out.write(f"revoked {args.key_id}\n")
    return 0
