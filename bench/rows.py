"""One function per row of the table: each measures one target once and returns its figures
(plain numbers, for the JSON file), including the load clients' and the server's CPU time
(and its database server's, for the hub on PostgreSQL)."""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench import publisher, wrk
from bench.procstat import machine_busy_seconds
from bench.sse_client import ClientConfig
from bench.subscribers import Subscribers, subscribed
from bench.targets import Channel, Target
from bench.wrk import WrkResult

Figures = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run (``--quick`` shortens them)."""

    intake_seconds: float = 10.0
    fanout_seconds: float = 10.0
    fanout_subscribers: int = 100
    latency_rate: float = 200.0
    latency_seconds: float = 5.0
    latency_body_bytes: int = 256
    idle_connections: int = 10_000
    catch_up_events: int = 10_000
    body_bytes: int = 1024
    wrk_threads: int = 2
    wrk_connections: int = 50
    settle_seconds: float = 1.0
    # A server whose RSS grows by more than this during the fan-out row is buffering what its
    # subscribers cannot take: wrk is stopped there. (Nchan can: in a trial run one of its
    # workers grew to 23 GB and was OOM-killed, and the restarted workers crashed in a loop.)
    fanout_rss_guard_kb: int = 2 * 1024 * 1024


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuMark:
    parts: dict[str, float]
    database: float | None
    machine: float


def cpu_mark(target: Target) -> CpuMark:
    return CpuMark(target.server.cpu_by_part(), target.db_cpu_seconds(), machine_busy_seconds())


def cpu_since(target: Target, mark: CpuMark) -> Figures:
    """The server's (each replica's too, if several), its database's and the whole machine's
    CPU seconds since ``mark``."""
    parts = {name: cpu - mark.parts[name] for name, cpu in target.server.cpu_by_part().items()}
    figures: Figures = {
        "server_cpu_s": sum(parts.values()),
        "machine_cpu_s": machine_busy_seconds() - mark.machine,
    }
    if len(parts) > 1:
        figures["server_cpu_by_part_s"] = parts
    database = target.db_cpu_seconds()
    if database is not None and mark.database is not None:
        figures["db_cpu_s"] = database - mark.database
    return figures


def client_config(target: Target, channel: Channel, count: int, **options: Any) -> ClientConfig:
    return ClientConfig(
        host=target.host,
        port=target.subscribe_port,
        path=channel.stream_path,
        headers=channel.stream_headers | options.pop("headers", {}),
        connections=count,
        **options,
    )


# Connections from one source address to one server address and port: the kernel's
# ephemeral port range (32768-60999 by default) is shared by them, so keep well inside it.
PER_SOURCE = 20_000


def source_addresses(host: str, count: int) -> list[str]:
    """Loopback source addresses to spread ``count`` connections over, or none (the
    kernel's choice) when one address is enough or the server is not on 127.0.0.0/8."""
    if count <= PER_SOURCE or not host.startswith("127."):
        return []
    return [f"127.0.0.{n}" for n in range(2, 2 + -(-count // PER_SOURCE))]


def ready_figures(subscribers: Subscribers, wanted: int) -> Figures:
    ready = subscribers.ready
    if ready["connected"] != wanted:
        print(f"    ! {ready['connected']}/{wanted} subscribed; errors: {ready['errors']}")
    return {"subscribed": ready["connected"], "connect_seconds": ready["connect_seconds"]}


async def intake(target: Target, plan: Plan) -> Figures:
    """Callbacks/s: wrk -t2 -c50 POSTing unique 1 KB JSON bodies, nobody subscribed.

    A target with several entry points (the hub's replicas) gets one wrk per entry point
    at once, each with its share of the threads and connections; rates, requests, errors
    and CPU are summed. wrk reports percentiles, not histograms, so the latencies shown are
    the highest of the processes' (the combined p50 and p99 are no higher than that); each
    one's figures are kept under ``by_entry``."""
    channel = await target.new_channel()
    urls = target.publish_urls(channel.publish_path)
    mark = cpu_mark(target)
    async with asyncio.TaskGroup() as group:  # one wrk failing stops the others
        runs = [
            group.create_task(
                wrk.post(
                    url,
                    plan.intake_seconds,
                    threads=max(1, plan.wrk_threads // len(urls)),
                    connections=plan.wrk_connections // len(urls),
                    size=plan.body_bytes,
                )
            )
            for url in urls
        ]
    cpu = cpu_since(target, mark)
    results: list[WrkResult] = [run.result() for run in runs]
    errors: dict[str, int] = {}
    for result in results:
        for kind, count in result.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    figures = {
        "requests_per_s": sum(r.rate for r in results),
        "requests": sum(r.requests for r in results),
        "errors": errors,
        "latency_p50_ms": max(r.latency_p50_ms for r in results),
        "latency_p99_ms": max(r.latency_p99_ms for r in results),
        "window_seconds": max(r.seconds for r in results),
        "client_cpu_s": sum(r.cpu_seconds for r in results),
        **cpu,
    }
    if len(results) > 1:
        figures["by_entry"] = [
            {"port": urlsplit(url).port, "requests_per_s": r.rate, "errors": r.errors,
             "latency_p50_ms": r.latency_p50_ms, "latency_p99_ms": r.latency_p99_ms,
             "client_cpu_s": r.cpu_seconds}
            for url, r in zip(urls, results, strict=True)
        ]  # fmt: skip
    return figures


async def fanout(target: Target, plan: Plan) -> Figures:
    """Deliveries/s: the intake load while ``fanout_subscribers`` streams count frames; only
    frames received between the two marks around the wrk run count."""
    channel = await target.new_channel()
    config = client_config(target, channel, plan.fanout_subscribers, mode="count")
    async with subscribed(config) as subscribers:
        figures = ready_figures(subscribers, plan.fanout_subscribers)
        rss_before = target.server.rss_kb()
        rss_peak = rss_before

        def buffering_too_much() -> bool:
            nonlocal rss_peak
            rss_peak = max(rss_peak, target.server.rss_kb())
            return rss_peak - rss_before > plan.fanout_rss_guard_kb

        mark = cpu_mark(target)
        before = await subscribers.mark()
        result = await wrk.post(
            target.url(channel.publish_path),
            plan.fanout_seconds,
            threads=plan.wrk_threads,
            connections=plan.wrk_connections,
            size=plan.body_bytes,
            stop_when=buffering_too_much,
        )
        after = await subscribers.mark()
        cpu = cpu_since(target, mark)
        await asyncio.sleep(plan.settle_seconds)  # what was still in flight
        final = await subscribers.stop()
    window = (after["t_ns"] - before["t_ns"]) / 1e9
    expected = result.requests * figures["subscribed"]
    return figures | {
        "deliveries_per_s": (after["frames"] - before["frames"]) / window,
        "publishes_per_s": result.rate,
        "window_seconds": window,
        "delivered_share": final["frames"] / expected if expected else 0.0,
        "disconnected": final["closed_by_server"],
        "publish_errors": result.error_count,
        "publish_p99_ms": result.latency_p99_ms,
        "client_cpu_s": result.cpu_seconds + after["cpu_seconds"] - before["cpu_seconds"],
        "wrk_cpu_s": result.cpu_seconds,
        "subscriber_cpu_s": after["cpu_seconds"] - before["cpu_seconds"],
        **cpu,
        "rss_growth_kb": rss_peak - rss_before,
        "stopped_early": result.stopped_early,
    }


async def latency(target: Target, plan: Plan, subscriber_count: int) -> Figures:
    """Callback POST to SSE receipt: stamped POSTs at ``latency_rate``/s, p50/p99 of receipt
    minus send time over every frame at every subscriber."""
    channel = await target.new_channel()
    events = round(plan.latency_rate * plan.latency_seconds)
    config = client_config(target, channel, subscriber_count, mode="latency", target_frames=events)
    async with subscribed(config) as subscribers:
        figures = ready_figures(subscribers, subscriber_count)
        pool = target.pool()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            mark, publisher_cpu = cpu_mark(target), own_cpu()
            before = await subscribers.mark()
            sent = await publisher.steady(
                pool, channel.publish_path, channel.publish_headers,
                plan.latency_rate, events, plan.latency_body_bytes,
            )  # fmt: skip
            reached = await subscribers.wait(10.0)
            cpu = cpu_since(target, mark)
            publisher_cpu = own_cpu() - publisher_cpu
            window = loop.time() - started
        finally:
            await pool.close()
        final = await subscribers.stop()
    found = final["latency"]
    expected = events * figures["subscribed"]
    subscriber_cpu = reached["cpu_seconds"] - before["cpu_seconds"]
    return figures | {
        "p50_ms": found.get("p50_ms"),
        "p99_ms": found.get("p99_ms"),
        "max_ms": found.get("max_ms"),
        "samples": found["count"],
        "delivered_share": found["count"] / expected if expected else 0.0,
        "disconnected": final["closed_by_server"],
        "sent_per_s": sent.rate,
        "post_reply_p50_ms": sent.reply_p50_ms,
        "post_reply_p99_ms": sent.reply_p99_ms,
        "publish_errors": sent.failed,
        "schedule_behind_max_ms": sent.max_behind_ms,
        "window_seconds": window,
        "client_cpu_s": subscriber_cpu + publisher_cpu,
        "subscriber_cpu_s": subscriber_cpu,
        "publisher_cpu_s": publisher_cpu,
        **cpu,
    }


async def idle(target: Target, plan: Plan) -> Figures:
    """``idle_connections`` streams held on one channel: the server's RSS growth per
    connection, then one stamped event and the time until the last stream has it."""
    channel = await target.new_channel()
    await asyncio.sleep(plan.settle_seconds)
    rss_before = target.server.rss_kb()
    cpu = target.server.cpu_seconds()
    count = plan.idle_connections
    config = client_config(
        target, channel, count, mode="latency", target_frames=1, connect_concurrency=250,
        sources=source_addresses(target.host, count),
    )  # fmt: skip
    async with subscribed(config) as subscribers:
        figures = ready_figures(subscribers, count)
        await asyncio.sleep(plan.settle_seconds)
        rss_after = target.server.rss_kb()
        pool = target.pool()
        try:
            status = await publisher.one(
                pool, channel.publish_path, channel.publish_headers, plan.latency_body_bytes
            )
        finally:
            await pool.close()
        reached = await subscribers.wait(10.0)
        final = await subscribers.stop()
    subscribed_count = figures["subscribed"]
    found = final["latency"]
    return figures | {
        "wanted": count,
        "sources": len(config.sources) or 1,
        "held": reached["open"],
        "received": reached["reached"],
        "disconnected": final["closed_by_server"],
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "kb_per_connection": (rss_after - rss_before) / subscribed_count
        if subscribed_count
        else None,
        "publish_status": status,
        "all_received_ms": found.get("max_ms"),
        "p50_ms": found.get("p50_ms"),
        "client_cpu_s": final["cpu_seconds"],
        "client_max_rss_kb": final["max_rss_kb"],
        "server_cpu_s": target.server.cpu_seconds() - cpu,
    }


async def catch_up(target: Target, plan: Plan) -> Figures:
    """A subscriber ``catch_up_events`` behind: time from its connect to its last frame."""
    channel = await target.new_channel()
    headers = await target.replay_from_here(channel)
    pool = target.pool()
    try:
        sent = await publisher.burst(
            pool, channel.publish_path, channel.publish_headers,
            plan.catch_up_events, plan.body_bytes, concurrency=32,
        )  # fmt: skip
    finally:
        await pool.close()
    cpu = target.server.cpu_seconds()
    config = client_config(
        target, channel, 1, headers=headers, mode="count", target_frames=plan.catch_up_events
    )
    async with subscribed(config) as subscribers:
        reached = await subscribers.wait(30.0)
        final = await subscribers.stop()
    complete = reached["reached"] == 1
    return {
        "seconds": (final["last_reach_ns"] - final["connect_start_ns"]) / 1e9 if complete else None,
        "received": final["frames"],
        "complete": complete,
        "published_per_s": sent.rate,
        "publish_errors": sent.failed,
        "client_cpu_s": final["cpu_seconds"],
        "server_cpu_s": target.server.cpu_seconds() - cpu,
    }
