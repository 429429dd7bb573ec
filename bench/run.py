"""Runs every row against every target it applies to, several rounds, then prints the table
of medians and ratios and writes the raw figures as JSON.

Started by ``scripts/bench``. With ``--baseline CHECKOUT`` the hub of another commit (its
worktree and ``.venv``, made by scripts/bench) is one more target, "baseline".

It starts each server afresh for each measurement (see ``bench.servers``) and its load
clients (wrk and ``bench.sse_client``), and stops each of them by PID; SIGTERM stops the run
and everything it started. With ``--postgres`` the hub also runs as two replicas on a fresh
PostgreSQL database per measurement (``bench.hub_pg``), dropped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
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
from bench.targets import Bare, Baseline, Hub, Nchan, Target

QUICK = Plan(
    intake_seconds=4.0,
    fanout_seconds=4.0,
    latency_seconds=3.0,
    settle_seconds=0.5,
)

# Checks the tooling end to end in about a minute; its figures mean nothing.
SMOKE = Plan(
    intake_seconds=1.0,
    fanout_seconds=1.0,
    latency_seconds=1.0,
    settle_seconds=0.2,
    idle_connections=300,
    catch_up_events=500,
)

Measure = Callable[[Target, Plan], Awaitable[dict[str, Any]]]


async def _latency_100(target: Target, plan: Plan) -> dict[str, Any]:
    return await rows.latency(target, plan, 100)


async def _latency_1000(target: Target, plan: Plan) -> dict[str, Any]:
    return await rows.latency(target, plan, 1000)


# In this order within each round: the idle row last, as it leaves 10,000 streams to close.
# hub-pg takes part only with --postgres, baseline only with --baseline.
ROWS: tuple[tuple[str, Measure, tuple[str, ...]], ...] = (
    ("intake", rows.intake, ("hub", "baseline", "hub-pg", "bare", "nchan")),
    ("fanout", rows.fanout, ("hub", "baseline", "hub-pg", "nchan")),
    ("latency_100", _latency_100, ("hub", "baseline", "hub-pg", "nchan")),
    ("latency_1000", _latency_1000, ("hub", "baseline", "hub-pg", "nchan")),
    ("catch_up", rows.catch_up, ("hub", "baseline", "nchan")),
    ("idle", rows.idle, ("hub", "baseline", "nchan")),
)
SETTINGS = (
    "heartbeat_seconds", "subscriber_queue_size", "sqlite_synchronous", "send_timeout_seconds",
    "replay_page_size", "max_event_body_bytes", "rate_limit_per_key", "rate_limit_per_callback",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True, help="a fresh tmp dir")
    parser.add_argument("--rounds", type=int, default=3)
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="2 rounds of shorter runs")
    speed.add_argument("--smoke", action="store_true", help="1 round of tiny runs (tooling)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--command", default="scripts/bench", help="as shown in the output")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="also run hub-pg, its databases made and dropped through this one",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also run 'baseline': the hub of this checkout (with its own .venv)",
    )
    parser.add_argument("--baseline-rev", default="?", help="its commit, as shown")
    parser.add_argument("--idle", type=int, help="idle streams to open (default: the plan's)")
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / ".venv" / "bin" / "hub").exists():
        parser.error(f"--baseline {args.baseline}: no .venv/bin/hub there")
    if args.idle is not None and args.idle < 1:
        parser.error("--idle must be at least 1")
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    plan = SMOKE if args.smoke else QUICK if args.quick else Plan()
    if args.idle is not None:
        plan = dataclasses.replace(plan, idle_connections=args.idle)
    return plan


# Below the kernel's ephemeral range (32768-60999 here): a port picked inside it can be
# taken, between two fresh starts, as the local port of one of the idle row's client
# connections (seen with --idle 16000: the next server's bind failed, "address in use").
SERVER_PORTS = range(20_000, 32_768)


def free_ports(count: int) -> list[int]:
    picker = random.Random()
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", picker.choice(SERVER_PORTS)))
            except OSError:
                s.close()
                continue
            sockets.append(s)
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


def make_targets(args: argparse.Namespace, plan: Plan) -> dict[str, Target]:
    workdir = args.workdir
    hub_port, base_port, bare_port, nchan_port, pg_a, pg_b = free_ports(6)
    api_key = "bench-" + secrets.token_hex(8)
    targets: dict[str, Target] = {"hub": Hub(hub_port, workdir, api_key=api_key)}
    if args.baseline is not None:
        targets["baseline"] = Baseline(
            base_port, workdir, api_key, args.baseline, args.baseline_rev
        )
    if args.postgres:
        targets["hub-pg"] = HubPostgres((pg_a, pg_b), workdir, api_key, args.postgres)
    targets["bare"] = Bare(bare_port, workdir)
    targets["nchan"] = Nchan(nchan_port, workdir, plan.idle_connections)
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
    plan = plan_of(args)
    if args.quick:
        args.rounds = min(args.rounds, 2)
    if args.smoke:
        args.rounds = 1
    started = datetime.now(UTC)
    clock = time.monotonic()
    box = machine.describe()
    by_name = make_targets(args, plan)
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
    goals = report.goals_table(rounds)
    notes = report.warnings(rounds)
    seconds = time.monotonic() - clock
    print()
    print(
        f"medians of {args.rounds} rounds; ratios are medians of per-round ratios; CPU is "
        "user+sys seconds (and % of one core over the measuring window), load clients = wrk, "
        "the subscriber process and the publishing harness"
    )
    print(table)
    print()
    print("issue 16's goals, on this run's figures:")
    print(goals)
    if args.smoke:
        print("(--smoke: tiny runs that check the tooling; these figures mean nothing)")
    for note in notes:
        print(f"note: {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "started_at": started.isoformat(timespec="seconds"),
                "command": args.command,
                "quick": args.quick,
                "smoke": args.smoke,
                "baseline": {"rev": args.baseline_rev, "checkout": str(args.baseline)}
                if args.baseline is not None
                else None,
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
                "goals_table": goals,
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
