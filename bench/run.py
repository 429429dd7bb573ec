"""Runs every row against every target it applies to, several rounds, then prints the table
of medians and ratios and writes the raw figures as JSON.

Started by ``scripts/bench``. It starts each server afresh for each measurement (see
``bench.servers``) and its load clients (wrk and ``bench.sse_client``), and stops each of
them by PID; SIGTERM stops the run and everything it started. With ``--postgres`` the hub
also runs as two replicas on a fresh PostgreSQL database per measurement (``bench.hub_pg``),
dropped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import databases, machine, report, rows
from bench.hub_pg import HubPostgres
from bench.rows import Plan
from bench.servers import PidFile
from bench.targets import Bare, Hub, Nchan, Target

QUICK = Plan(
    intake_seconds=4.0,
    fanout_seconds=4.0,
    latency_seconds=3.0,
    settle_seconds=0.5,
)

Measure = Callable[[Target, Plan], Awaitable[dict[str, Any]]]


async def _latency_100(target: Target, plan: Plan) -> dict[str, Any]:
    return await rows.latency(target, plan, 100)


async def _latency_1000(target: Target, plan: Plan) -> dict[str, Any]:
    return await rows.latency(target, plan, 1000)


# In this order within each round: the idle row last, as it leaves 10,000 streams to close.
# hub-pg takes part only with --postgres.
ROWS: tuple[tuple[str, Measure, tuple[str, ...]], ...] = (
    ("intake", rows.intake, ("hub", "hub-pg", "bare", "nchan")),
    ("fanout", rows.fanout, ("hub", "hub-pg", "nchan")),
    ("latency_100", _latency_100, ("hub", "hub-pg", "nchan")),
    ("latency_1000", _latency_1000, ("hub", "hub-pg", "nchan")),
    ("catch_up", rows.catch_up, ("hub", "nchan")),
    ("idle", rows.idle, ("hub", "nchan")),
)
SETTINGS = (
    "heartbeat_seconds", "subscriber_queue_size", "sqlite_synchronous", "send_timeout_seconds",
    "replay_page_size", "max_event_body_bytes", "rate_limit_per_key", "rate_limit_per_callback",
)  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True, help="a fresh tmp dir")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--command", default="scripts/bench", help="as shown in the output")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="also run hub-pg, its databases made and dropped through this one",
    )
    return parser.parse_args()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def hub_settings(hub: Hub) -> dict[str, str]:
    """The hub's settings that shape these figures, as the hub reads them from its env."""
    from hub.config.settings import Settings

    env = {**os.environ, **hub.launch(0).env}
    settings = Settings.from_env(env)
    keys = [k for k in SETTINGS if not (settings.postgres and k == "sqlite_synchronous")]
    shown = {f"HUB_{k.upper()}": str(getattr(settings, k)) for k in keys}
    callers = sorted(k for k in os.environ if k.startswith("HUB_"))
    shown["HUB_* from the caller"] = ", ".join(callers) or "none"
    return shown


def make_targets(workdir: Path, postgres: str | None) -> dict[str, Target]:
    hub_port, bare_port, nchan_port, pg_a, pg_b = free_ports(5)
    api_key = "bench-" + secrets.token_hex(8)
    targets: dict[str, Target] = {"hub": Hub(hub_port, workdir, api_key=api_key)}
    if postgres:
        targets["hub-pg"] = HubPostgres((pg_a, pg_b), workdir, api_key, postgres)
    targets["bare"] = Bare(bare_port, workdir)
    targets["nchan"] = Nchan(nchan_port, workdir)
    return targets


def headline(row: str, figures: dict[str, Any]) -> str:
    """One progress line per measurement."""
    keys = {
        "intake": ("requests_per_s",),
        "fanout": ("deliveries_per_s", "publishes_per_s", "disconnected"),
        "latency_100": ("p50_ms", "p99_ms", "delivered_share"),
        "latency_1000": ("p50_ms", "p99_ms", "delivered_share", "disconnected"),
        "catch_up": ("seconds", "received"),
        "idle": ("held", "kb_per_connection", "all_received_ms", "connect_seconds"),
    }[row]
    shown = [f"{k}={figures.get(k):,.3g}" if isinstance(figures.get(k), float)
             else f"{k}={figures.get(k)}" for k in keys]  # fmt: skip
    return " ".join([*shown, f"client_cpu_s={figures.get('client_cpu_s', 0):.2f}"])


async def run_rounds(
    args: argparse.Namespace, plan: Plan, by_name: dict[str, Target]
) -> report.Rounds:
    pids = PidFile(args.workdir / "pids")
    rounds: report.Rounds = []
    for number in range(args.rounds):
        print(f"round {number + 1}/{args.rounds}", flush=True)
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for row, measure, applies in ROWS:
            names = tuple(name for name in applies if name in by_name)
            # Rotate who goes first each round, so no target always runs first.
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                target = by_name[name]
                started = time.monotonic()
                async with target.fresh(pids):
                    processes = set(target.server.pids())
                    figures = await measure(target, plan)
                    if not target.server.alive():
                        raise SystemExit(f"bench: {name} died during {row}")
                    if set(target.server.pids()) != processes:
                        figures["server_processes_changed"] = True
                figures["elapsed_s"] = time.monotonic() - started
                if target.log_problems:
                    figures["server_log_problems"] = target.log_problems
                results.setdefault(row, {})[name] = figures
                print(f"  {row:<12} {name:<6} {headline(row, figures)} "
                      f"({figures['elapsed_s']:.0f}s)", flush=True)  # fmt: skip
                await asyncio.sleep(plan.settle_seconds)
        rounds.append(results)
    return rounds


async def main() -> None:
    args = parse_args()
    # SIGTERM (from scripts/bench's trap) cancels the run, so every load client is stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    plan = QUICK if args.quick else Plan()
    if args.quick:
        args.rounds = min(args.rounds, 2)
    started = datetime.now(UTC)
    clock = time.monotonic()
    box = machine.describe()
    by_name = make_targets(args.workdir, args.postgres)
    hub = by_name["hub"]
    assert isinstance(hub, Hub)
    settings = hub_settings(hub)
    print(f"machine: {machine.one_line(box)}")
    for target in by_name.values():
        print(f"{target.name}: {target.describe()}")
    print("hub settings (fresh data dir each start): "
          + ", ".join(f"{k}={v}" for k, v in settings.items()))  # fmt: skip
    pg_settings: dict[str, str] | None = None
    if args.postgres:
        pg_hub = by_name["hub-pg"]
        assert isinstance(pg_hub, HubPostgres)
        pg_settings = hub_settings(pg_hub)
        box["postgres"] = await databases.describe(args.postgres)
        print("hub-pg settings (2 replicas, same HUB_SECRET and HUB_API_KEYS, a fresh database "
              "each start): " + ", ".join(f"{k}={v}" for k, v in pg_settings.items()))  # fmt: skip
        print(f"postgres: {machine.postgres_line(box['postgres'])}")
    print(f"plan: {args.rounds} rounds, {dataclasses.asdict(plan)}", flush=True)
    rounds = await run_rounds(args, plan, by_name)
    table = report.table(rounds)
    notes = report.warnings(rounds)
    seconds = time.monotonic() - clock
    print()
    print(
        f"medians of {args.rounds} rounds; ratios are medians of per-round ratios; CPU is "
        "user+sys seconds (and % of one core over the measuring window), load clients = wrk, "
        "the subscriber process and the publishing harness"
    )
    print(table)
    for note in notes:
        print(f"note: {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "started_at": started.isoformat(timespec="seconds"),
                "command": args.command,
                "quick": args.quick,
                "rounds_run": args.rounds,
                "measure_seconds": seconds,
                "machine": box,
                "hub_settings": settings,
                "hub_pg_settings": pg_settings,
                "plan": dataclasses.asdict(plan),
                "summary": report.medians_json(rounds),
                "notes": notes,
                "rounds": rounds,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"raw figures: {args.out}")


def run() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


if __name__ == "__main__":
    try:
        run()
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("bench: stopped", file=sys.stderr)
        sys.exit(143)
