"""Prometheus metrics, on a registry owned by the app (no process-global state).

Label values are bounded: route templates, providers, ops, decisions, dependency and cache
names — never keys, tokens, user names or bucket names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.cache import AsyncCache
from app.tracing import Tracing

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _StatsCollector(Collector):
    """Reads cache and dependency counters at scrape time, so the hot path pays nothing."""

    def __init__(self) -> None:
        self.caches: list[AsyncCache[Any, Any]] = []
        self.counters: dict[
            str, tuple[str, list[str], Callable[[], dict[tuple[str, ...], float]]]
        ] = {}

    def collect(self) -> Iterator[Any]:
        fields = {
            "hits": "Cache hits",
            "misses": "Cache misses",
            "loads": "Loads started on a miss (single flight: one per key)",
            "load_errors": "Loads that failed",
            "stale_served": "Stale values served because a refresh failed (grace period)",
            "evictions": "Entries evicted by the LRU bound",
        }
        for field, text in fields.items():
            family = CounterMetricFamily(f"bucket_registry_cache_{field}", text, labels=["cache"])
            for cache in self.caches:
                family.add_metric([cache.name], getattr(cache.stats, field))
            yield family
        size = GaugeMetricFamily("bucket_registry_cache_size", "Entries cached", labels=["cache"])
        for cache in self.caches:
            size.add_metric([cache.name], len(cache))
        yield size
        for name, (text, labels, read) in self.counters.items():
            family = CounterMetricFamily(f"bucket_registry_{name}", text, labels=labels)
            for values, count in read().items():
                family.add_metric(list(values), count)
            yield family


class Metrics:
    def __init__(self, tracing: Tracing | None = None) -> None:
        self.tracing = tracing
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "bucket_registry_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._request_series: dict[tuple[str, str, int], Any] = {}
        self._decision_series: dict[tuple[str, str, str], Any] = {}
        self.presigns = Counter(
            "bucket_registry_presign_decisions_total",
            "Data-path decisions by provider, operation and outcome",
            ["provider", "op", "decision"],
            registry=self.registry,
        )
        self.dependency_latency = Histogram(
            "bucket_registry_dependency_duration_seconds",
            "Calls to dependencies (arborist, database, secrets backends, sts)",
            ["dependency"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dependency_errors = Counter(
            "bucket_registry_dependency_errors_total",
            "Failed calls to dependencies",
            ["dependency"],
            registry=self.registry,
        )
        self._stats = _StatsCollector()
        self.registry.register(self._stats)

    def watch_cache(self, cache: AsyncCache[Any, Any]) -> None:
        self._stats.caches.append(cache)

    def watch_counter(
        self,
        name: str,
        text: str,
        read: Callable[[], dict[tuple[str, ...], float]],
        labels: list[str] | None = None,
    ) -> None:
        """Expose counts some component already keeps, read at scrape time.

        ``read`` returns label values → count (``{(): n}`` for an unlabelled counter).
        """
        self._stats.counters[name] = (text, labels or [], read)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # One series per (method, route template, status), as before; resolving the labels
        # once per series rather than once per request.
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = self.requests.labels(method, route, str(status))
        series.observe(seconds)

    def count_decision(self, provider: str, op: str, decision: str) -> None:
        key = (provider, op, decision)
        series = self._decision_series.get(key)
        if series is None:
            series = self._decision_series[key] = self.presigns.labels(provider, op, decision)
        series.inc()

    def observe_dependency(self, dependency: str, seconds: float, ok: bool) -> None:
        self.dependency_latency.labels(dependency).observe(seconds)
        if not ok:
            self.dependency_errors.labels(dependency).inc()
        if self.tracing is not None:
            self.tracing.dependency_span(dependency, seconds, ok)

    def render(self) -> bytes:
        return generate_latest(self.registry)
