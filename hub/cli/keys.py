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
    key_create.add_argument("--budget-usd", type=_budget, help="monthly budget in USD")
    key_create.set_defaults(run=sync(keys_create))
    update = key_commands.add_parser("update", help="change a key's monthly budget")
    update.add_argument("key_id")
    update.add_argument("--budget-usd", type=_budget, required=True, help="USD a month; 0: none")
    update.set_defaults(run=sync(keys_update))
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
        if args.budget_usd:
            await store.set_budget(record.id, args.budget_usd)
    finally:
        await store.close()
    out.write(f"{record.id}  {key}\n(the key is shown only now; the hub keeps its hash)\n")
    return 0


async def keys_update(args: argparse.Namespace, out: TextIO) -> int:
    from hub.config.settings import Settings

    store = await _open_store(Settings.from_env())
    try:
        done = await store.set_budget(args.key_id, args.budget_usd or None)
    finally:
        await store.close()
    if not done:
        out.write(f"no key {args.key_id}\n")
        return 1
    shown = f"${args.budget_usd / 1e6:.2f} a month" if args.budget_usd else "no budget"
    out.write(f"{args.key_id}: {shown}\n")
    return 0


def _budget(text: str) -> int:
    """A budget in USD as micro-dollars; argparse's error if it is not one."""
    try:
        dollars = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not (0 <= dollars < 1e9):
        raise argparse.ArgumentTypeError(f"must be from 0 to 1e9 USD: {text!r}")
    return round(dollars * 1_000_000)


async def keys_list(args: argparse.Namespace, out: TextIO) -> int:
    store = await _open_store(_settings(args))
    try:
        keys = await store.list_api_keys()
        budgets = {key.id: await store.budget(key.owner) for key in keys}
    finally:
        await store.close()
    for key in keys:
        made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
        state = "revoked" if key.revoked_at is not None else "active"
        micros = budgets[key.id]
        budget = "no budget" if micros is None else f"${micros / 1e6:.2f}/month"
        line = f"{key.id}  {state:<7}  {made}  {budget:<14}  {key.label or ''}"
        out.write(line.rstrip() + "\n")
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
