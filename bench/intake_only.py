"""The intake row alone, hub against bare (and hub-pg with ``--postgres``), alternating, as
same-invocation ratios: for measuring one change to the intake path quickly.

    .venv/bin/python -m bench.intake_only --rounds 3 --seconds 4 [--postgres URL]
        [--baseline CHECKOUT]  (a checkout of another commit with its own .venv)

HUB_* variables set by the caller reach the hub (e.g. HUB_SQLITE_SYNCHRONOUS=FULL).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import statistics
import tempfile
from pathlib import Path

from bench import rows, servers
from bench.hub_pg import HubPostgres
from bench.run import free_ports
from bench.servers import PidFile
from bench.targets import Bare, Baseline, Hub, Target


class BaselinePostgres(HubPostgres):
    """The other checkout's hub as two replicas on PostgreSQL (with --baseline)."""

    name = "baseline-pg"

    def __init__(self, ports: tuple[int, int], workdir: Path, api_key: str, admin_url: str,
                 checkout: Path) -> None:  # fmt: skip
        super().__init__(ports, workdir, api_key, admin_url)
        self.bin_dir = checkout / ".venv" / "bin"

    def hub_launch(
        self, port: int, data_dir: Path, log: str, env: dict[str, str]
    ) -> servers.Launch:
        # Its own code only: a PYTHONPATH naming this checkout would shadow the commit's.
        return super().hub_launch(port, data_dir, f"baseline-{log}", {**env, "PYTHONPATH": ""})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="also two hub replicas on it")
    parser.add_argument(
        "--baseline", type=Path, metavar="CHECKOUT", help="also the hub of another checkout"
    )
    args = parser.parse_args()
    plan = dataclasses.replace(rows.Plan(), intake_seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="hub-intake-") as tmp:
        workdir = Path(tmp)
        hub_port, bare_port, pg_a, pg_b, base_port, base_a, base_b = free_ports(7)
        key = "bench-" + secrets.token_hex(8)
        targets: dict[str, Target] = {
            "hub": Hub(hub_port, workdir, api_key=key),
            "bare": Bare(bare_port, workdir),
        }
        if args.baseline:
            targets["baseline"] = Baseline(base_port, workdir, key, args.baseline, "?")
        if args.postgres:
            targets["hub-pg"] = HubPostgres((pg_a, pg_b), workdir, key, args.postgres)
            if args.baseline:
                targets["baseline-pg"] = BaselinePostgres(
                    (base_a, base_b), workdir, key, args.postgres, args.baseline
                )
        pids = PidFile(workdir / "pids")
        rates: dict[str, list[float]] = {name: [] for name in targets}
        ratios: dict[str, list[float]] = {name: [] for name in targets if name != "bare"}
        for number in range(args.rounds):
            names = list(targets)
            names = names[number % len(names) :] + names[: number % len(names)]
            got: dict[str, float] = {}
            for name in names:
                target = targets[name]
                async with target.fresh(pids):
                    figures = await rows.intake(target, plan)
                got[name] = figures["requests_per_s"]
                errors = figures["errors"]
                cpu = figures.get("server_cpu_s", 0.0)
                per = cpu / max(1, figures["requests"]) * 1e6
                print(f"round {number + 1} {name:<6} {got[name]:8,.0f}/s errors={errors}"
                      f" server_cpu={cpu:.2f}s ({per:.0f} us per callback)"
                      f" p50={figures['latency_p50_ms']:.1f}ms", flush=True)  # fmt: skip
                await asyncio.sleep(0.5)
            for name, rate in got.items():
                rates[name].append(rate)
                if name != "bare":
                    ratios[name].append(rate / got["bare"])
        for name in targets:
            print(f"{name:<6} median {statistics.median(rates[name]):8,.0f}/s", end="")
            if name != "bare":
                print(f"  {name}/bare median {statistics.median(ratios[name]):.2f}", end="")
                print(f" (rounds: {', '.join(f'{r:.2f}' for r in ratios[name])})", end="")
            print()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
