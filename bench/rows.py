"""One function per row of the table: each measures one target once and returns its figures
(plain numbers, for the JSON file), including the load clients' and the server's CPU time."""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any

from bench import publisher, wrk
from bench.procstat import machine_busy_seconds
from bench.sse_client import ClientConfig
from bench.subscribers import Subscribers, subscribed
from bench.targets import Channel, Target

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


def client_config(target: Target, channel: Channel, count: int, **options: Any) -> ClientConfig:
    return ClientConfig(
        host=target.host,
        port=target.port,
        path=channel.stream_path,
        headers=channel.stream_headers | options.pop("headers", {}),
        connections=count,
        **options,
    )


def ready_figures(subscribers: Subscribers, wanted: int) -> Figures:
    ready = subscribers.ready
    if ready["connected"] != wanted:
        print(f"    ! {ready['connected']}/{wanted} subscribed; errors: {ready['errors']}")
    return {"subscribed": ready["connected"], "connect_seconds": ready["connect_seconds"]}


async def intake(target: Target, plan: Plan) -> Figures:
    """Callbacks/s: wrk -t2 -c50 POSTing unique 1 KB JSON bodies, nobody subscribed."""
    channel = await target.new_channel()
    cpu, machine = target.server.cpu_seconds(), machine_busy_seconds()
    result = await wrk.post(
        target.url(channel.publish_path),
        plan.intake_seconds,
        threads=plan.wrk_threads,
        connections=plan.wrk_connections,
        size=plan.body_bytes,
    )
    return {
        "requests_per_s": result.rate,
        "requests": result.requests,
        "errors": result.errors,
        "latency_p50_ms": result.latency_p50_ms,
        "latency_p99_ms": result.latency_p99_ms,
        "window_seconds": result.seconds,
        "client_cpu_s": result.cpu_seconds,
        "server_cpu_s": target.server.cpu_seconds() - cpu,
        "machine_cpu_s": machine_busy_seconds() - machine,
    }


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

        cpu, machine = target.server.cpu_seconds(), machine_busy_seconds()
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
        server_cpu = target.server.cpu_seconds() - cpu
        machine_cpu = machine_busy_seconds() - machine
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
        "server_cpu_s": server_cpu,
        "machine_cpu_s": machine_cpu,
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
            cpu, publisher_cpu = target.server.cpu_seconds(), own_cpu()
            machine = machine_busy_seconds()
            before = await subscribers.mark()
            sent = await publisher.steady(
                pool, channel.publish_path, channel.publish_headers,
                plan.latency_rate, events, plan.latency_body_bytes,
            )  # fmt: skip
            reached = await subscribers.wait(10.0)
            server_cpu = target.server.cpu_seconds() - cpu
            publisher_cpu = own_cpu() - publisher_cpu
            machine_cpu = machine_busy_seconds() - machine
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
        "server_cpu_s": server_cpu,
        "machine_cpu_s": machine_cpu,
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
        target, channel, count, mode="latency", target_frames=1, connect_concurrency=250
    )
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
