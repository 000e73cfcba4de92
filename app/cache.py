"""The one cache primitive behind buckets, secrets, STS sessions and authorization decisions.

Promises:

* **TTL with jitter** — an entry lives ``ttl * (1 - jitter * U[0,1))`` seconds, so replicas that
  loaded together do not all expire together; jitter only ever shortens a lifetime, so a TTL
  derived from a deadline (token or credential expiry) is never exceeded.
* **LRU bound** — at most ``max_entries`` entries; the least recently used one is evicted.
* **Single flight** — concurrent misses for one key share one load.
* **Stale-if-error** — when a load fails and the previous value expired less than
  ``grace_period`` seconds ago, that value is served (and counted) instead of the error.
* **Errors are never cached**, and invalidation wins over a load that was already running.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)

TtlSpec = float | Callable[[V], float]


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    load_errors: int = 0
    stale_served: int = 0
    evictions: int = 0
    invalidations: int = 0


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    fresh_until: float
    stale_until: float


class _CountingLRU(LRUCache):
    def __init__(self, maxsize: int, stats: CacheStats) -> None:
        super().__init__(maxsize)
        self._stats = stats

    def popitem(self):
        item = super().popitem()
        self._stats.evictions += 1
        return item


class AsyncCache(Generic[K, V]):
    """An in-process async cache; see the module docstring for what it promises."""

    def __init__(
        self,
        name: str,
        *,
        ttl: float,
        max_entries: int = 10_000,
        jitter: float = 0.1,
        grace_period: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.name = name
        self.ttl = ttl
        self.jitter = jitter
        self.grace_period = grace_period
        self.stats = CacheStats()
        self._clock = clock
        self._rng = rng
        self._entries: LRUCache[K, _Entry[V]] = _CountingLRU(max_entries, self.stats)
        self._inflight: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def max_entries(self) -> int:
        return int(self._entries.maxsize)

    def peek(self, key: K) -> V | None:
        """The fresh value for ``key`` without loading, or None. Counts as a hit when found."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.fresh_until:
            self.stats.hits += 1
            return entry.value
        return None

    async def get(
        self, key: K, loader: Callable[[], Awaitable[V]], *, ttl: TtlSpec[V] | None = None
    ) -> V:
        """The cached value for ``key``, loading it once (for all concurrent callers) on a miss.

        ``ttl`` overrides the cache's default, either as seconds or as a function of the loaded
        value (for values that carry their own deadline).
        """
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and now < entry.fresh_until:
            self.stats.hits += 1
            return entry.value
        self.stats.misses += 1
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._load(key, loader, ttl))
            self._inflight[key] = future
        # Shield: one caller going away (a client disconnect) must not cancel the shared load.
        return await asyncio.shield(future)

    async def _load(self, key: K, loader: Callable[[], Awaitable[V]], ttl: TtlSpec[V] | None) -> V:
        me = asyncio.current_task()
        try:
            self.stats.loads += 1
            # The grace period is judged from when the refresh began: a backend that takes its
            # time to fail (retries, timeouts) must not eat into it.
            started = self._clock()
            try:
                value = await loader()
            except Exception:
                self.stats.load_errors += 1
                stale = self._entries.get(key)
                if stale is not None and started < stale.stale_until:
                    self.stats.stale_served += 1
                    log.warning(
                        "serving stale cache entry after a failed refresh",
                        extra={"cache": self.name},
                    )
                    return stale.value
                raise
            if self._owns_inflight(key, me):
                self._store(key, value, ttl)
            return value
        finally:
            if self._owns_inflight(key, me):
                del self._inflight[key]

    def _owns_inflight(self, key: K, task: asyncio.Task[object] | None) -> bool:
        # Invalidation drops the in-flight future; a load that lost it must not store its
        # (possibly outdated) result.
        return self._inflight.get(key) is task

    def _store(self, key: K, value: V, ttl: TtlSpec[V] | None) -> None:
        spec = self.ttl if ttl is None else ttl
        seconds = spec(value) if callable(spec) else spec
        if seconds <= 0:
            return
        seconds *= 1 - self.jitter * self._rng()
        now = self._clock()
        self._entries[key] = _Entry(value, now + seconds, now + seconds + self.grace_period)

    def fresh_for(self, key: K) -> float | None:
        """Seconds until ``key``'s cached value goes stale; None when nothing fresh is cached."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        left = entry.fresh_until - self._clock()
        return left if left > 0 else None

    def set(self, key: K, value: V, *, ttl: TtlSpec[V] | None = None) -> None:
        """Store ``value`` directly (for values learnt as a side effect of another call)."""
        self._inflight.pop(key, None)
        self._store(key, value, ttl)

    def invalidate(self, key: K) -> None:
        self.stats.invalidations += 1
        self._entries.pop(key, None)
        self._inflight.pop(key, None)

    def invalidate_where(self, predicate: Callable[[K], bool]) -> int:
        """Drop every entry (and in-flight load) whose key matches; returns how many."""
        doomed = [key for key in list(self._entries.keys()) if predicate(key)]
        doomed += [key for key in list(self._inflight) if predicate(key) and key not in doomed]
        for key in doomed:
            self.invalidate(key)
        return len(doomed)

    def clear(self) -> None:
        self.stats.invalidations += len(self._entries)
        self._entries.clear()
        self._inflight.clear()
