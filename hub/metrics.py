"""Prometheus metrics, one registry per hub (two apps in one process share nothing).

Counters and histograms are updated where things happen; gauges that describe state
(subscribers, tasks by state) are read when Prometheus scrapes, so nothing has to keep
them in step. With replicas, each reports its own traffic; ``hub_tasks`` is read from the
shared store, so it is the same on every replica.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: a provider answers a submit or a poll in milliseconds (async) to a minute (sync).
PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, float("inf"))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.callbacks = Counter(
            "hub_callbacks_received",
            "Callbacks received on signed URLs, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        # Bound once: the callback path counts every request.
        self.stored = self.callbacks.labels("stored")
        self.duplicate = self.callbacks.labels("duplicate")
        # Refused by a channel's verifier (also counted as 401 above).
        self.signatures = Counter(
            "hub_callback_signatures_rejected",
            "Channel deliveries refused because their signature did not check, by scheme.",
            ["scheme"],
            registry=self.registry,
        )
        self.events = Counter(
            "hub_events_published",
            "Events published to this replica's streams, by type.",
            ["type"],
            registry=self.registry,
        )
        self.provider_seconds = Histogram(
            "hub_provider_request_seconds",
            "Time for one call to a provider, by provider, call and outcome.",
            ["provider", "call", "outcome"],
            buckets=PROVIDER_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "hub_webhook_deliveries",
            "Outbound webhook attempts, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._state = _State()
        self.registry.register(self._state)

    def published(self, types: Iterable[str]) -> None:
        """Count a batch of published events (once per type, not once per event: this is on
        the path of every callback)."""
        for type_, count in collections.Counter(types).items():
            self.events.labels(type_).inc(count)

    def watch(
        self,
        subscribers: Callable[[], int],
        task_counts: Callable[[], dict[tuple[str, str], int]],
    ) -> None:
        """Where the scrape-time gauges read from."""
        self._state.subscribers = subscribers
        self._state.task_counts = task_counts

    def watch_spend(self, spend: Callable[[], dict[str, float]]) -> None:
        """Where ``hub_spend_usd_total`` reads from: USD billed by provider, from the store
        (so the same on every replica)."""
        self._state.spend = spend

    async def render(self, refresh: Callable[[], Awaitable[None]]) -> bytes:
        """The exposition text; ``refresh`` first updates what the gauges read."""
        await refresh()
        return generate_latest(self.registry)


class _State(Collector):
    def __init__(self) -> None:
        self.subscribers: Callable[[], int] = lambda: 0
        self.task_counts: Callable[[], dict[tuple[str, str], int]] = dict
        self.spend: Callable[[], dict[str, float]] = dict

    def collect(self) -> Iterable[Metric]:
        streams = GaugeMetricFamily("hub_subscribers", "SSE streams open on this replica.")
        streams.add_metric([], self.subscribers())
        yield streams
        tasks = GaugeMetricFamily(
            "hub_tasks",
            "Tasks in the store, by provider and status.",
            labels=["provider", "status"],
        )
        for (provider, status), count in sorted(self.task_counts().items()):
            tasks.add_metric([provider, status], count)
        yield tasks
        spend = CounterMetricFamily(
            "hub_spend_usd", "USD billed for tasks, by provider.", labels=["provider"]
        )
        for provider, dollars in sorted(self.spend().items()):
            spend.add_metric([provider], dollars)
        yield spend
