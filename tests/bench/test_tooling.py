"""The bench's own pieces: arguments, plans, the report's goals, source addresses."""

import asyncio
import contextlib
from pathlib import Path

import pytest

from bench import report, rows, run
from bench.sse_client import Client, ClientConfig
from bench.targets import Nchan
from tests.helpers import until


def test_arguments_and_plans(tmp_path: Path) -> None:
    checkout = tmp_path / "base"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "hub").touch()
    common = ["--workdir", str(tmp_path), "--out", str(tmp_path / "o.json")]
    args = run.parse_args([*common, "--smoke", "--baseline", str(checkout), "--idle", "50000"])
    plan = run.plan_of(args)
    assert plan.idle_connections == 50_000 and plan.intake_seconds == run.SMOKE.intake_seconds
    targets = run.make_targets(args, plan)
    assert list(targets) == ["hub", "baseline", "bare", "nchan"]
    assert targets["baseline"].launch(1).argv[0] == str(checkout / ".venv" / "bin" / "hub")
    assert run.plan_of(run.parse_args(common)).idle_connections == 10_000
    with pytest.raises(SystemExit):
        run.parse_args([*common, "--baseline", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit):
        run.parse_args([*common, "--quick", "--smoke"])


def test_nchan_limits_follow_the_idle_row(tmp_path: Path) -> None:
    conf = Nchan(8080, tmp_path, connections=50_000).launch(1)
    text = Path(conf.argv[conf.argv.index("-c") + 1]).read_text()
    assert "worker_connections 51000;" in text and "worker_rlimit_nofile 55000;" in text
    assert "@" not in text.replace("@PREFIX@", "")


def test_source_addresses() -> None:
    assert rows.source_addresses("127.0.0.1", 10_000) == []
    assert rows.source_addresses("127.0.0.1", 50_000) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert rows.source_addresses("10.0.0.1", 50_000) == []


def _round(**figures: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    return figures


def test_goals_are_judged_on_same_run_ratios() -> None:
    rounds = [
        _round(
            latency_100={
                "hub": {"p50_ms": 2.0, "p99_ms": 3.0, "server_cpu_s": 1.0},
                "nchan": {"p50_ms": 1.0, "p99_ms": 2.0, "server_cpu_s": 1.0},
            },
            latency_1000={"hub": {"p99_ms": 10.0}, "baseline": {"p99_ms": 100.0}},
            intake={"hub": {"requests_per_s": 6000.0}, "bare": {"requests_per_s": 5000.0}},
            idle={
                "hub": {
                    "held": 10_000,
                    "wanted": 10_000,
                    "kb_per_connection": 9.0,
                    "all_received_ms": 300.0,
                },
                "nchan": {"kb_per_connection": 10.0},
            },
        )
    ]
    judged = {e["goal"].text: (e["measured"], e["met"]) for e in report.judge(rounds)}
    assert judged["latency @200/s, 100 subscribers: p50 <= 1.5 x Nchan's"] == (2.0, False)
    assert judged["latency @200/s, 100 subscribers: p99 <= 2 x Nchan's"] == (1.5, True)
    assert judged["latency @200/s, 1,000 subscribers: p99 <= 0.15 x the baseline's"] == (
        0.1,
        True,
    )
    assert judged["durable intake, 1 KB unique bodies: SQLite >= 1.0 x bare"] == (1.2, True)
    # Not run: not judged.
    assert (
        judged["durable intake, 1 KB unique bodies: two replicas on PostgreSQL >= 0.8 x bare"][1]
        is None
    )
    # 10,000 opened: the 50,000 goal is not judged from it.
    assert judged["idle streams: 50,000 held by one process"][1] is None
    text = report.goals_table(rounds)
    assert "needs --postgres" in text and "needs --idle 50000" in text
    assert "baseline" in report.table(rounds)


async def test_the_client_binds_its_source_addresses() -> None:
    seen: list[str] = []
    served: list[asyncio.Future[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.get_running_loop().create_future()
        served.append(done)
        seen.append(writer.get_extra_info("peername")[0])
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nretry: 1\n\n")
            await writer.drain()
            await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            done.set_result(None)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(ClientConfig("127.0.0.1", port, "/", {}, 4, sources=["127.0.0.2", "127.0.0.3"]))
    async with server:
        await client.open_all()
        assert len(client.connections) == 4, client.failures
        client.close_all()
        await until(lambda: len(served) == 4)
        await asyncio.gather(*served)
    assert sorted(seen) == ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]
